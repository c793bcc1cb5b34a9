"""`meson install` puts the bus policy, the polkit actions and rules, the
units (ntpsec's drop-in among them) and sparrowd's system user where
dbus-daemon, polkitd, systemd and systemd-sysusers read them, whatever the
prefix (as their pkg-config files say, or as the options name), and
installs no D-Bus activation file: nothing may start sparrowd by calling
it.

Usage: check-install-dirs.py BUILDDIR"""

import json
import os
import subprocess
import sys

build = sys.argv[1]


def introspect(what):
    return json.loads(subprocess.run(["meson", "introspect", what, build], check=True,
                                     capture_output=True, text=True).stdout)


options = {o["name"]: o["value"] for o in introspect("--buildoptions")}
installed = introspect("--installed")


def expected(option, pc, variable, below=""):
    if options[option]:
        return options[option]
    out = subprocess.run(["pkg-config", "--variable=" + variable, pc], check=True,
                         capture_output=True, text=True).stdout.strip()
    return os.path.join(out, below) if below else out


files = {
    "org.sparrow.cluster1.conf": expected("dbus_policy_dir", "dbus-1", "datadir",
                                          "dbus-1/system.d"),
    "org.sparrow.cluster1.policy": expected("polkit_actions_dir", "polkit-gobject-1",
                                            "policydir"),
    "sparrow.service": expected("systemd_unit_dir", "systemd", "systemdsystemunitdir"),
    "sparrow.target": expected("systemd_unit_dir", "systemd", "systemdsystemunitdir"),
    "sparrow-leader.target": expected("systemd_unit_dir", "systemd", "systemdsystemunitdir"),
    "sparrow.rules": expected("polkit_rules_dir", "polkit-gobject-1", "datadir",
                              "polkit-1/rules.d"),
}
# Installed under a name other files share: their whole destination.
paths = {
    "sysusers.d/sparrow.conf": os.path.join(expected("sysusers_dir", "systemd", "sysusersdir"),
                                            "sparrow.conf"),
    "ntpsec.service.d/sparrow.conf": os.path.join(
        expected("systemd_unit_dir", "systemd", "systemdsystemunitdir"),
        "ntpsec.service.d", "sparrow.conf"),
}
failures = []
dests = {os.path.basename(d): os.path.dirname(d) for d in installed.values()}
for name, want in files.items():
    got = dests.get(name)
    if got is None:
        failures.append("%s is not installed" % name)
    elif os.path.normpath(got) != os.path.normpath(want):
        failures.append("%s goes to %s, not %s" % (name, got, want))
    else:
        print("%s -> %s" % (name, got))
normalized = {os.path.normpath(d) for d in installed.values()}
for name, want in paths.items():
    if os.path.normpath(want) not in normalized:
        failures.append("%s is not installed as %s" % (name, want))
    else:
        print("%s -> %s" % (name, want))
for dest in installed.values():
    if "/dbus-1/system-services/" in dest or "/dbus-1/services/" in dest:
        failures.append("a D-Bus activation file is installed: %s" % dest)
print("prefix %s" % options["prefix"])
for f in failures:
    print("FAIL: " + f)
sys.exit(1 if failures else 0)
