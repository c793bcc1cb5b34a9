/* The sparrow status page: this host's sparrowd as it publishes itself on
 * the system bus (org.sparrow.cluster1), live, with the leadership and
 * membership actions.
 *
 * It never talks to the well-known name.  Cockpit's bridge watches a
 * channel's name with auto-start and sends method calls without
 * NO_AUTO_START, so addressing org.sparrow.cluster1 could start a stopped
 * sparrowd.  Instead the page asks the bus who owns the name (and follows
 * NameOwnerChanged), then opens a channel to that owner's unique name,
 * which the bus never activates.  A new owner (sparrowd restarted) gets a
 * fresh channel: its proxies read every property again, where a proxy of
 * the old channel would keep the values of the process that is gone. */

"use strict";

const BUS_NAME = "org.sparrow.cluster1";
const PATH = "/org/sparrow/cluster1";
const MANAGER = "org.sparrow.cluster1.Manager";
const PLUGIN = "org.sparrow.cluster1.Plugin";
const STORE = "org.sparrow.cluster1.Store";
const DBUS = "org.freedesktop.DBus";
/* Rows of the store table at most; the search narrows it down. */
const STORE_ROWS_MAX = 500;

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
        if (key === "class")
            node.className = value;
        else
            node.setAttribute(key, value);
    }
    for (const child of children)
        node.append(child);
    return node;
}

/* Cockpit's theme choice (the shell keeps it in localStorage), else the
 * browser's. */
function applyTheme() {
    let style = "auto";
    try {
        style = window.localStorage.getItem("shell:style") || "auto";
    } catch (e) {
        /* storage blocked: follow the browser */
    }
    const dark = style === "dark" ||
        (style !== "light" && window.matchMedia("(prefers-color-scheme: dark)").matches);
    document.documentElement.classList.toggle("sp-dark", dark);
}

/* A value of Details (a{sv}): cockpit hands variants over as {t, v}. */
function plain(value) {
    if (value && typeof value === "object" && "t" in value && "v" in value)
        return plain(value.v);
    return value;
}

function describe(value) {
    value = plain(value);
    if (Array.isArray(value))
        return value.length ? value.map(describe).join(", ") : "none";
    if (value && typeof value === "object") {
        const parts = Object.entries(value).map(([k, v]) => k + ": " + describe(v));
        return parts.length ? parts.join(", ") : "none";
    }
    if (typeof value === "boolean")
        return value ? "yes" : "no";
    return String(value);
}

function errorText(ex) {
    if (ex && ex.message)
        return ex.message;
    return cockpit.message(ex);
}

/* One sparrowd process: the bus name's current owner. */
class Session {
    constructor(owner) {
        this.owner = owner;
        this.closed = false;
        this.client = cockpit.dbus(owner, { bus: "system", superuser: "try" });
        this.manager = this.client.proxy(MANAGER, PATH, { watch: true });
        this.plugins = new Map();
        this.store = null;
        this.storePending = [];
        this.busy = false;

        this.client.addEventListener("close", (event, options) => {
            /* The owner went away: NameOwnerChanged says what comes next. */
            if (!this.closed && options.problem && options.problem !== "not-found")
                setConnection(cockpit.format("The bus connection closed: $0", cockpit.message(options)));
        });
        this.manager.addEventListener("changed", () => this.render());
        this.manager.wait().then(() => {
            if (this.closed)
                return;
            if (!this.manager.valid) {
                showAbsent(cockpit.format("The owner of $0 ($1) does not offer $2.", BUS_NAME, owner, MANAGER));
                return;
            }
            this.render();
        });

        this.client.subscribe({ path: PATH, interface: STORE, member: "Changed" },
                              (path, iface, signal, args) => this.storeChanged(args[0]));
        this.client.call(PATH, STORE, "List", ["", true], { type: "sb" })
                .then((reply) => this.storeLoaded(reply[0]))
                .catch((ex) => {
                    if (this.closed)
                        return;
                    /* No list to apply them to: stop keeping changes. */
                    this.storePending = null;
                    $("store-error").textContent = cockpit.format("The store cannot be read: $0", errorText(ex));
                    $("store-error").hidden = false;
                });
    }

