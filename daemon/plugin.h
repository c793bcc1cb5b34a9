/* The plugin seam: what turns leadership into host state (the leader
 * target, service addresses, time service).
 *
 * A plugin is a GObject type deriving from SpPlugin, in plugins/NAME/.  The
 * registry (sp_plugins_*) knows every plugin by name; a plugin that needs a
 * heavy library is a loadable module (libsparrow-plugin-NAME.so in
 * SP_PLUGIN_DIR, exporting sp_plugin_module_get_type()), loaded only when
 * the configuration has its group.  Life of a plugin:
 *
 *   probe (config)      reads and checks its group(s); an error stops
 *                       start-up (and fails --check-config) and names the
 *                       file, group, key and what was expected.  Returns
 *                       FALSE without error when it has nothing to do.
 *   start (node, bus)   from now on it follows sp_node_get_holder(): the
 *                       registry calls hold() at every change, in plugin
 *                       order (network first), so that on a loss the
 *                       addresses go before the leader-only units stop.
 *   release             before a planned handover: drop what it holds and
 *                       call sp_plugin_released() once it is dropped, with
 *                       an error when something may still be held (the handover is then given up:
 *                       the new leader would hold at once).  The handover
 *                       waits for every plugin, asked one at a time in
 *                       the reverse order: units stop before addresses go.
 *   resume              the handover is over: follow the node again.
 *   stop                final: drop what can be dropped without waiting.
 *
 * Every method runs on the main loop and must not block it: I/O is
 * asynchronous.  A plugin that fails reports it with sp_plugin_report()
 * (its State becomes failed, LastError says why, the journal gets it) and
 * goes on; it never takes sparrowd down. */
#pragma once

#include <gio/gio.h>

#include "config.h"
#include "node.h"

G_BEGIN_DECLS

typedef enum
{
  SP_PLUGIN_INACTIVE, /* holds nothing */
  SP_PLUGIN_ACTIVE,   /* holds what it manages (or serves, for every-node plugins) */
  SP_PLUGIN_FAILED,   /* the last attempt failed: see last-error */
} SpPluginState;

const char *sp_plugin_state_to_string (SpPluginState state);

#define SP_TYPE_PLUGIN (sp_plugin_get_type ())
G_DECLARE_DERIVABLE_TYPE (SpPlugin, sp_plugin, SP, PLUGIN, GObject)

struct _SpPluginClass
{
  GObjectClass parent_class;

  gboolean (*probe) (SpPlugin *plugin, SpConfig *config, GPtrArray *warnings, GError **error);
  void (*start) (SpPlugin *plugin);
  void (*hold) (SpPlugin *plugin, gboolean holder);
  /* Let go, then sp_plugin_released(); resume after. */
  void (*release) (SpPlugin *plugin);
  void (*resume) (SpPlugin *plugin);
  void (*stop) (SpPlugin *plugin);
  /* Something only the holder may have (an address, a started unit) may
   * still be here: TRUE until its removal is confirmed.  NULL: never
   * (a plugin that serves every node). */
  gboolean (*holding) (SpPlugin *plugin);
  /* Plugin-specific details for D-Bus (a{sv}, floating or full). */
  GVariant *(*details) (SpPlugin *plugin);
};

/* Properties: "name" (s, construct-only: the D-Bus object's last path
 * element), "state" (SpPluginState as int), "last-error" (s, "" when none),
 * "details" (a{sv}); each emits notify on change. */
const char *sp_plugin_get_name (SpPlugin *plugin);
SpPluginState sp_plugin_get_state (SpPlugin *plugin);
const char *sp_plugin_get_last_error (SpPlugin *plugin);
GVariant *sp_plugin_get_details (SpPlugin *plugin);

/* Valid from start on. */
SpNode *sp_plugin_get_node (SpPlugin *plugin);
GDBusConnection *sp_plugin_get_bus (SpPlugin *plugin);

/* For plugins: a new state; failed needs error (logged once until the
 * state or text changes), other states clear it. */
void sp_plugin_report (SpPlugin *plugin, SpPluginState state, const char *error);
void sp_plugin_details_changed (SpPlugin *plugin);
/* The release asked for is over (a no-op when none is): error NULL when
 * everything was let go, else what may still be held. */
void sp_plugin_released (SpPlugin *plugin, const char *error);
/* From a release until the resume that ends the handover. */
gboolean sp_plugin_get_released (SpPlugin *plugin);
gboolean sp_plugin_get_holding (SpPlugin *plugin);

/* For the registry: ask for a release (one asked before and not over yet
 * is over then), and end the handover. */
void sp_plugin_release_async (SpPlugin *plugin, GAsyncReadyCallback callback, gpointer user_data);
gboolean sp_plugin_release_finish (SpPlugin *plugin, GAsyncResult *result, GError **error);
void sp_plugin_resume (SpPlugin *plugin);

/* ---- the registry ------------------------------------------------------ */

typedef struct _SpPlugins SpPlugins;

/* Probes every known plugin against config; loads a module only when its
 * group is present.  Warns (into warnings) about groups no plugin and no
 * core part claimed.  NULL on a config or module error. */
SpPlugins *sp_plugins_probe (SpConfig *config, GPtrArray *warnings, GError **error);
/* The plugins that probed TRUE, in order. */
GPtrArray *sp_plugins_get (SpPlugins *plugins);
/* Any plugin holding (see SpPluginClass.holding); FALSE before start. */
gboolean sp_plugins_holding (SpPlugins *plugins);
/* Starts them on node and bus and joins the node's planned handover. */
void sp_plugins_start (SpPlugins *plugins, SpNode *node, GDBusConnection *bus);
void sp_plugins_free (SpPlugins *plugins);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (SpPlugins, sp_plugins_free)

G_END_DECLS
