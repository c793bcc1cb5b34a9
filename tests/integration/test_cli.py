"""sparrowctl's command line and its bus manners, sparrowd's --check-config
and its logs: real processes, each test quick."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from cluster import (BUS_CONFIG, OPEN_POLICY, SPARROW_CERTS, SPARROWCTL, SPARROWD,  # noqa: E402
                     Cluster, main)

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
        r = subprocess.run([SPARROWD, "--help"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0)
        for option in ["--config=PATH", "--check-config", "--strict", "--version",
                       "SPARROW_PLUGIN_DIR", "Exit status"]:
            self.assertIn(option, r.stdout)
        r = subprocess.run([SPARROWD, "--bogus"], capture_output=True, text=True)
        self.assertEqual((r.returncode, r.stderr), (2, "sparrowd: Unknown option --bogus\n"))
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


def check_config(text, *options, name="sparrow.conf"):
    """sparrowd --check-config on text written to a fresh file: (path, result)."""
    d = tempfile.mkdtemp(prefix="sparrow-check-")
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write(text)
    r = subprocess.run([SPARROWD, "--check-config", "--config", path] + list(options),
                       capture_output=True, text=True)
    return path, r


def members(n):
    return ";".join("m%d=127.0.0.1:%d" % (i, 7400 + i) for i in range(1, n + 1))


class Check(unittest.TestCase):
    BASE = "[node]\nname = m1\nlisten = 127.0.0.1:7401\n[tls]\ninsecure = true\n"

    def test_voters_say_what_they_tolerate(self):
        for n, warning, tolerated in [
                (1, "one voter (this node alone) tolerates no failure", 0),
                (2, "2 voters tolerate no failure: a quorum is both", 0),
                (3, None, 1),
                (4, "4 voters tolerate 1 failure, no more than 3 do", 1),
                (5, None, 2)]:
            text = self.BASE + "[cluster]\ninitial-members = %s\n" % members(n)
            path, r = check_config(text)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("voters: %d, tolerating %d failure" % (n, tolerated), r.stdout)
            if warning:
                self.assertTrue(r.stderr.startswith(
                    "sparrowd: warning: %s: [cluster] initial-members: %s" % (path, warning)),
                    r.stderr)
                self.assertEqual(len(r.stderr.splitlines()), 1, r.stderr)
            else:
                self.assertEqual(r.stderr, "")
        # No initial-members: this node alone.
        path, r = check_config(self.BASE)
        self.assertIn("one voter (this node alone)", r.stderr)
        # A joining node's voters are the cluster's.
        path, r = check_config(self.BASE + "[cluster]\njoin = true\n")
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        self.assertIn("voters: joins an existing cluster", r.stdout)

    def test_strict_turns_warnings_into_errors(self):
        text = self.BASE + "[cluster]\ninitial-members = %s\nheartbeat-msec = 100\n" % members(3)
        path, r = check_config(text)
        self.assertEqual(r.returncode, 0, r.stderr)
        typo = ("%s: [cluster] heartbeat-msec: unknown key, ignored (did you mean heartbeat-ms?)"
                % path)
        self.assertEqual(r.stderr, "sparrowd: warning: %s\n" % typo)
        self.assertIn("heartbeat 250 ms", r.stdout)  # the default is used
        for strict in [["--strict"], []]:
            t = text if strict else text.replace("[tls]", "strict = true\n[tls]", 1)
            path, r = check_config(t, *strict)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertEqual(r.stdout, "")
            self.assertIn("sparrowd: error (strict): %s: [cluster] heartbeat-msec: unknown key"
                          % path, r.stderr)
            self.assertIn("1 warning, and strict: not valid", r.stderr)
        # Strict and nothing to warn about: valid.
        path, r = check_config(self.BASE.replace("[tls]", "strict = true\n[tls]")
                               + "[cluster]\ninitial-members = %s\n" % members(3))
        self.assertEqual((r.returncode, r.stderr), (0, ""))

    def test_effective_timings(self):
        path, r = check_config(self.BASE + "[cluster]\ninitial-members = %s\n" % members(3))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("heartbeat 250 ms, election timeout 600 ms (a follower campaigns 600 to "
                      "1200 ms after the last heartbeat), leader lease 530 ms, leader watchdog "
                      "450 ms", r.stdout)
        # lease 530 + keeper 20, 5 % drift, a tick: shorter than an election
        self.assertIn("fence: a new leader holds addresses 587 ms after its voters last heard the "
                      "old leader (at most 0 ms after its election), the leader target 500 ms "
                      "later (lease 530 ms + fence keeper 20 ms, 5 % drift, one tick)", r.stdout)
        self.assertIn("expected failover after a crash: 600 to 1200 ms (addresses), 1100 to "
                      "1700 ms (leader target)", r.stdout)
        self.assertIn("a double fault (keeper dead and sparrowd stalled) is ended by the leader "
                      "watchdog, up to 1511 ms after the last heartbeat", r.stdout)


OLD_CA_CONFIG = """[ca]
default_ca = old
[old]
database = index.txt
unique_subject = no
new_certs_dir = .
serial = serial
default_md = sha256
policy = any
[any]
commonName = supplied
"""


class TlsFiles(unittest.TestCase):
    """[tls] checked by --check-config and at start, each error naming the
    file, [tls] and the key."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="sparrow-tls-")
        cls.certs = os.path.join(cls.dir, "certs")
        cls.other = os.path.join(cls.dir, "other")
        for d, names in [(cls.certs, ["alpha", "beta"]), (cls.other, ["alpha"])]:
            subprocess.run([SPARROW_CERTS, "ca", d], check=True, capture_output=True)
            for name in names:
                subprocess.run([SPARROW_CERTS, "node", d, name], check=True, capture_output=True)
        # Certificates out of their validity period, from the cluster CA.
        cls.old = os.path.join(cls.dir, "old")
        os.makedirs(cls.old)
        with open(os.path.join(cls.old, "ca.cnf"), "w") as f:
            f.write(OLD_CA_CONFIG)
        open(os.path.join(cls.old, "index.txt"), "w").close()
        with open(os.path.join(cls.old, "serial"), "w") as f:
            f.write("01\n")
        subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", "alpha.key", "-out",
                        "alpha.csr", "-subj", "/CN=alpha"],
                       cwd=cls.old, check=True, capture_output=True)
        for out, start, end in [("expired.pem", "20200101000000Z", "20210101000000Z"),
                                ("future.pem", "20990101000000Z", "20991231000000Z")]:
            subprocess.run(["openssl", "ca", "-batch", "-config", "ca.cnf", "-cert",
                            cls.cert("ca.pem"), "-keyfile", cls.cert("ca.key"), "-in",
                            "alpha.csr", "-out", out, "-startdate", start, "-enddate", end],
                           cwd=cls.old, check=True, capture_output=True)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    @classmethod
    def cert(cls, name, d=None):
        return os.path.join(d or cls.certs, name)

    def config(self, ca=None, cert=None, key=None, name="alpha"):
        return ("[node]\nname = %s\nlisten = 127.0.0.1:7401\ndata-dir = %s\n"
                "[cluster]\ninitial-members = alpha=127.0.0.1:7401;beta=127.0.0.1:7402;"
                "gamma=127.0.0.1:7403\n[tls]\nca = %s\ncert = %s\nkey = %s\n" % (
                    name, os.path.join(self.dir, "data"), ca or self.cert("ca.pem"),
                    cert or self.cert("alpha.pem"), key or self.cert("alpha.key")))

    def assert_refused(self, text, message):
        path, r = check_config(text)
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertEqual(r.stderr, "sparrowd: %s: %s\n" % (path, message))
        # Start-up refuses it the same way, before it listens.
        os.makedirs(os.path.join(self.dir, "data"), exist_ok=True)
        r = subprocess.run([SPARROWD, "--config", path], capture_output=True, text=True,
                           timeout=30, env=dict(os.environ, **NO_BUS))
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("sparrowd: %s: %s\n" % (path, message), r.stderr)

    def test_valid(self):
        path, r = check_config(self.config())
        self.assertEqual((r.returncode, r.stderr), (0, ""))
        self.assertRegex(r.stdout, r"\ntls: certificate for alpha, signed by CN=sparrow cluster "
                         r"CA, valid until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\n")

    def test_missing_file(self):
        missing = self.cert("gone.pem")
        self.assert_refused(self.config(cert=missing),
                            "[tls] cert: Failed to open file “%s”: No such file or directory"
                            % missing)

    def test_another_members_certificate(self):
        self.assert_refused(self.config(cert=self.cert("beta.pem"), key=self.cert("beta.key")),
                            '[tls] cert: %s names member "beta", not this node "alpha" '
                            '([node] name)' % self.cert("beta.pem"))

    def test_key_of_another_certificate(self):
        self.assert_refused(self.config(key=self.cert("beta.key")),
                            "[tls] key: %s: not the private key of %s ([tls] cert)"
                            % (self.cert("beta.key"), self.cert("alpha.pem")))

    def test_not_a_key(self):
        path, r = check_config(self.config(key=self.cert("ca.pem")))
        self.assertEqual(r.returncode, 1)
        self.assertIn("[tls] key: %s: " % self.cert("ca.pem"), r.stderr)

    def test_another_ca(self):
        other = self.cert("alpha.pem", self.other)
        self.assert_refused(self.config(cert=other, key=self.cert("alpha.key", self.other)),
                            "[tls] cert: %s: not signed by the CA in %s ([tls] ca)"
                            % (other, self.cert("ca.pem")))

    def test_own_certificate_as_ca(self):
        self.assert_refused(self.config(ca=self.cert("alpha.pem")),
                            "[tls] ca: %s holds this member's own certificate (%s), not the CA's"
                            % (self.cert("alpha.pem"), self.cert("alpha.pem")))

    def test_validity_period(self):
        key = self.cert("alpha.key", self.old)
        self.assert_refused(self.config(cert=self.cert("expired.pem", self.old), key=key),
                            "[tls] cert: %s: expired on 2021-01-01 00:00:00 UTC"
                            % self.cert("expired.pem", self.old))
        self.assert_refused(self.config(cert=self.cert("future.pem", self.old), key=key),
                            "[tls] cert: %s: not valid before 2099-01-01 00:00:00 UTC (is this "
                            "host's clock right?)" % self.cert("future.pem", self.old))