    close() {
        this.closed = true;
        this.client.close();
    }

    get props() {
        return this.manager.data;
    }

    get isLeader() {
        return this.props.Role === "leader";
    }

    render() {
        if (this.closed || !this.manager.valid)
            return;
        const p = this.props;
        showPresent();
        $("node-name").textContent = p.NodeName || "";
        $("role").textContent = p.Role || "";
        $("term").textContent = p.Term !== undefined ? String(p.Term) : "";
        $("leader").textContent = p.Leader || "none known";
        $("leader-address").textContent = p.LeaderAddress || "unknown";
        if (p.Role === "leader")
            $("lease").textContent = p.LeaseValid ? "valid" : "not valid: no quorum heard from recently";
        else
            $("lease").textContent = "held by the leader only";
        $("holder").textContent = p.Holder ? "yes" : "no";
        $("commit-index").textContent = p.CommitIndex !== undefined ? String(p.CommitIndex) : "";
        setConnection(cockpit.format("Live from sparrowd on this host (bus name $0, owner $1).", BUS_NAME, this.owner));
        this.renderActions();
        this.renderMembers();
        this.renderPlugins();
        $("app").setAttribute("aria-busy", "false");
    }

    renderActions() {
        const p = this.props;
        const leader = this.isLeader;
        const select = $("transfer-target");
        /* Any voter but the leader: on a follower this node too ("here"),
         * since sparrowd forwards a follower's transfer to the leader. */
        const targets = (p.Members || []).filter(([name, , voter]) => voter && name !== p.Leader)
                .map(([name]) => name);
        /* Rebuilt only when the voters change: an open list stays open. */
        if (targets.join("\n") !== [...select.options].slice(1).map((o) => o.value).join("\n")) {
            const chosen = select.value;
            select.replaceChildren(el("option", { value: "" }, "the most up-to-date member"),
                                   ...targets.map((name) => el("option", { value: name },
                                                               name === p.NodeName ? name + " (this node)" : name)));
            if (targets.includes(chosen))
                select.value = chosen;
        }
        select.disabled = !p.Leader || this.busy;
        $("transfer").disabled = !p.Leader || this.busy;
        if (leader) {
            $("actions-note").textContent = "This node leads the cluster: leadership and membership are changed here.";
        } else if (p.Leader) {
            $("actions-note").textContent = cockpit.format(
                "This node is a $0. A transfer asked here goes to the leader, $1 ($2); membership is changed on the leader: open Cockpit on that host.",
                p.Role, p.Leader, p.LeaderAddress || "address unknown");
        } else {
            $("actions-note").textContent = cockpit.format(
                "This node is a $0 and knows no leader: nothing can be changed until one is elected.", p.Role);
        }
    }

