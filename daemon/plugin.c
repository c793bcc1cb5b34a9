/* The SpPlugin base class and the registry that owns the plugins.  The
 * registry is the node's only handover hold per plugin and calls hold() in
 * plugin order: the known table below lists network plugins first. */
#include "plugin.h"

#include <gmodule.h>

#include "leader-target.h"
#include "timesync.h"

typedef struct
{
  char *name;
  SpPluginState state;
  char *last_error;
  SpNode *node;
  GDBusConnection *bus;
  GTask *release;    /* the release asked for, until it is over */
  gboolean released; /* from a release until the resume */
} SpPluginPrivate;

G_DEFINE_TYPE_WITH_PRIVATE (SpPlugin, sp_plugin, G_TYPE_OBJECT)

enum
{
  PROP_0,
  PROP_NAME,
  PROP_STATE,
  PROP_LAST_ERROR,
  PROP_DETAILS,
  N_PROPS,
};

static GParamSpec *props[N_PROPS];

const char *
sp_plugin_state_to_string (SpPluginState state)
{
  static const char *const names[] = { "inactive", "active", "failed" };

  return state < G_N_ELEMENTS (names) ? names[state] : "unknown";
}

static void
sp_plugin_finalize (GObject *object)
{
  SpPluginPrivate *priv = sp_plugin_get_instance_private (SP_PLUGIN (object));

  g_free (priv->name);
  g_free (priv->last_error);
  g_clear_object (&priv->node);
  g_clear_object (&priv->bus);
  G_OBJECT_CLASS (sp_plugin_parent_class)->finalize (object);
}

static void
sp_plugin_get_property (GObject *object, guint id, GValue *value, GParamSpec *pspec)
{
  SpPlugin *plugin = SP_PLUGIN (object);
  SpPluginPrivate *priv = sp_plugin_get_instance_private (plugin);

  switch (id)
    {
      case PROP_NAME:
        g_value_set_string (value, priv->name);
        break;
      case PROP_STATE:
        g_value_set_int (value, priv->state);
        break;
      case PROP_LAST_ERROR:
        g_value_set_string (value, sp_plugin_get_last_error (plugin));
        break;
      case PROP_DETAILS:
        g_value_take_variant (value, sp_plugin_get_details (plugin));
        break;
      default:
        G_OBJECT_WARN_INVALID_PROPERTY_ID (object, id, pspec);
    }
}

static void
sp_plugin_set_property (GObject *object, guint id, const GValue *value, GParamSpec *pspec)
{
  SpPluginPrivate *priv = sp_plugin_get_instance_private (SP_PLUGIN (object));

  switch (id)
    {
      case PROP_NAME:
        priv->name = g_value_dup_string (value);
        break;
      default:
        G_OBJECT_WARN_INVALID_PROPERTY_ID (object, id, pspec);
    }
}

static void
sp_plugin_class_init (SpPluginClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);
  GParamFlags ro = G_PARAM_READABLE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY;

  object_class->finalize = sp_plugin_finalize;
  object_class->get_property = sp_plugin_get_property;
  object_class->set_property = sp_plugin_set_property;
  props[PROP_NAME]
      = g_param_spec_string ("name", NULL, NULL, NULL,
                             G_PARAM_READWRITE | G_PARAM_CONSTRUCT_ONLY | G_PARAM_STATIC_STRINGS);
  props[PROP_STATE]
      = g_param_spec_int ("state", NULL, NULL, SP_PLUGIN_INACTIVE, SP_PLUGIN_FAILED, 0, ro);
  props[PROP_LAST_ERROR] = g_param_spec_string ("last-error", NULL, NULL, NULL, ro);
  props[PROP_DETAILS]
      = g_param_spec_variant ("details", NULL, NULL, G_VARIANT_TYPE_VARDICT, NULL, ro);
  g_object_class_install_properties (object_class, N_PROPS, props);
}

static void
sp_plugin_init (SpPlugin *plugin)
{
}

const char *
sp_plugin_get_name (SpPlugin *plugin)
{
  SpPluginPrivate *priv = sp_plugin_get_instance_private (plugin);

  return priv->name;
}

