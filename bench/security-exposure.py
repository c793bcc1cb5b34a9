#!/usr/bin/env python3
"""`systemd-analyze security` of sparrow.service next to systemd-timesyncd's
and Debian's keepalived's, in one run (printed, never asserted: the
`units` test holds sparrow's at 2.0 or less).

The units are read as the packages install them, offline (--offline=yes
--root): sparrow's from the .deb built from this tree (tests/lab/lab.py
build_debs, cached per tree state), systemd-timesyncd's and keepalived's
from Debian's packages of this machine's release, fetched with
`apt-get download`.  sparrow.service is measured as shipped and with the
timesync plugin's drop-in (sparrow.conf(5), [timesync]) enabled.

As root: /usr/bin/python3 bench/security-exposure.py
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

here = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.abspath(os.path.join(here, ".."))
sys.path.insert(0, os.path.join(SOURCE, "tests", "lab"))
import lab  # noqa: E402

DEBIAN = ("systemd-timesyncd", "keepalived")
DROP_IN = "usr/share/sparrow/sparrow.service.d/timesync.conf"


def exposure(root, unit):
    out = lab.run("systemd-analyze", "security", "--offline=yes", "--root=" + root,
                  "--no-pager", unit, check=False).stdout
    m = re.search(r"Overall exposure level for %s: ([0-9.]+) (\S+)" % re.escape(unit), out)
    if not m:
        raise lab.LabError("systemd-analyze security %s: %s" % (unit, out))
    return m.group(1), m.group(2)


def main():
    debs = lab.build_debs(SOURCE)
    work = tempfile.mkdtemp(prefix="sparrow-exposure-")
    try:
        lab.run("apt-get", "download", *DEBIAN, cwd=work)
        plain = os.path.join(work, "plain")
        with_drop_in = os.path.join(work, "timesync")
        for root in (plain, with_drop_in):
            os.makedirs(root)
            for deb in [debs["sparrow"]] + [os.path.join(work, f) for f in os.listdir(work)
                                            if f.endswith(".deb")]:
                lab.run("dpkg-deb", "-x", deb, root)
        # What an admin's symbolic link does (the drop-in's own comment).
        target = os.path.join(with_drop_in, "etc/systemd/system/sparrow.service.d")
        os.makedirs(target)
        shutil.copy(os.path.join(with_drop_in, DROP_IN), target)
        versions = {p: lab.run("dpkg-deb", "-f", os.path.join(work, f), "Version").stdout.strip()
                    for p in DEBIAN for f in os.listdir(work) if f.startswith(p + "_")}
        rows = [("sparrow.service", "as shipped", plain),
                ("sparrow.service", "with the timesync drop-in", with_drop_in)]
        rows += [(p + ".service", "Debian %s" % versions[p], plain) for p in DEBIAN]
        print("systemd-analyze security (systemd %s), exposure 0.0 (best) to 10.0:"
              % lab.run("systemd-analyze", "--version").stdout.split()[1])
        for unit, what, root in rows:
            value, verdict = exposure(root, unit)
            print("  %-27s %-28s %4s %s" % (unit, what, value, verdict))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