    renderMembers() {
        const p = this.props;
        const leader = this.isLeader;
        const commit = p.CommitIndex || 0;
        const body = $("members-body");
        const focused = body.contains(document.activeElement) ? document.activeElement.getAttribute("aria-label") : null;
        const stale = new Map([...body.rows].map((row) => [row.dataset.member, row]));
        const labels = (cell) => [...cell.children].map((b) => b.getAttribute("aria-label")).join("\n");
        (p.Members || []).forEach(([name, address, voter, reachable, match], i) => {
            const nameCell = el("th", { scope: "row" }, name);
            if (name === p.Leader)
                nameCell.append(" ", el("span", { class: "badge" }, "leader"));
            if (name === p.NodeName)
                nameCell.append(" ", el("span", { class: "badge subtle" }, "this node"));

            let progress;
            if (!leader) {
                progress = el("span", { class: "hint" }, "known to the leader");
            } else {
                const shown = Math.min(match, commit);
                progress = el("span", { class: "progress" },
                              el("progress", { max: String(Math.max(commit, 1)), value: String(shown),
                                               "aria-label": cockpit.format("Replication of $0", name) }),
                              " ", cockpit.format("$0 / $1", match, commit));
            }

            const actions = el("td", { class: "actions" });
            if (leader && name !== p.NodeName) {
                if (!voter)
                    actions.append(this.memberButton("Promote", name, "PromoteMember", false));
                actions.append(this.memberButton("Remove", name, "RemoveMember", true));
            }

            const cells = [nameCell,
                el("td", {}, address),
                el("td", {}, voter ? "voter" : "learner"),
                el("td", { class: reachable ? "ok" : "bad" }, reachable ? "reachable" : "unreachable"),
                el("td", {}, progress),
                actions];
            let row = stale.get(name);
            stale.delete(name);
            if (!row) {
                row = el("tr", { "data-member": name }, ...cells);
            } else {
                /* Updated in place, the same buttons kept: a change that
                 * arrives mid-click or under the keyboard focus loses
                 * neither. */
                const kept = row.cells[5];
                if (labels(kept) === labels(actions)) {
                    for (const button of kept.children)
                        button.disabled = this.busy;
                    cells[5] = kept;
                }
                cells.forEach((cell, j) => {
                    if (row.cells[j] !== cell)
                        row.cells[j].replaceWith(cell);
                });
            }
            if (body.rows[i] !== row)
                body.insertBefore(row, body.rows[i] || null);
        });
        for (const row of stale.values())
            row.remove();
        /* A button that had to be made anew takes the focus back. */
        if (focused && !body.contains(document.activeElement)) {
            const again = [...body.querySelectorAll("button")].find((b) => b.getAttribute("aria-label") === focused);
            if (again)
                again.focus();
        }
    }

    memberButton(label, name, method, confirmFirst) {
        const button = el("button", { type: "button", "aria-label": label + " " + name }, label);
        button.disabled = this.busy;
        button.addEventListener("click", () => {
            const run = () => this.act(cockpit.format("$0 $1", label, name), method, [name]);
            if (!confirmFirst)
                return run();
            confirm(cockpit.format("Remove member $0?", name),
                    cockpit.format("$0 leaves the cluster: it no longer votes nor receives the log.", name),
                    label, run);
        });
        return button;
    }

    act(what, method, args) {
        const error = $("action-error");
        error.hidden = true;
        error.replaceChildren();
        $("action-done").textContent = "";
        this.busy = true;
        this.render();
        return Promise.resolve(this.client.call(PATH, MANAGER, method, args, { type: "s" }))
                .then(() => {
                    $("action-done").textContent = cockpit.format("$0: done.", what);
                })
                .catch((ex) => {
                    error.append(el("strong", {}, cockpit.format("$0 failed: ", what)), errorText(ex));
                    if (ex.name)
                        error.append(" ", el("code", {}, ex.name));
                    if (ex.name === "org.freedesktop.DBus.Error.AccessDenied") {
                        error.append(el("p", {},
                                        "Changing the cluster needs administrative access: turn it on in " +
                                        "Cockpit's top bar, or grant the polkit action (see the README, polkit)."));
                    }
                    error.hidden = false;
                })
                .finally(() => {
                    this.busy = false;
                    this.render();
                });
    }

    renderPlugins() {
        const paths = this.props.Plugins;
        const box = $("plugins");
        /* An older sparrowd has no Plugins property at all. */
        $("plugins-empty").hidden = Array.isArray(paths) && paths.length > 0;
        if (!Array.isArray(paths)) {
            box.replaceChildren();
            return;
        }
        for (const path of paths) {
            if (!this.plugins.has(path)) {
                const proxy = this.client.proxy(PLUGIN, path, { watch: true });
                proxy.addEventListener("changed", () => this.renderPlugins());
                this.plugins.set(path, proxy);
            }
        }
        box.replaceChildren(...paths.map((path) => this.pluginCard(path, this.plugins.get(path))));
    }