SpPluginState
sp_plugin_get_state (SpPlugin *plugin)
{
  SpPluginPrivate *priv = sp_plugin_get_instance_private (plugin);

  return priv->state;
}

const char *
sp_plugin_get_last_error (SpPlugin *plugin)
{
  SpPluginPrivate *priv = sp_plugin_get_instance_private (plugin);

  return priv->last_error ? priv->last_error : "";
}

GVariant *
sp_plugin_get_details (SpPlugin *plugin)
{
  SpPluginClass *klass = SP_PLUGIN_GET_CLASS (plugin);
  GVariant *details = klass->details ? klass->details (plugin) : NULL;

  return details ? g_variant_ref_sink (details)
                 : g_variant_ref_sink (g_variant_new ("a{sv}", NULL));
}

SpNode *
sp_plugin_get_node (SpPlugin *plugin)
{
  SpPluginPrivate *priv = sp_plugin_get_instance_private (plugin);

  return priv->node;
}

GDBusConnection *
sp_plugin_get_bus (SpPlugin *plugin)
{
  SpPluginPrivate *priv = sp_plugin_get_instance_private (plugin);

  return priv->bus;
}

void
sp_plugin_report (SpPlugin *plugin, SpPluginState state, const char *error)
{
  SpPluginPrivate *priv = sp_plugin_get_instance_private (plugin);
  const char *text = state == SP_PLUGIN_FAILED ? error : NULL;

  g_return_if_fail (state != SP_PLUGIN_FAILED || error);
  if (state == priv->state && g_strcmp0 (text, priv->last_error) == 0)
    return;
  g_object_freeze_notify (G_OBJECT (plugin));
  if (g_strcmp0 (text, priv->last_error) != 0)
    {
      /* Said once until it changes: a failure repeats at every retry. */
      if (text)
        g_log_structured (G_LOG_DOMAIN, G_LOG_LEVEL_WARNING, "SPARROW_PLUGIN", priv->name,
                          "MESSAGE", "%s: %s", priv->name, text);
      g_free (priv->last_error);
      priv->last_error = g_strdup (text);
      g_object_notify_by_pspec (G_OBJECT (plugin), props[PROP_LAST_ERROR]);
    }
  if (state != priv->state)
    {
      priv->state = state;
      g_object_notify_by_pspec (G_OBJECT (plugin), props[PROP_STATE]);
    }
  g_object_thaw_notify (G_OBJECT (plugin));
}

void
sp_plugin_details_changed (SpPlugin *plugin)
{
  g_object_notify_by_pspec (G_OBJECT (plugin), props[PROP_DETAILS]);
}

void
sp_plugin_released (SpPlugin *plugin, const char *error)
{
  SpPluginPrivate *priv = sp_plugin_get_instance_private (plugin);
  g_autoptr (GTask) task = g_steal_pointer (&priv->release);

  if (!task)
    return;
  if (error)
    g_task_return_new_error (task, G_IO_ERROR, G_IO_ERROR_FAILED, "%s", error);
  else
    g_task_return_boolean (task, TRUE);
}

gboolean
sp_plugin_get_released (SpPlugin *plugin)
{
  SpPluginPrivate *priv = sp_plugin_get_instance_private (plugin);

  return priv->released;
}

gboolean
sp_plugin_get_holding (SpPlugin *plugin)
{
  SpPluginClass *klass = SP_PLUGIN_GET_CLASS (plugin);

  return klass->holding && klass->holding (plugin);
}

void
sp_plugin_release_async (SpPlugin *plugin, GAsyncReadyCallback callback, gpointer user_data)
{
  SpPluginPrivate *priv = sp_plugin_get_instance_private (plugin);

  sp_plugin_released (plugin, NULL);
  priv->release = g_task_new (plugin, NULL, callback, user_data);
  priv->released = TRUE;
  SP_PLUGIN_GET_CLASS (plugin)->release (plugin);
}

