"""The documentation says what the code does: every key sparrowd and its
plugins accept is in sparrow.conf(5) with the default the code uses, and
no other; and every option of sparrowd and sparrowctl is in their man
pages' OPTIONS, and no other.  (doc-config.py checks the configurations
the documentation shows.)

Usage: check-docs.py SRCDIR"""

import glob
import os
import re
import sys

src = sys.argv[1]
failures = []

def read(path):
    with open(os.path.join(src, path)) as f:
        return f.read()


def code_keys():
    """{(group, key): default or None}, from the sources."""
    keys = {}
    config = read("daemon/config.c")
    for group, body in re.findall(r'\{\s*"([a-z]+)",\s*\{([^}]*)\}\s*\}', config):
        for key in re.findall(r'"([a-z-]+)"', body):
            keys[(group, key)] = None
    defines = dict(re.findall(r"#define\s+(SP_\w+)\s+(\d+)", read("daemon/config.h")))
    for field, value in re.findall(r"\bc->(\w+) = (\w+);", config):
        keys_for(keys, None, field, defines.get(value, value))
    for path in glob.glob(os.path.join(src, "plugins", "*", "*-config.c")):
        text = open(path).read()
        group = re.search(r'#define GROUP "([a-z]+)"', text).group(1)
        body = re.search(r"keys\[\] = \{([^}]*)\}", text).group(1)
        for key in re.findall(r'"([a-z-]+)"', body):
            keys[(group, key)] = None
        for field, value in re.findall(r"\bvip->(\w+) = (\w+);", text):
            keys_for(keys, group, field, value)
    return keys


def keys_for(keys, group, field, value):
    """Records a default (a field set before the file is read) for the key
    of the same name, when there is one."""
    key = field.replace("_", "-")
    value = {"TRUE": "true", "FALSE": "false"}.get(value, value)
    for g, k in keys:
        if k == key and (group is None or g == group) and re.fullmatch(r"\d+|true|false", value):
            keys[(g, k)] = value


def man_keys():
    """{(group, key): the paragraph}, from sparrow.conf(5)."""
    keys = {}
    group = None
    text = read("doc/sparrow.conf.5.scd")
    for block in re.split(r"\n(?=# |\*[a-z-]+ =\*)", text):
        m = re.match(r"# \[([a-z]+)\]", block)
        if m:
            group = m.group(1)
            continue
        if block.startswith("# "):
            group = None
            continue
        m = re.match(r"\*([a-z-]+) =\*", block)
        if m and group:
            keys[(group, m.group(1))] = block
    return keys


code = code_keys()
man = man_keys()
for gk in sorted(set(code) - set(man)):
    failures.append("sparrow.conf(5) does not document [%s] %s" % gk)
for gk in sorted(set(man) - set(code)):
    failures.append("sparrow.conf(5) documents [%s] %s, which the code does not accept" % gk)
for gk, default in sorted(code.items()):
    if default is not None and gk in man and "Default: *%s*" % default not in man[gk]:
        failures.append("sparrow.conf(5): [%s] %s: the code's default is %s" % (gk + (default,)))
print("sparrow.conf(5): %d keys documented, %d defaults checked"
      % (len(man), sum(1 for d in code.values() if d is not None)))


def options(path):
    """The long options of a program's GOptionEntry table."""
    return set(re.findall(r'\{ "([a-z-]+)", (?:\'.\'|0), ', read(path)))


# The options of sparrowd and sparrowctl, in their man pages' OPTIONS.
for program, source in (("sparrowd", "daemon/main.c"), ("sparrowctl", "daemon/sparrowctl.c")):
    page = read("doc/%s.%s.scd" % (program, "8" if program == "sparrowd" else "1"))
    section = re.search(r"\n# OPTIONS\n(.*?)\n# ", page, re.S).group(1)
    documented = set(re.findall(r"^(?:\*-[a-z]\*, )?\*--([a-z-]+)\*", section, re.M))
    code_options = options(source)
    for o in sorted(code_options - documented):
        failures.append("%s: option --%s is not in its man page's OPTIONS" % (program, o))
    for o in sorted(documented - code_options):
        failures.append("%s: its man page documents --%s, which it does not take" % (program, o))
    print("%s: %d options documented" % (program, len(documented)))


for f in failures:
    print("FAIL: " + f)
sys.exit(1 if failures else 0)
