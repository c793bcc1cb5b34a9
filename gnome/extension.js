/* sparrow's GNOME Shell indicator: this node's role and the cluster's leader,
 * read from sparrowd (org.sparrow.cluster1 on the system bus).
 *
 * Everything follows the bus: PropertiesChanged and the name owner (a
 * restarted daemon is re-read as a whole). Nothing polls, and nothing
 * starts sparrowd: every proxy and call says DO_NOT_AUTO_START, and a bus
 * name without an owner reads as "not running". */
'use strict';

const {Clutter, Gio, GLib, GObject, Pango, St} = imports.gi;

const ExtensionUtils = imports.misc.extensionUtils;
const Main = imports.ui.main;
const PopupMenu = imports.ui.popupMenu;
const QuickSettings = imports.ui.quickSettings;
const Signals = imports.signals;

const BUS_NAME = 'org.sparrow.cluster1';
const MANAGER_PATH = '/org/sparrow/cluster1';
const MANAGER_IFACE = 'org.sparrow.cluster1.Manager';
const PLUGIN_IFACE = 'org.sparrow.cluster1.Plugin';
const PROXY_FLAGS = Gio.DBusProxyFlags.DO_NOT_AUTO_START;
// Interactive: polkit may ask for a password, which takes a person's time.
const CALL_FLAGS = Gio.DBusCallFlags.NO_AUTO_START |
    Gio.DBusCallFlags.ALLOW_INTERACTIVE_AUTHORIZATION;
const CALL_TIMEOUT_MS = GLib.MAXINT32;

function newProxy(path, iface, cancellable, callback) {
    Gio.DBusProxy.new_for_bus(Gio.BusType.SYSTEM, PROXY_FLAGS, null, BUS_NAME,
        path, iface, cancellable, (source, result) => {
            let proxy;
            try {
                proxy = Gio.DBusProxy.new_for_bus_finish(result);
            } catch (e) {
                if (!e.matches(Gio.IOErrorEnum, Gio.IOErrorEnum.CANCELLED))
                    logError(e, `sparrow: no proxy for ${path}`);
                return;
            }
            callback(proxy);
        });
}

function property(proxy, name) {
    const value = proxy?.get_cached_property(name);
    return value ? value.recursiveUnpack() : null;
}

/* One D-Bus proxy and the handlers it must lose when dropped. */
class Followed {
    constructor(proxy, onChange) {
        this.proxy = proxy;
        this._ids = [
            proxy.connect('g-properties-changed', onChange),
            proxy.connect('notify::g-name-owner', onChange),
        ];
    }

    destroy() {
        this._ids.forEach(id => this.proxy.disconnect(id));
    }
}

