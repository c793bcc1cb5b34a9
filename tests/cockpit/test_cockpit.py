"""The Cockpit page (cockpit/) in real headless Chromium, driven through
chromedriver, against a real cockpit-ws and cockpit-bridge on 127.0.0.1
that read the private system bus of one node of a real 3-node sparrow
cluster: what an admin sees there, and what the page's buttons do.

Skipped (exit 77) when cockpit-ws, cockpit-bridge, chromium, chromedriver
or python3-selenium is missing.  Screenshots go to $SPARROW_ARTIFACT_DIR
(meson: the build's meson-logs)."""

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from cluster import BUS_CONFIG, OPEN_POLICY, Cluster  # noqa: E402

COCKPIT_WS = "/usr/lib/cockpit/cockpit-ws"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PAGE_DIR = os.environ.get("SPARROW_COCKPIT_DIR",
                          os.path.join(os.path.dirname(__file__), "..", "..", "cockpit"))
VIP = "10.77.0.100/24@spvip-none0"
# Each visible text's contrast with the background it is drawn on.
CONTRAST_JS = """
const rgb = (c) => c.match(/[\\d.]+/g).map(Number);
const lum = ([r, g, b]) => [r, g, b].map((v) => {
    v /= 255;
    return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
}).reduce((sum, v, i) => sum + v * [0.2126, 0.7152, 0.0722][i], 0);
function background(e) {
    for (; e; e = e.parentElement) {
        const c = rgb(getComputedStyle(e).backgroundColor);
        if (c.length < 4 || c[3] > 0)
            return c;
    }
    return [255, 255, 255];
}
const low = [];
for (const e of document.querySelectorAll('#app *')) {
    const text = [...e.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!text || e.offsetParent === null || e.closest(':disabled'))
        continue;
    const a = lum(rgb(getComputedStyle(e).color)), b = lum(background(e));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < 4.5)
        low.push(e.tagName + ' ' + e.textContent.trim().slice(0, 40) + ': ' + ratio.toFixed(2));
}
return low;
"""
# What the page must show within this long after the leader is killed.
FOLLOW_S = 2.0


