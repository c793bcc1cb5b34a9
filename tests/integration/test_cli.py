"""sparrowctl's command line and its bus manners, sparrowd's --check-config
and its logs: real processes, each test quick."""

import os
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from cluster import (BUS_CONFIG, OPEN_POLICY, SPARROWCTL, SPARROWD, Cluster,  # noqa: E402
                     main)

NO_BUS = {"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=/nonexistent/sparrow-test-bus"}


def ctl(*args, env=None):
    e = dict(os.environ, **(env or NO_BUS))
    return subprocess.run([SPARROWCTL] + list(args), env=e, capture_output=True, text=True,
                          timeout=30)


class Ctl(unittest.TestCase):
    def test_usage_errors_come_before_the_bus(self):
        # No bus at all: every one of these is the command line's fault.
        for args, message in [
                ([], "missing COMMAND"),
                (["frobnicate"], 'unknown command "frobnicate"'),
                (["members"], "members: missing add, remove, promote or set-address"),
                (["members", "add", "x"], "members add: missing HOST:PORT"),
                (["set", "k"], "set: missing VALUE"),
                (["get", "a", "b"], 'get: unexpected argument "b"'),
                (["cas", "k", "soon", "v"], 'cas: REVISION: expected a number, got "soon"'),
                (["--bogus", "status"], "Unknown option --bogus")]:
            r = ctl(*args)
            self.assertEqual(r.returncode, 2, (args, r.stderr))
            first, second = r.stderr.splitlines()  # two lines, not the whole usage
            self.assertTrue(first.startswith("sparrowctl: " + message), r.stderr)
            self.assertEqual(second, "see sparrowctl --help")

    def test_valid_command_without_a_bus_is_unreachable(self):
        r = ctl("status")
        self.assertEqual(r.returncode, 6, r.stderr)
        self.assertIn("cannot reach the system bus", r.stderr)

    def test_help_and_version(self):
        r = ctl("--help")
        self.assertEqual(r.returncode, 0)
        for command in ["status", "leader", "members add NAME HOST:PORT", "members remove",
                        "members promote", "members set-address", "transfer", "get KEY",
                        "set KEY VALUE", "del KEY", "cas KEY REVISION VALUE", "ls [PREFIX]",
                        "watch [PREFIX]", "--json", "--stale", "--learner", "Exit status"]:
            self.assertIn(command, r.stdout)
        for program in [SPARROWCTL, SPARROWD]:
            r = subprocess.run([program, "--version"], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0)
            self.assertRegex(r.stdout, r"^sparrow(ctl|d) \d+\.\d+\.\d+\n$")


class NotRunning(unittest.TestCase):
    """A bus that could start sparrowd by activation, and no sparrowd."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="sparrow-cli-")
        services = os.path.join(self.dir, "services")
        os.makedirs(services)
        self.started = os.path.join(self.dir, "activated")
        with open(os.path.join(services, "org.sparrow.cluster1.service"), "w") as f:
            f.write("[D-BUS Service]\nName=org.sparrow.cluster1\n"
                    "Exec=/bin/sh -c 'touch %s; sleep 5'\n" % self.started)
        bus_path = os.path.join(self.dir, "bus")
        conf = os.path.join(self.dir, "bus.conf")
        with open(conf, "w") as f:
            f.write(BUS_CONFIG.format(path=bus_path, policy=OPEN_POLICY,
                                      include="<servicedir>%s</servicedir>" % services))
        self.bus = subprocess.Popen(["dbus-daemon", "--config-file=" + conf, "--nofork",
                                     "--print-address"],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.addCleanup(self.bus.stdout.close)
        self.addCleanup(self.bus.wait, 10)
        self.addCleanup(self.bus.terminate)
        self.bus.stdout.readline()
        self.env = {"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=" + bus_path}

    def test_calls_never_start_sparrowd(self):
        for args in [["status"], ["leader"], ["get", "k"], ["set", "k", "v"],
                     ["members", "remove", "x"]]:
            r = ctl(*args, env=self.env)
            self.assertEqual(r.returncode, 6, (args, r.stderr))
            self.assertEqual(r.stderr, "sparrowctl: sparrowd is not running (nobody owns "
                             "org.sparrow.cluster1 on the system bus)\n")
        r = ctl("--json", "status", env=self.env)
        self.assertEqual(r.returncode, 6)
        self.assertIn('"error": "org.freedesktop.DBus.Error.NameHasNoOwner"', r.stdout)
        time.sleep(0.2)
        self.assertFalse(os.path.exists(self.started), "a call activated the service")


class Watch(unittest.TestCase):
    def test_watch_waits_for_sparrowd_and_follows_it_across_restarts(self):
        c = Cluster(1)
        self.addCleanup(c.teardown)
        n = c.nodes[0]
        n.start_bus()
        watch = subprocess.Popen([SPARROWCTL, "watch"], env=n.env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        self.addCleanup(watch.stderr.close)
        self.addCleanup(watch.stdout.close)
        self.addCleanup(watch.wait, 10)
        self.addCleanup(watch.terminate)
        self.assertEqual(watch.stderr.readline(),
                         "sparrowctl: sparrowd is not running; waiting for it…\n")
        for value in ["1", "2"]:
            n.start()
            self.assertEqual(watch.stderr.readline(),
                             "sparrowctl: sparrowd is there, following it\n")
            c.wait_leader()
            n.ctl("set", "k", value)
            self.assertRegex(watch.stdout.readline(), r"^\d+ set k=%s\n$" % value)
            n.stop()
            self.assertEqual(watch.stderr.readline(),
                             "sparrowctl: sparrowd is not running; waiting for it…\n")
        self.assertIsNone(watch.poll())


if __name__ == "__main__":
    main()