class Logs(unittest.TestCase):
    LINE = r"^\d\d:\d\d:\d\d\.\d{3} (ERROR|CRITICAL|WARNING|NOTICE|INFO|DEBUG) \S"

    def test_one_readable_line_per_message_outside_systemd(self):
        c = Cluster(1)
        self.addCleanup(c.teardown)
        n = c.nodes[0]
        n.start()
        c.wait_leader()
        self.assertEqual(n.stop(), 0)
        lines = n.read_log().splitlines()
        for line in lines:
            self.assertRegex(line, self.LINE)
        self.assertTrue(any(" NOTICE %s: leader in term" % n.name in line for line in lines),
                        lines)
        self.assertTrue(any(" WARNING configuration: " in line and "one voter" in line
                            for line in lines), lines)

    def test_journal_natively_with_fields_under_systemd(self):
        # stderr connected to a journal as systemd connects a service's; the
        # journal's sockets in a private mount namespace (root only).
        if os.geteuid() != 0 or not shutil.which("unshare"):
            self.skipTest("needs root and unshare for a private journal")
        c = Cluster(1)
        self.addCleanup(c.teardown)
        n = c.nodes[0]
        os.makedirs(n.data_dir)
        capture = os.path.join(os.path.dirname(__file__), "journal-capture.py")
        r = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, capture,
                            "30", "SPARROW_ROLE=leader", SPARROWD, "--config", n.config],
                           env=dict(n.env, **NO_BUS), capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        entries = [json.loads(line) for line in r.stdout.splitlines()]
        end = entries.pop()
        self.assertEqual(end, {"stderr": "", "status": 0})  # all of it went to the journal
        leader = [e for e in entries if e.get("SPARROW_ROLE") == "leader"]
        self.assertEqual(len(leader), 1, entries)
        self.assertEqual((leader[0]["SPARROW_LEADER"], leader[0]["SPARROW_TERM"],
                          leader[0]["PRIORITY"]), (n.name, "2", "5"))
        self.assertEqual(leader[0]["MESSAGE"], "%s: leader in term 2, leader %s"
                         % (n.name, n.name))
        self.assertIn({"MESSAGE": "TLS is off (insecure = true): peers are not authenticated "
                       "and traffic is plaintext", "PRIORITY": "4"},
                      [{k: e[k] for k in ("MESSAGE", "PRIORITY")} for e in entries])

    def test_demo_says_plaintext_and_keeps_the_logs(self):
        demo = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "sparrow-demo")
        r = subprocess.run([sys.executable, demo], capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("In plaintext: [tls] insecure = true, so peers are not authenticated",
                      r.stdout)
        logs = re.search(r"The logs stay in (\S+) ", r.stdout).group(1)
        self.addCleanup(shutil.rmtree, logs, ignore_errors=True)
        self.assertEqual(sorted(os.listdir(logs)), ["n1.log", "n2.log", "n3.log"])
        for name in os.listdir(logs):
            with open(os.path.join(logs, name)) as f:
                text = f.read()
            self.assertIn("TLS is off (insecure = true)", text)
            self.assertIn(" NOTICE ", text)


if __name__ == "__main__":
    main()