gboolean
sp_plugin_release_finish (SpPlugin *plugin, GAsyncResult *result, GError **error)
{
  return g_task_propagate_boolean (G_TASK (result), error);
}

void
sp_plugin_resume (SpPlugin *plugin)
{
  SpPluginPrivate *priv = sp_plugin_get_instance_private (plugin);

  priv->released = FALSE;
  sp_plugin_released (plugin, NULL);
  SP_PLUGIN_GET_CLASS (plugin)->resume (plugin);
}

/* ---- the registry ------------------------------------------------------- */

typedef struct
{
  const char *name;
  const char *group;        /* probed only when present; NULL: always */
  GType (*get_type) (void); /* built in; NULL: a module */
} Known;

/* Network first: on a loss, addresses go before units stop. */
static const Known known[] = {
  { "vip", "vip", NULL },
  { "timesync", "timesync", sp_timesync_plugin_get_type },
  { "leader-target", NULL, sp_leader_target_plugin_get_type },
};

typedef struct
{
  SpPlugins *owner; /* NULL once the registry is gone */
  SpPlugin *plugin;
  guint hold;
  gboolean asked;     /* the node asked for a release not started yet */
  gboolean releasing; /* a release is in flight: it frees an orphan */
} Entry;

struct _SpPlugins
{
  GPtrArray *plugins; /* SpPlugin*, in order */
  GPtrArray *entries; /* Entry*, the same order, once started */
  SpNode *node;
  gulong holder_handler;
};

static GType
load_module (const char *name, GError **error)
{
  const char *dir = g_getenv ("SPARROW_PLUGIN_DIR");
  g_autofree char *file = g_strdup_printf ("libsparrow-plugin-%s.so", name);
  g_autofree char *path = g_build_filename (dir && *dir ? dir : SP_PLUGIN_DIR, file, NULL);
  GModule *module = g_module_open (path, G_MODULE_BIND_LAZY | G_MODULE_BIND_LOCAL);
  GType (*get_type) (void) = NULL;

  if (!module)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED, "plugin %s: cannot load %s: %s", name,
                   path, g_module_error ());
      return G_TYPE_INVALID;
    }
  if (!g_module_symbol (module, "sp_plugin_module_get_type", (gpointer *)&get_type) || !get_type)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED,
                   "plugin %s: %s has no sp_plugin_module_get_type()", name, path);
      g_module_close (module);
      return G_TYPE_INVALID;
    }
  /* Its type stays registered: so does its code. */
  g_module_make_resident (module);
  return get_type ();
}

SpPlugins *
sp_plugins_probe (SpConfig *config, GPtrArray *warnings, GError **error)
{
  g_autoptr (SpPlugins) plugins = g_new0 (SpPlugins, 1);

  plugins->plugins = g_ptr_array_new_with_free_func (g_object_unref);
  plugins->entries = g_ptr_array_new ();
  for (guint i = 0; i < G_N_ELEMENTS (known); i++)
    {
      GType type;
      g_autoptr (SpPlugin) plugin = NULL;

      if (known[i].group && !sp_config_has_group (config, known[i].group))
        continue;
      type = known[i].get_type ? known[i].get_type () : load_module (known[i].name, error);
      if (type == G_TYPE_INVALID)
        return NULL;
      if (!g_type_is_a (type, SP_TYPE_PLUGIN))
        {
          g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED, "plugin %s: %s is not an SpPlugin",
                       known[i].name, g_type_name (type));
          return NULL;
        }
      plugin = g_object_new (type, "name", known[i].name, NULL);
      if (!SP_PLUGIN_GET_CLASS (plugin)->probe (plugin, config, warnings, error))
        {
          if (error && *error)
            return NULL;
          continue;
        }
      g_ptr_array_add (plugins->plugins, g_steal_pointer (&plugin));
    }
  if (warnings)
    sp_config_warn_unclaimed (config, warnings);
  return g_steal_pointer (&plugins);
}

GPtrArray *
sp_plugins_get (SpPlugins *plugins)
{
  return plugins->plugins;
}