/* This node's sparrowd as last published: emits 'changed'. */
var Cluster = class {
    constructor() {
        this._cancellable = new Gio.Cancellable();
        this._manager = null;
        this._plugins = new Map();
        newProxy(MANAGER_PATH, MANAGER_IFACE, this._cancellable, proxy => {
            this._manager = new Followed(proxy, () => this._changed());
            this._changed();
        });
    }

    get running() {
        return !!this._manager?.proxy.g_name_owner;
    }

    get(name) {
        return this.running ? property(this._manager.proxy, name) : null;
    }

    /* [{name, state, lastError, details}] of the plugins loaded so far. */
    get plugins() {
        return [...this._plugins.values()]
            .filter(p => p?.proxy.g_name_owner)
            .map(p => ({
                name: property(p.proxy, 'Name'),
                state: property(p.proxy, 'State'),
                lastError: property(p.proxy, 'LastError'),
                details: property(p.proxy, 'Details') ?? {},
            }))
            .filter(p => p.name)
            .sort((a, b) => a.name.localeCompare(b.name));
    }

    _changed() {
        this._followPlugins(this.get('Plugins') ?? []);
        this.emit('changed');
    }

    /* Plugins come and go with the daemon's configuration: one proxy per
     * object the Manager lists. */
    _followPlugins(paths) {
        for (const [path, followed] of this._plugins) {
            if (!paths.includes(path)) {
                followed?.destroy();
                this._plugins.delete(path);
            }
        }
        for (const path of paths) {
            if (this._plugins.has(path))
                continue;
            this._plugins.set(path, null);
            newProxy(path, PLUGIN_IFACE, this._cancellable, proxy => {
                // gone meanwhile, or listed again and followed already
                if (this._plugins.get(path) !== null)
                    return;
                this._plugins.set(path, new Followed(proxy, () => this.emit('changed')));
                this.emit('changed');
            });
        }
    }

    /* TransferLeadership on this node's daemon; callback(error message or null). */
    transfer(target, callback) {
        if (!this.running) {
            callback('sparrowd is not running');
            return;
        }
        this._manager.proxy.call('TransferLeadership', new GLib.Variant('(s)', [target]),
            CALL_FLAGS, CALL_TIMEOUT_MS, this._cancellable, (proxy, result) => {
                try {
                    proxy.call_finish(result);
                } catch (e) {
                    if (e.matches(Gio.IOErrorEnum, Gio.IOErrorEnum.CANCELLED))
                        return;
                    Gio.DBusError.strip_remote_error(e);
                    callback(e.message);
                    return;
                }
                callback(null);
            });
    }

    destroy() {
        this._cancellable.cancel();
        this._manager?.destroy();
        this._plugins.forEach(p => p?.destroy());
        this._plugins.clear();
    }
};
Signals.addSignalMethods(Cluster.prototype);

/* The short text of the top bar: leader, follower, learner, no quorum or
 * not running. A leader without its lease, a candidate and a follower that
 * knows no leader all lack a quorum. */
function roleText(cluster) {
    const role = cluster.get('Role');
    if (!role)
        return 'not running';
    if (role === 'leader')
        return cluster.get('LeaseValid') ? 'leader' : 'no quorum';
    if (role === 'candidate' || !cluster.get('Leader'))
        return 'no quorum';
    return role;
}

function detailText(value) {
    if (Array.isArray(value))
        return value.length ? value.join(', ') : 'none';
    if (value !== null && typeof value === 'object') {
        return Object.entries(value).map(([k, v]) => `${k} ${detailText(v)}`)
            .join(', ');
    }
    return `${value}`;
}

/* The lines about a plugin after its state: the vip plugin's addresses each
 * held here or not; any other Details as they come. */
function pluginDetails(plugin) {
    const lines = [];
    const details = {...plugin.details};
    const {addresses, held} = details;
    if (plugin.name === 'vip' && Array.isArray(addresses) && Array.isArray(held)) {
        for (const a of addresses)
            lines.push(`${a}: ${held.includes(a) ? 'held here' : 'not held here'}`);
        delete details.addresses;
        delete details.held;
    }
    for (const [key, value] of Object.entries(details).sort())
        lines.push(`${key}: ${detailText(value)}`);
    if (plugin.lastError)
        lines.push(`error: ${plugin.lastError}`);
    return lines;
}

/* A line of the menu, wrapped rather than cut: errors are long. A detail
 * is indented under the line it belongs to. */
function infoItem(text, detail = false) {
    const item = new PopupMenu.PopupMenuItem(text, {reactive: false, can_focus: false});
    item.label.add_style_class_name(detail ? 'sparrow-detail' : 'sparrow-info');
    item.label.clutter_text.set({line_wrap: true, ellipsize: Pango.EllipsizeMode.NONE});
    return item;
}