def missing():
    """Why the test cannot run here, or None."""
    for path, package in [(COCKPIT_WS, "cockpit-ws"), (CHROMIUM, "chromium"),
                          (CHROMEDRIVER, "chromium-driver")]:
        if not os.access(path, os.X_OK):
            return "%s is missing (apt-get install %s)" % (path, package)
    if not shutil.which("cockpit-bridge"):
        return "cockpit-bridge is missing (apt-get install cockpit-bridge)"
    if not shutil.which("dbus-daemon"):
        return "dbus-daemon is missing (apt-get install dbus-daemon)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is missing (apt-get install python3-selenium; run with /usr/bin/python3)"
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_bus_with_activation(node, marker):
    """The node's bus, with an activation file for org.sparrow.cluster1 that
    only leaves a mark: whatever asks the bus to start sparrowd shows."""
    services = os.path.join(node.dir, "services")
    os.makedirs(services)
    with open(os.path.join(services, "org.sparrow.cluster1.service"), "w") as f:
        f.write("[D-BUS Service]\nName=org.sparrow.cluster1\nExec=/bin/sh -c 'date >> %s'\n" % marker)
    conf = os.path.join(node.dir, "bus.conf")
    with open(conf, "w") as f:
        f.write(BUS_CONFIG.format(path=node.bus_path, policy=OPEN_POLICY,
                                  include="<servicedir>%s</servicedir>" % services))
    node.bus = subprocess.Popen(["dbus-daemon", "--config-file=" + conf, "--nofork", "--print-address"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    node.bus.stdout.readline()


class CockpitWs:
    """cockpit-ws with a local session (cockpit-bridge, as this user or as
    `user`) whose system bus is `bus_path`, the page installed in its
    XDG_DATA_HOME, in a process group of its own."""

    def __init__(self, bus_path, user=None):
        self.dir = tempfile.mkdtemp(prefix="sparrow-cockpit-")
        package = os.path.join(self.dir, "data", "cockpit", "sparrow")
        os.makedirs(package)
        # what meson installs: the directory but its meson.build
        for name in os.listdir(PAGE_DIR):
            if name != "meson.build":
                shutil.copy(os.path.join(PAGE_DIR, name), package)
        home = os.path.join(self.dir, "home")
        os.makedirs(home)
        if user:
            account = pwd.getpwnam(user)
            for root, dirs, files in os.walk(self.dir):
                for name in dirs + files + [""]:
                    os.chown(os.path.join(root, name), account.pw_uid, account.pw_gid)
        self.port = free_port()
        bus = "unix:path=" + bus_path
        env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=bus,
                   # else the bridge launches session buses that outlive it
                   DBUS_SESSION_BUS_ADDRESS=bus,
                   XDG_DATA_HOME=os.path.join(self.dir, "data"),
                   XDG_DATA_DIRS="/usr/local/share:/usr/share", HOME=home)
        env.pop("XDG_RUNTIME_DIR", None)
        self.log_path = os.path.join(self.dir, "cockpit-ws.log")
        self.log = open(self.log_path, "w")
        extra = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []} if user else {}
        self.proc = subprocess.Popen(
            [COCKPIT_WS, "--no-tls", "--local-session=cockpit-bridge", "--address", "127.0.0.1",
             "--port", str(self.port)],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, **extra)
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("cockpit-ws did not start: " + self.read_log())
                time.sleep(0.05)

    @property
    def url(self):
        return "http://127.0.0.1:%d/cockpit/@localhost/sparrow/index.html" % self.port

    def read_log(self):
        with open(self.log_path) as f:
            return f.read()

    def stop(self):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                continue
        # the bridge, in the same group, must not outlive cockpit-ws
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def browser(profile):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--user-data-dir=" + profile, "--window-size=1280,1900"]:
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


class Page:
    def __init__(self, driver):
        self.driver = driver

    def text(self, element_id):
        """The element's text as shown: empty while it is hidden."""
        return self.driver.execute_script(
            "const e = document.getElementById(arguments[0]);"
            "return e && e.offsetParent !== null ? e.textContent.trim() : '';", element_id)

    def members(self):
        return self.driver.execute_script(
            "return [...document.querySelectorAll('#members-body tr')].map("
            "r => [...r.children].map(c => c.textContent.trim()));")

    def wait(self, predicate, timeout=20.0, what="the page"):
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError("timed out after %.1f s waiting for %s; page says: %s" % (
            timeout, what, self.driver.execute_script("return document.body.innerText")))

    def wait_text(self, element_id, expected, timeout=20.0):
        return self.wait(lambda: self.text(element_id) == expected, timeout,
                         "#%s to read %r" % (element_id, expected))

    def click(self, element_id):
        self.driver.execute_script("document.getElementById(arguments[0]).scrollIntoView()", element_id)
        from selenium.webdriver.common.by import By
        self.driver.find_element(By.ID, element_id).click()

    def screenshot(self, name):
        directory = os.environ.get("SPARROW_ARTIFACT_DIR") or tempfile.gettempdir()
        path = os.path.join(directory, name)
        self.driver.save_screenshot(path)
        print("screenshot:", os.path.abspath(path))
        return path