    pluginCard(path, proxy) {
        const d = proxy.data;
        const name = d.Name || path.split("/").pop();
        const card = el("article", { class: "plugin", "data-plugin": name, "aria-label": "Plugin " + name });
        card.append(el("h3", {}, name, " ",
                       el("span", { class: "state state-" + (d.State || "unknown") }, d.State || "…")));
        if (d.LastError)
            card.append(el("p", { class: "error-text" }, d.LastError));
        const details = {};
        for (const [key, value] of Object.entries(d.Details || {}))
            details[key] = plain(value);
        if (name === "vip" && Array.isArray(details.addresses)) {
            card.append(this.vipTable(details));
            delete details.addresses;
            delete details.held;
        }
        const keys = Object.keys(details).sort();
        if (keys.length) {
            card.append(el("dl", { class: "facts details" },
                           ...keys.map((k) => el("div", {}, el("dt", {}, k), el("dd", {}, describe(details[k]))))));
        }
        return card;
    }

    /* Where each service address is: here, or (as far as this node can
     * tell) with the leader. */
    vipTable(details) {
        const p = this.props;
        const held = new Set((details.held || []).map(plain));
        const table = el("table", { class: "vip" },
                         el("caption", {}, "Service addresses"),
                         el("thead", {}, el("tr", {},
                                            el("th", { scope: "col" }, "Address"),
                                            el("th", { scope: "col" }, "Where"))));
        const body = el("tbody");
        for (const spec of details.addresses) {
            const address = String(spec).split("@")[0];
            let where;
            if ([...held].some((h) => String(h).split("@")[0] === address))
                where = cockpit.format("on this node ($0)", p.NodeName);
            else if (p.Leader && p.Leader !== p.NodeName)
                where = cockpit.format("not on this node; the leader is $0", p.Leader);
            else
                where = "not on this node";
            body.append(el("tr", {}, el("th", { scope: "row" }, String(spec)), el("td", {}, where)));
        }
        table.append(body);
        return table;
    }

    storeLoaded(entries) {
        if (this.closed)
            return;
        this.store = new Map();
        for (const [key, value, revision] of entries)
            this.store.set(key, { value, revision });
        /* Changes announced before the list was taken are in it already;
         * revisions are the store's, so anything newer is applied. */
        const pending = this.storePending;
        this.storePending = [];
        for (const changes of pending)
            this.applyChanges(changes, true);
        this.renderStore();
    }

    storeChanged(changes) {
        if (this.closed)
            return;
        if (!this.store) {
            if (this.storePending)
                this.storePending.push(changes);
            return;
        }
        this.applyChanges(changes, false);
        this.renderStore();
    }

    applyChanges(changes, onlyNewer) {
        for (const [key, value, deleted, revision] of changes) {
            const known = this.store.get(key);
            if (onlyNewer && known && known.revision >= revision)
                continue;
            if (deleted)
                this.store.delete(key);
            else
                this.store.set(key, { value, revision });
        }
    }

    renderStore() {
        if (this.closed || !this.store)
            return;
        const query = $("store-search").value.trim().toLowerCase();
        const keys = [...this.store.keys()].filter((k) => k.toLowerCase().includes(query)).sort();
        const body = $("store-body");
        body.replaceChildren(...keys.slice(0, STORE_ROWS_MAX).map((key) => {
            const entry = this.store.get(key);
            return el("tr", {},
                      el("th", { scope: "row" }, key),
                      el("td", { class: "value", title: entry.value }, entry.value),
                      el("td", {}, String(entry.revision)));
        }));
        let count = cockpit.format("$0 of $1 keys", keys.length, this.store.size);
        if (keys.length > STORE_ROWS_MAX)
            count += cockpit.format(" (the first $0 shown: refine the search)", STORE_ROWS_MAX);
        $("store-count").textContent = count;
    }
}