static void
on_holder (SpNode *node, GParamSpec *pspec, gpointer user_data)
{
  SpPlugins *plugins = user_data;
  gboolean holder = sp_node_get_holder (node);

  for (guint i = 0; i < plugins->plugins->len; i++)
    {
      SpPlugin *plugin = plugins->plugins->pdata[i];

      SP_PLUGIN_GET_CLASS (plugin)->hold (plugin, holder);
    }
}

static void on_released (GObject *source, GAsyncResult *result, gpointer user_data);

/* A planned handover lets go in the reverse order, one plugin at a time:
 * the leader-only units stop while the addresses still lead clients to
 * them, and the addresses go last, just before the transfer. */
static void
release_next (SpPlugins *plugins)
{
  for (guint i = plugins->entries->len; i-- > 0;)
    {
      Entry *e = plugins->entries->pdata[i];

      if (e->releasing)
        return;
      if (e->asked)
        {
          e->asked = FALSE;
          e->releasing = TRUE;
          sp_plugin_release_async (e->plugin, on_released, e);
          return;
        }
    }
}

static void
on_released (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Entry *e = user_data;
  g_autoptr (GError) error = NULL;

  e->releasing = FALSE;
  if (!sp_plugin_release_finish (SP_PLUGIN (source), result, &error))
    g_prefix_error (&error, "%s: ", sp_plugin_get_name (e->plugin));
  if (!e->owner)
    {
      g_free (e);
      return;
    }
  release_next (e->owner);
  sp_node_handover_failed (e->owner->node, e->hold, error ? error->message : NULL);
}

/* The node asks the holds in the order they were added: the last plugin
 * first (see sp_plugins_start). */
static void
on_release (SpNode *node, gpointer user_data)
{
  Entry *e = user_data;

  e->asked = TRUE;
  release_next (e->owner);
}

static void
on_resume (SpNode *node, gpointer user_data)
{
  Entry *e = user_data;

  e->asked = FALSE;
  sp_plugin_resume (e->plugin);
}

gboolean
sp_plugins_holding (SpPlugins *plugins)
{
  for (guint i = 0; i < plugins->entries->len; i++)
    if (sp_plugin_get_holding (((Entry *)plugins->entries->pdata[i])->plugin))
      return TRUE;
  return FALSE;
}

void
sp_plugins_start (SpPlugins *plugins, SpNode *node, GDBusConnection *bus)
{
  plugins->node = g_object_ref (node);
  for (guint i = 0; i < plugins->plugins->len; i++)
    {
      SpPlugin *plugin = plugins->plugins->pdata[i];
      SpPluginPrivate *priv = sp_plugin_get_instance_private (plugin);
      Entry *e = g_new0 (Entry, 1);

      priv->node = g_object_ref (node);
      priv->bus = g_object_ref (bus);
      e->owner = plugins;
      e->plugin = plugin;
      g_ptr_array_add (plugins->entries, e);
      SP_PLUGIN_GET_CLASS (plugin)->start (plugin);
    }
  for (guint i = plugins->entries->len; i-- > 0;)
    {
      Entry *e = plugins->entries->pdata[i];

      e->hold = sp_node_add_handover_hold (node, on_release, on_resume, e);
    }
  plugins->holder_handler
      = g_signal_connect (node, "notify::holder", G_CALLBACK (on_holder), plugins);
  if (sp_node_get_holder (node))
    on_holder (node, NULL, plugins);
}

void
sp_plugins_free (SpPlugins *plugins)
{
  if (!plugins)
    return;
  if (plugins->node)
    g_clear_signal_handler (&plugins->holder_handler, plugins->node);
  for (guint i = 0; i < plugins->entries->len; i++)
    {
      Entry *e = plugins->entries->pdata[i];

      sp_node_remove_handover_hold (plugins->node, e->hold);
      SP_PLUGIN_GET_CLASS (e->plugin)->stop (e->plugin);
      if (e->releasing)
        e->owner = NULL;
      else
        g_free (e);
    }
  g_ptr_array_unref (plugins->entries);
  g_ptr_array_unref (plugins->plugins);
  g_clear_object (&plugins->node);
  g_free (plugins);
}