var SparrowToggle = GObject.registerClass(
class SparrowToggle extends QuickSettings.QuickMenuToggle {
    _init(cluster, gicon) {
        super._init({label: 'Sparrow', gicon});
        this._cluster = cluster;
        this._error = null;
        this.menu.setHeader(gicon, 'Sparrow cluster');
        this.connect('clicked', () => this.menu.open());
        // GNOME 43 leaves a toggle's menu in Quick Settings when it goes
        this.connect('destroy', () => this.menu.destroy());
        // a refusal is news until the menu that showed it closes
        this.menu.connect('open-state-changed', (menu, open) => {
            if (!open && this._error) {
                this._error = null;
                this.sync();
            }
        });

        this._summary = new PopupMenu.PopupMenuSection();
        this.menu.addMenuItem(this._summary);
        this.menu.addMenuItem(new PopupMenu.PopupSeparatorMenuItem());
        this._action = new PopupMenu.PopupMenuItem('');
        this._action.connect('activate', () => this._transfer());
        this.menu.addMenuItem(this._action);
        this._errorItem = infoItem('');
        this._errorItem.label.add_style_class_name('sparrow-error');
        this.menu.addMenuItem(this._errorItem);
    }

    _transfer() {
        // here: this node's name; away: empty, the most up-to-date voter
        const target = roleText(this._cluster) === 'leader' ? '' : this._cluster.get('NodeName');
        this._cluster.transfer(target, error => {
            this._error = error;
            this.sync();
        });
    }

    sync() {
        const c = this._cluster;
        const text = roleText(c);
        this.label = text;
        this.checked = text === 'leader';
        this.menu.setHeader(this.gicon, 'Sparrow cluster',
            c.running ? `${c.get('NodeName')}: ${text}` : 'sparrowd is not running');

        this._summary.removeAll();
        if (c.running) {
            const leader = c.get('Leader');
            this._summary.addMenuItem(infoItem(
                `Leader: ${leader || 'none'}, term ${c.get('Term')}`));
            const members = (c.get('Members') ?? [])
                .sort((a, b) => a[0].localeCompare(b[0]));
            for (const [name, address, voter, reachable] of members) {
                const roles = [name === leader ? 'leader' : null, voter ? null : 'learner']
                    .filter(r => r).map(r => ` (${r})`).join('');
                this._summary.addMenuItem(infoItem(
                    `${name}${roles} ${address}: ${reachable ? 'reachable' : 'unreachable'}`));
            }
            for (const p of c.plugins) {
                this._summary.addMenuItem(infoItem(`${p.name}: ${p.state}`));
                for (const line of pluginDetails(p))
                    this._summary.addMenuItem(infoItem(line, true));
            }
        }

        this._action.visible = c.running && ['leader', 'follower'].includes(text);
        this._action.label.text = text === 'leader'
            ? 'Move leadership away' : 'Move leadership here';
        this._errorItem.visible = !!this._error;
        this._errorItem.label.text = this._error ?? '';
    }
});

var SparrowIndicator = GObject.registerClass(
class SparrowIndicator extends QuickSettings.SystemIndicator {
    _init(extension) {
        super._init();
        const gicon = Gio.FileIcon.new(
            extension.dir.get_child('icons').get_child('sparrow-symbolic.svg'));
        this._icon = this._addIndicator();
        this._icon.gicon = gicon;
        this._label = new St.Label({
            style_class: 'sparrow-indicator-label',
            y_align: Clutter.ActorAlign.CENTER,
        });
        this.add_child(this._label);

        this._cluster = new Cluster();
        this._toggle = new SparrowToggle(this._cluster, gicon);
        this.quickSettingsItems.push(this._toggle);
        this._cluster.connect('changed', () => this._sync());
        this._sync();
    }

    _sync() {
        this._label.text = roleText(this._cluster);
        this._toggle.sync();
    }

    destroy() {
        this._cluster.destroy();
        this.quickSettingsItems.forEach(item => item.destroy());
        super.destroy();
    }
});

class Extension {
    enable() {
        const quickSettings = Main.panel.statusArea.quickSettings;
        this._indicator = new SparrowIndicator(ExtensionUtils.getCurrentExtension());
        quickSettings._indicators.insert_child_at_index(this._indicator, 0);
        quickSettings._addItems(this._indicator.quickSettingsItems);
    }

    disable() {
        this._indicator.destroy();
        this._indicator = null;
    }
}

/* exported init */
function init() {
    return new Extension();
}