class CockpitPage(unittest.TestCase):
    def setUp(self):
        reason = missing()
        if reason:
            self.skipTest(reason)
        self.cluster = Cluster(3)
        self.addCleanup(self.cluster.teardown)
        self.watched = self.cluster.node("n1")
        self.marker = os.path.join(self.cluster.dir, "activated")
        start_bus_with_activation(self.watched, self.marker)
        self.cluster.start()
        self.profile = tempfile.mkdtemp(prefix="sparrow-chromium-")
        self.addCleanup(shutil.rmtree, self.profile, ignore_errors=True)
        self.driver = browser(self.profile)
        self.addCleanup(self.driver.quit)
        self.addCleanup(self.check_console)
        self.page = Page(self.driver)

    def check_console(self):
        """No script errors in the browser's console."""
        errors = [e["message"] for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]
        self.assertEqual(errors, [])

    def cockpit(self, user=None):
        ws = CockpitWs(self.watched.bus_path, user)
        self.addCleanup(ws.stop)
        return ws

    def make_leader(self, name):
        c = self.cluster
        current = c.wait_leader()
        if current != name:
            c.node(current).ctl("transfer", name)
            c.wait(lambda: c.leader() == name, what="%s leading" % name)

    def test_page_follows_the_cluster(self):
        c, w, page = self.cluster, self.watched, self.page
        # The watched node follows another leader.
        self.make_leader("n2")
        ws = self.cockpit()
        self.driver.get(ws.url)
        page.wait_text("node-name", "n1")
        page.wait_text("leader", "n2")
        page.wait_text("role", "follower")
        page.wait(lambda: len(page.members()) == 3, what="three members")
        self.assertEqual(sorted(r[0].split()[0] for r in page.members()), ["n1", "n2", "n3"])
        status = w.status()
        page.wait_text("term", str(status["term"]))

        # The leader dies: the page shows the one elected instead, no reload.
        killed = time.monotonic()
        c.node("n2").kill()
        page.wait(lambda: page.text("leader") in ("n1", "n3"), FOLLOW_S,
                  "the new leader within %.1f s" % FOLLOW_S)
        shown = time.monotonic() - killed
        new = c.wait_leader()
        page.wait_text("leader", new)
        print("the page showed the new leader %s %.2f s after the old one was killed" % (new, shown))
        c.node("n2").start()
        c.wait(lambda: len([m for m in (w.status() or {"members": []})["members"] if m["reachable"]]) == 3,
               what="n2 back")

        # Transfer from the page, on the leader, to a chosen member.
        self.make_leader("n1")
        page.wait_text("role", "leader")
        page.wait(lambda: self.driver.execute_script(
            "return !document.getElementById('transfer').disabled"), what="the transfer button enabled")
        from selenium.webdriver.support.ui import Select
        from selenium.webdriver.common.by import By
        Select(self.driver.find_element(By.ID, "transfer-target")).select_by_value("n3")
        page.click("transfer")
        page.wait_text("leader", "n3")
        page.wait_text("role", "follower")
        page.wait_text("action-done", "Transfer leadership to n3: done.")
        self.assertEqual(c.wait_leader(), "n3")
        page.wait(lambda: page.text("term") == str(w.status()["term"]), what="the term sparrowctl shows")
        page.screenshot("cockpit-sparrow-transfer.png")

        # On a follower the page asks for leadership here: sparrowd
        # forwards the transfer to the leader.
        page.wait(lambda: self.driver.execute_script(
            "return !document.getElementById('transfer').disabled"), what="the transfer button enabled")
        Select(self.driver.find_element(By.ID, "transfer-target")).select_by_value("n1")
        page.click("transfer")
        page.wait_text("leader", "n1")
        page.wait_text("role", "leader")
        page.wait_text("action-done", "Transfer leadership to n1: done.")
        self.assertEqual(c.wait_leader(), "n1")

        # sparrowd restarts on the watched node, killed while it led: the
        # new process never announces that it is no longer leader, so only
        # a page that reads it again shows it.
        page.wait_text("role", "leader")
        page.wait_text("holder", "yes")
        w.kill()
        page.wait(lambda: page.text("absent-title") == "sparrowd is not running", 10,
                  "the not-running state")
        new = c.wait_leader(c.live())
        w.start()
        page.wait_text("node-name", "n1")
        page.wait_text("role", "follower")
        page.wait_text("leader", new)
        page.wait(lambda: page.text("term") == str(w.status()["term"]), what="the restarted node's term")
        # never announced by the new process: it starts without them
        self.assertFalse(w.status()["holder"])
        page.wait_text("holder", "no", 5)

        # A fresh load while it is down: the page says so and starts nothing.
        w.kill()
        self.driver.get(ws.url)
        page.wait(lambda: page.text("absent-title") == "sparrowd is not running", 10,
                  "the not-running state after a reload")
        page.screenshot("cockpit-sparrow-not-running.png")
        time.sleep(1)
        self.assertFalse(os.path.exists(self.marker), "the page asked the bus to start sparrowd")
        # The activation file works: a client that addresses the name
        # without NO_AUTO_START starts it.
        subprocess.run(["dbus-send", "--bus=unix:path=" + w.bus_path, "--print-reply",
                        "--dest=org.sparrow.cluster1", "/", "org.freedesktop.DBus.Peer.Ping"],
                       capture_output=True, timeout=30)
        c.wait(lambda: os.path.exists(self.marker), 10, "the activation control's mark")
        os.unlink(self.marker)
        w.start()
        page.wait_text("node-name", "n1")
        page.wait_text("leader", c.wait_leader())
        self.assertFalse(os.path.exists(self.marker))

    def test_store_plugins_and_themes(self):
        c, w, page = self.cluster, self.watched, self.page
        vip = bool(os.environ.get("SPARROW_PLUGIN_DIR"))
        if vip:  # without NetworkManager: the leader reports, followers hold nothing
            for n in c.nodes:
                n.kill()
                n.write_config(c.nodes, extra="[vip]\naddresses = %s\non-failure = stay\n" % VIP)
            c.start()
        self.make_leader("n2")
        leader = c.node("n2")
        for key, value in [("app/config", "on"), ("app/mode", "fast"), ("db/primary", "n2")]:
            leader.ctl("set", key, value)
        ws = self.cockpit()
        self.driver.get(ws.url)
        page.wait_text("store-count", "3 of 3 keys")
        # Changes arrive as Store.Changed, without a reload.
        leader.ctl("set", "app/extra", "1")
        leader.ctl("del", "app/mode")
        keys = lambda: self.driver.execute_script(  # noqa: E731
            "return [...document.querySelectorAll('#store-body th')].map(e => e.textContent)")
        page.wait(lambda: keys() == ["app/config", "app/extra", "db/primary"], what="the changed keys")
        page.wait_text("store-count", "3 of 3 keys")
        from selenium.webdriver.common.by import By
        search = self.driver.find_element(By.ID, "store-search")
        search.send_keys("APP/")
        page.wait_text("store-count", "2 of 3 keys")
        self.assertEqual(keys(), ["app/config", "app/extra"])

        plugin = lambda: self.driver.execute_script(  # noqa: E731
            "const p = document.querySelector('#plugins article[data-plugin=vip]');"
            "return p ? p.innerText : ''")
        if vip:
            page.wait(lambda: "inactive" in plugin(), what="the vip plugin inactive")
            self.assertIn("10.77.0.100/24@spvip-none0\tnot on this node; the leader is n2", plugin())
        else:
            page.wait_text("plugins-empty", "This sparrowd reports no plugins.")
        self.assert_readable()
        page.screenshot("cockpit-sparrow.png")

        # Cockpit's dark theme, chosen in the shell: this node now leads.
        self.driver.execute_script("localStorage.setItem('shell:style', 'dark')")
        self.driver.get(ws.url)
        self.make_leader("n1")
        page.wait_text("role", "leader")
        self.assertTrue(self.driver.execute_script(
            "return document.documentElement.classList.contains('sp-dark')"))
        if vip:
            page.wait(lambda: "failed" in plugin(), what="the vip plugin failed on the leader")
            self.assertIn("spvip-none0: NetworkManager has no device spvip-none0", plugin())
        page.wait_text("store-count", "3 of 3 keys")
        # the leader's view of replication: every member caught up
        commit = str(w.status()["commit_index"])
        page.wait(lambda: [r[4] for r in page.members()] == ["%s / %s" % (commit, commit)] * 3,
                  what="every member at the commit index")
        self.assert_readable()
        page.screenshot("cockpit-sparrow-dark.png")

    def assert_readable(self):
        """Every text on the page against its background: WCAG AA (4.5:1)."""
        low = self.driver.execute_script(CONTRAST_JS)
        self.assertEqual(low, [], "text below 4.5:1 contrast")

    def test_members_from_the_page(self):
        """Promote a learner and remove it, with the keyboard alone."""
        from selenium.webdriver.common.keys import Keys
        c, w, page = self.cluster, self.watched, self.page
        self.make_leader("n1")
        n4 = c.add_node("n4")
        n4.write_config(c.nodes, join=True)
        w.ctl("members", "add", "--learner", "n4", n4.address)
        n4.start()
        ws = self.cockpit()
        self.driver.get(ws.url)
        row = lambda: next((r for r in page.members() if r[0].split()[0] == "n4"), None)  # noqa: E731
        page.wait(lambda: row() and row()[2] == "learner", what="n4 a learner")

        def press(label):
            # Tab from the transfer target until the button has the focus.
            self.driver.execute_script("document.getElementById('transfer-target').focus()")
            for _ in range(30):
                focused = self.driver.switch_to.active_element
                if focused.get_attribute("aria-label") == label:
                    focused.send_keys(Keys.ENTER)
                    return
                focused.send_keys(Keys.TAB)
            raise AssertionError("no button %r within 30 tabs" % label)

        c.wait(lambda: (next(m for m in w.status()["members"] if m["name"] == "n4")["match_index"]
                        == w.status()["commit_index"]), what="n4 caught up")
        page.wait(lambda: self.driver.execute_script(
            "return !!document.querySelector('button[aria-label=\"Promote n4\"]:enabled')"),
            what="the Promote button")
        press("Promote n4")
        page.wait(lambda: row() and row()[2] == "voter", what="n4 a voter")
        page.wait_text("action-done", "Promote n4: done.")

        press("Remove n4")
        page.wait(lambda: self.driver.execute_script("return document.getElementById('confirm').open"),
                  what="the confirmation")
        self.assertEqual(page.text("confirm-title"), "Remove member n4?")
        # Cancel has the focus: Tab to Confirm.
        self.driver.switch_to.active_element.send_keys(Keys.TAB)
        self.assertEqual(self.driver.switch_to.active_element.text, "Remove")
        self.driver.switch_to.active_element.send_keys(Keys.ENTER)
        page.wait(lambda: row() is None, what="n4 gone")
        page.wait_text("action-done", "Remove n4: done.")
        self.assertNotIn("n4", [m["name"] for m in w.status()["members"]])

    def test_denied_without_privileges(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to run cockpit-bridge as an unprivileged user")
        c, w, page = self.cluster, self.watched, self.page
        self.make_leader("n1")
        # nobody may reach the bus socket, not the node's files
        for path in (c.dir, w.dir):
            os.chmod(path, 0o711)
        ws = self.cockpit(user="nobody")
        self.driver.get(ws.url)
        page.wait_text("role", "leader")
        page.wait(lambda: self.driver.execute_script(
            "return !document.getElementById('transfer').disabled"), what="the transfer button enabled")
        page.click("transfer")
        error = page.wait(lambda: page.text("action-error"), what="the error")
        print("the page shows:", error)
        self.assertIn("Transfer leadership failed: not authorized for "
                      "org.sparrow.cluster1.transfer-leadership", error)
        self.assertIn("org.freedesktop.DBus.Error.AccessDenied", error)
        self.assertEqual(c.leader(), "n1")
        page.screenshot("cockpit-sparrow-denied.png")


if __name__ == "__main__":
    # meson: exit 77 when everything skipped
    from cluster import main
    main()