let session = null;

function setConnection(message) {
    /* A live region: only a change is news to a screen reader. */
    if ($("connection").textContent !== message)
        $("connection").textContent = message;
}

function showAbsent(detail) {
    $("present").hidden = true;
    $("absent").hidden = false;
    if (detail)
        $("absent-detail").textContent = detail;
    setConnection("sparrowd is not running on this host.");
    $("app").setAttribute("aria-busy", "false");
}

function showPresent() {
    $("absent").hidden = true;
    $("present").hidden = false;
}

function resetPage() {
    /* The buttons of the members act through the session that made them. */
    $("members-body").replaceChildren();
    $("plugins").replaceChildren();
    $("store-body").replaceChildren();
    $("store-count").textContent = "";
    $("store-error").hidden = true;
    $("action-error").hidden = true;
    $("action-done").textContent = "";
}

/* owner: the unique name now holding org.sparrow.cluster1, "" for none;
 * reopen: a new channel even to the same owner. */
function follow(owner, reopen) {
    if (session && session.owner === owner && !reopen)
        return;
    if (session)
        session.close();
    session = null;
    resetPage();
    if (owner)
        session = new Session(owner);
    else
        showAbsent();
}

/* A channel keeps the privileges it was opened with: when the user
 * switches Cockpit's administrative access, sparrowd gets a new one. */
function followAdminAccess() {
    const superuser = cockpit.dbus(null, { bus: "internal" }).proxy("cockpit.Superuser", "/superuser");
    let current = null;
    superuser.addEventListener("changed", () => {
        const now = superuser.Current;
        if (now === "init")
            return;
        if (current !== null && now !== current && session)
            follow(session.owner, true);
        current = now;
    });
}

function confirm(title, text, label, action) {
    const dialog = $("confirm");
    $("confirm-title").textContent = title;
    $("confirm-text").textContent = text;
    $("confirm-ok").textContent = label;
    dialog.addEventListener("close", function done() {
        dialog.removeEventListener("close", done);
        if (dialog.returnValue === "ok")
            action();
    });
    dialog.showModal();
    $("confirm-cancel").focus();
}

function start() {
    applyTheme();
    window.addEventListener("storage", applyTheme);
    window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", applyTheme);

    $("transfer-form").addEventListener("submit", (event) => {
        event.preventDefault();
        if (!session)
            return;
        const target = $("transfer-target").value;
        session.act(target ? cockpit.format("Transfer leadership to $0", target) : "Transfer leadership",
                    "TransferLeadership", [target]);
    });
    $("store-search").addEventListener("input", () => session && session.renderStore());
    followAdminAccess();

    /* The bus driver itself: always there, never activated. */
    const bus = cockpit.dbus(DBUS, { bus: "system" });
    bus.addEventListener("close", (event, options) => {
        setConnection(cockpit.format("No connection to the system bus: $0", cockpit.message(options)));
    });
    /* Subscribed before asking, so no change falls between the two;
     * answers and signals arrive in the order the bus sent them. */
    bus.subscribe({ path: "/org/freedesktop/DBus", interface: DBUS, member: "NameOwnerChanged", arg0: BUS_NAME },
                  (path, iface, signal, args) => follow(args[2]));
    bus.call("/org/freedesktop/DBus", DBUS, "GetNameOwner", [BUS_NAME], { type: "s" })
            .then((reply) => follow(reply[0]))
            .catch((ex) => {
                if (ex.name === "org.freedesktop.DBus.Error.NameHasNoOwner")
                    follow("");
                else
                    setConnection(cockpit.format("Cannot ask the system bus about $0: $1", BUS_NAME, errorText(ex)));
            });
}

start();
