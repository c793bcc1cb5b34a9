"""Every sparrow.conf snippet in the documentation is valid as written.

Takes each ```ini block of README.md and doc/*.md (new blocks are picked up
by themselves), and the configurations doc/ has elsewhere (the example the
package installs as /etc/sparrow/sparrow.conf, the sparrow.conf files
doc/deploy.md writes, the EXAMPLE of sparrow.conf(5)), and runs
`sparrowd --check-config --strict` on each, so a warning (an unknown key, a
comment glued to a value) fails too:

- a block with [node] is a whole sparrow.conf; a block without it is a
  fragment, checked as a drop-in (sparrow.conf.d/50-doc.conf) on top of
  the first whole one, which is how an admin adds it;
- /etc/sparrow/ is rewritten to a temporary directory, where
  tools/sparrow-certs has made a CA and a certificate for every member the
  block names ([node] name and initial-members), so the TLS files exist and
  are checked for real (a snippet whose cert names another member fails);
- blocks whose groups are capitalised ([Unit], [Service]) are systemd
  units, not sparrow.conf, and are left out (said so);
- a block whose plugin module was not built (the vip plugin without libnm)
  is skipped with a message.

Usage: doc-config.py SPARROWD SPARROW_CERTS SOURCE_ROOT
"""

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile


def blocks(path):
    """(line, text) of each ```ini block."""
    out = []
    lines = open(path).read().split("\n")
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```ini":
            start = i + 1
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                i += 1
            out.append((start + 1, "\n".join(lines[start:i]) + "\n"))
        i += 1
    return out


def line_of(text, offset):
    return text.count("\n", 0, offset) + 1


def files(root):
    """(where, line, text) of the configurations in doc/ outside ```ini blocks."""
    def read(path):
        with open(os.path.join(root, path)) as f:
            return f.read()
    yield "doc/sparrow.conf", 1, read("doc/sparrow.conf")
    deploy = read("doc/deploy.md")
    for m in re.finditer(r"cat >/etc/sparrow/sparrow.conf <<'EOF'\n(.*?\n)EOF\n", deploy, re.S):
        yield "doc/deploy.md", line_of(deploy, m.start(1)), m.group(1)
    page = read("doc/sparrow.conf.5.scd")
    m = re.search(r"# EXAMPLE\n.*?```\n(.*?)```", page, re.S)
    yield "doc/sparrow.conf.5.scd", line_of(page, m.start(1)), m.group(1)


def groups(text):
    return re.findall(r"^\[([^\]]+)\]", text, re.M)


def names(text):
    found = set(re.findall(r"^name\s*=\s*(\S+)\s*$", text, re.M))
    for m in re.finditer(r"^initial-members\s*=\s*(.*)$", text, re.M):
        found |= {item.split("=")[0].strip() for item in m.group(1).split(";") if "=" in item}
    return found


def check(sparrowd, certs_tool, main, fragment):
    d = tempfile.mkdtemp(prefix="sparrow-doc-")
    try:
        tls = os.path.join(d, "tls")
        text = main + (fragment or "")
        subprocess.run([certs_tool, "ca", tls], check=True, capture_output=True)
        for name in sorted(names(text)):
            subprocess.run([certs_tool, "node", tls, name], check=True, capture_output=True)
        conf = os.path.join(d, "sparrow.conf")
        with open(conf, "w") as f:
            f.write(main.replace("/etc/sparrow/", d + "/"))
        if fragment is not None:
            os.makedirs(os.path.join(d, "sparrow.conf.d"))
            with open(os.path.join(d, "sparrow.conf.d", "50-doc.conf"), "w") as f:
                f.write(fragment.replace("/etc/sparrow/", d + "/"))
        r = subprocess.run([sparrowd, "--check-config", "--strict", "--config", conf],
                           capture_output=True, text=True)
        return r.returncode, (r.stdout + r.stderr).replace(d + "/", "/etc/sparrow/")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main():
    sparrowd, certs_tool, root = sys.argv[1:4]
    docs = [os.path.join(root, "README.md")] + sorted(glob.glob(os.path.join(root, "doc", "*.md")))
    found = [(os.path.relpath(p, root), line, text) for p in docs for line, text in blocks(p)]
    found += files(root)
    whole = next((text for _, _, text in found if "node" in groups(text)), None)
    failed = checked = 0
    for where, line, text in found:
        label = "%s:%d" % (where, line)
        g = groups(text)
        if g and all(x[0].isupper() for x in g):
            print("%s: not a sparrow.conf (%s), left out" % (label, ", ".join(g)))
            continue
        if "node" in g:
            status, out = check(sparrowd, certs_tool, text, None)
        elif whole is None:
            print("%s: a fragment, and no whole sparrow.conf to check it on" % label)
            failed += 1
            continue
        else:
            status, out = check(sparrowd, certs_tool, whole, text)
        if status != 0 and "cannot load" in out and "libsparrow-plugin-" in out:
            print("%s: skipped: its plugin is not built here: %s" % (label, out.strip()))
            continue
        checked += 1
        if status != 0:
            failed += 1
            print("%s: FAILED (exit %d):\n%s\n%s" % (label, status, text, out))
        else:
            print("%s: valid" % label)
    print("%d blocks checked, %d failed" % (checked, failed))
    if failed:
        sys.exit(1)
    if checked == 0:
        print("skipped: no sparrow.conf block could be checked")
        sys.exit(77)


main()
