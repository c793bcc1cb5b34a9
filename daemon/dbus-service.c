#include "dbus-service.h"

#include "authority.h"
#include "sp-dbus-generated.h"

#define STORE_IFACE "org.sparrow.cluster1.Store"

/* Members moves with every write on a leader (match indexes): shown at
 * most this often, the first change after a quiet spell at once. */
#define MEMBERS_MIN_INTERVAL_MS 500

/* The exported Manager: its properties follow the node's (bindings), and
 * every read of one over the bus (Get, GetAll) first brings the node up to
 * date, so that the answer reflects now even when nothing woke the node
 * since it last published: right after the process was stopped for a
 * while, or as its lease runs out. */
G_DECLARE_FINAL_TYPE (SpFreshManager, sp_fresh_manager, SP, FRESH_MANAGER, SpDBusManagerSkeleton)

struct _SpFreshManager
{
  SpDBusManagerSkeleton parent_instance;
  SpNode *node; /* the service holds the reference */
};

G_DEFINE_TYPE (SpFreshManager, sp_fresh_manager, SP_DBUS_TYPE_MANAGER_SKELETON)

static GDBusInterfaceVTable fresh_vtable;
static const GDBusInterfaceVTable *generated_vtable;

static GVariant *
fresh_get_property (GDBusConnection *connection, const char *sender, const char *path,
                    const char *iface, const char *property, GError **error, gpointer user_data)
{
  sp_node_refresh (SP_FRESH_MANAGER (user_data)->node);
  return generated_vtable->get_property (connection, sender, path, iface, property, error,
                                         user_data);
}

static GDBusInterfaceVTable *
fresh_get_vtable (GDBusInterfaceSkeleton *skeleton)
{
  if (!generated_vtable)
    {
      generated_vtable
          = G_DBUS_INTERFACE_SKELETON_CLASS (sp_fresh_manager_parent_class)->get_vtable (skeleton);
      fresh_vtable = *generated_vtable;
      fresh_vtable.get_property = fresh_get_property;
    }
  return &fresh_vtable;
}

static void
sp_fresh_manager_class_init (SpFreshManagerClass *klass)
{
  G_DBUS_INTERFACE_SKELETON_CLASS (klass)->get_vtable = fresh_get_vtable;
}

static void
sp_fresh_manager_init (SpFreshManager *manager)
{
}

struct _SpDBusService
{
  SpNode *node;
  SpDBusManager *manager;
  GDBusConnection *store_bus; /* where the Store object is registered */
  guint store_id;
  GPtrArray *bindings;
  gulong members_handler;
  gulong store_handler;
  guint members_later;      /* a refresh waiting for the interval */
  gint64 members_refreshed; /* monotonic */
  GPtrArray *kept_types;
  GPtrArray *plugins; /* SpDBusPlugin skeletons, one per plugin */
};

/* GLib 2.74 frees the layout of a container GVariant type with its last
 * value and builds it again for the next: for the bodies of the messages
 * every write sends or receives, that is a good part of what GDBus spends
 * on them.  A value of each keeps them built. */
static GPtrArray *
keep_types (void)
{
  static const char *const types[] = {
    "(ss)",       "(sst)", "(s)",  "(t)",   "(a(ssbt))", "a(ssbt)", "(ssbt)",
    "(sa{sv}as)", "a{sv}", "{sv}", "as",    "(sb)",      "(st)",    "(sss)",
    "(u)",        "a(yv)", "(yv)", "(ssb)", "a(ssbbt)",  "(ssbbt)",
  };
  GPtrArray *kept = g_ptr_array_new_with_free_func ((GDestroyNotify)g_variant_unref);

  for (gsize i = 0; i < G_N_ELEMENTS (types); i++)
    g_ptr_array_add (kept, g_variant_ref_sink (g_variant_new_from_data (
                               G_VARIANT_TYPE (types[i]), NULL, 0, FALSE, NULL, NULL)));
  return kept;
}

static const GDBusErrorEntry error_entries[] = {
  { SP_NODE_ERROR_NOT_LEADER, "org.sparrow.cluster1.Error.NotLeader" },
  { SP_NODE_ERROR_NO_QUORUM, "org.sparrow.cluster1.Error.NoQuorum" },
  { SP_NODE_ERROR_INVALID_ARGUMENT, "org.sparrow.cluster1.Error.InvalidArgument" },
  { SP_NODE_ERROR_CONFLICT, "org.sparrow.cluster1.Error.Conflict" },
  { SP_NODE_ERROR_NOT_FOUND, "org.sparrow.cluster1.Error.NotFound" },
  { SP_NODE_ERROR_BUSY, "org.sparrow.cluster1.Error.Busy" },
  { SP_NODE_ERROR_STOPPED, "org.sparrow.cluster1.Error.Stopped" },
};

static void
register_errors (void)
{
  static gsize quark = 0;

  g_dbus_error_register_error_domain ("sp-node-error-quark", &quark, error_entries,
                                      G_N_ELEMENTS (error_entries));
}

static void
refresh_members (SpDBusService *service)
{
  g_autoptr (GPtrArray) members = sp_node_get_members (service->node);
  GVariantBuilder b;
  GVariant *current = sp_dbus_manager_get_members (service->manager);
  g_autoptr (GVariant) v = NULL;

  g_variant_builder_init (&b, G_VARIANT_TYPE ("a(ssbbt)"));
  for (guint i = 0; i < members->len; i++)
    {
      SpNodeMember *m = g_ptr_array_index (members, i);

      g_variant_builder_add (&b, "(ssbbt)", m->name, m->address, m->voter, m->reachable, m->match);
    }
  v = g_variant_ref_sink (g_variant_builder_end (&b));
  /* Only a real change emits PropertiesChanged. */
  if (!current || !g_variant_equal (current, v))
    sp_dbus_manager_set_members (service->manager, v);
}

static gboolean
on_members_later (gpointer user_data)
{
  SpDBusService *service = user_data;

  service->members_later = 0;
  service->members_refreshed = g_get_monotonic_time ();
  refresh_members (service);
  return G_SOURCE_REMOVE;
}

static void
on_members_changed (SpNode *node, gpointer user_data)
{
  SpDBusService *service = user_data;
  gint64 wait
      = service->members_refreshed + MEMBERS_MIN_INTERVAL_MS * 1000 - g_get_monotonic_time ();

  if (service->members_later)
    return;
  if (wait <= 0)
    on_members_later (service);
  else
    service->members_later = g_timeout_add ((guint)(wait / 1000) + 1, on_members_later, service);
}

static void
on_store_changed (SpNode *node, GVariant *changes, gpointer user_data)
{
  SpDBusService *service = user_data;

  if (service->store_bus)
    g_dbus_connection_emit_signal (service->store_bus, NULL, SP_DBUS_PATH, STORE_IFACE, "Changed",
                                   g_variant_new_tuple (&changes, 1), NULL);
}

/* ---- Manager methods ---------------------------------------------------- */

static void
on_admin_done (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GDBusMethodInvocation) invocation = user_data;
  GError *error = NULL;

  if (!sp_node_admin_finish (SP_NODE (source), result, &error))
    g_dbus_method_invocation_take_error (invocation, error);
  else
    g_dbus_method_invocation_return_value (invocation, NULL);
}

/* Changes run once the caller is authorized; the node answers later. */
typedef void (*Run) (SpNode *node, GDBusMethodInvocation *invocation);

typedef struct
{
  SpNode *node;
  GDBusMethodInvocation *invocation;
  Run run;
} Pending;

static void
on_authorized (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Pending *p = user_data;
  GError *error = NULL;

  if (sp_authority_check_finish (result, &error))
    p->run (p->node, p->invocation);
  else
    g_dbus_method_invocation_take_error (p->invocation, error);
  g_object_unref (p->node);
  g_free (p);
}

static gboolean
authorize (SpDBusService *service, GDBusMethodInvocation *invocation, const char *action, Run run)
{
  Pending *p;

  if (sp_authority_known_root (invocation))
    {
      run (service->node, invocation);
      return G_DBUS_METHOD_INVOCATION_HANDLED;
    }
  p = g_new0 (Pending, 1);

  p->node = g_object_ref (service->node);
  p->invocation = invocation;
  p->run = run;
  sp_authority_check_async (invocation, action, on_authorized, p);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

static void
run_transfer (SpNode *node, GDBusMethodInvocation *invocation)
{
  const char *target;

  g_variant_get (g_dbus_method_invocation_get_parameters (invocation), "(&s)", &target);
  sp_node_transfer_async (node, target, on_admin_done, g_object_ref (invocation));
}

static gboolean
handle_transfer (SpDBusManager *manager, GDBusMethodInvocation *invocation, const char *target,
                 SpDBusService *service)
{
  return authorize (service, invocation, SP_ACTION_TRANSFER, run_transfer);
}

static void
run_add_member (SpNode *node, GDBusMethodInvocation *invocation)
{
  const char *name, *address;
  gboolean voter;

  g_variant_get (g_dbus_method_invocation_get_parameters (invocation), "(&s&sb)", &name, &address,
                 &voter);
  sp_node_add_member_async (node, name, address, voter, on_admin_done, g_object_ref (invocation));
}

static gboolean
handle_add_member (SpDBusManager *manager, GDBusMethodInvocation *invocation, const char *name,
                   const char *address, gboolean voter, SpDBusService *service)
{
  return authorize (service, invocation, SP_ACTION_MEMBERS, run_add_member);
}

static void
run_remove_member (SpNode *node, GDBusMethodInvocation *invocation)
{
  const char *name;

  g_variant_get (g_dbus_method_invocation_get_parameters (invocation), "(&s)", &name);
  sp_node_remove_member_async (node, name, on_admin_done, g_object_ref (invocation));
}

static gboolean
handle_remove_member (SpDBusManager *manager, GDBusMethodInvocation *invocation, const char *name,
                      SpDBusService *service)
{
  return authorize (service, invocation, SP_ACTION_MEMBERS, run_remove_member);
}

static void
run_promote_member (SpNode *node, GDBusMethodInvocation *invocation)
{
  const char *name;

  g_variant_get (g_dbus_method_invocation_get_parameters (invocation), "(&s)", &name);
  sp_node_promote_member_async (node, name, on_admin_done, g_object_ref (invocation));
}

static gboolean
handle_promote_member (SpDBusManager *manager, GDBusMethodInvocation *invocation, const char *name,
                       SpDBusService *service)
{
  return authorize (service, invocation, SP_ACTION_MEMBERS, run_promote_member);
}

static void
run_set_member_address (SpNode *node, GDBusMethodInvocation *invocation)
{
  const char *name, *address;

  g_variant_get (g_dbus_method_invocation_get_parameters (invocation), "(&s&s)", &name, &address);
  sp_node_set_member_address_async (node, name, address, on_admin_done, g_object_ref (invocation));
}

static gboolean
handle_set_member_address (SpDBusManager *manager, GDBusMethodInvocation *invocation,
                           const char *name, const char *address, SpDBusService *service)
{
  return authorize (service, invocation, SP_ACTION_MEMBERS, run_set_member_address);
}

/* ---- Store methods ------------------------------------------------------ */

static void
on_write_done (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GDBusMethodInvocation) invocation = user_data;
  GError *error = NULL;
  guint64 revision;

  if (!sp_node_write_finish (SP_NODE (source), result, &revision, &error))
    {
      g_dbus_method_invocation_take_error (invocation, error);
    }
  else
    {
      GVariant *reply = g_variant_new_uint64 (revision);

      g_dbus_method_invocation_return_value (invocation, g_variant_new_tuple (&reply, 1));
    }
}

static void
store_get (SpDBusService *service, GDBusMethodInvocation *invocation, GVariant *params)
{
  g_autofree char *value = NULL;
  GError *error = NULL;
  const char *key;
  gboolean stale;
  guint64 revision;

  g_variant_get (params, "(&sb)", &key, &stale);
  if (!sp_node_get (service->node, key, stale, &value, &revision, &error))
    g_dbus_method_invocation_take_error (invocation, error);
  else
    g_dbus_method_invocation_return_value (invocation, g_variant_new ("(st)", value, revision));
}

static void
run_set (SpNode *node, GDBusMethodInvocation *invocation)
{
  GVariant *params = g_dbus_method_invocation_get_parameters (invocation);
  g_autoptr (GVariant) key = g_variant_get_child_value (params, 0);
  g_autoptr (GVariant) value = g_variant_get_child_value (params, 1);

  /* the commonest write: no format string to parse */
  sp_node_set_async (node, g_variant_get_string (key, NULL), g_variant_get_string (value, NULL),
                     on_write_done, g_object_ref (invocation));
}

static void
run_delete (SpNode *node, GDBusMethodInvocation *invocation)
{
  const char *key;

  g_variant_get (g_dbus_method_invocation_get_parameters (invocation), "(&s)", &key);
  sp_node_delete_async (node, key, on_write_done, g_object_ref (invocation));
}

static void
run_cas (SpNode *node, GDBusMethodInvocation *invocation)
{
  const char *key, *value;
  guint64 expected;

  g_variant_get (g_dbus_method_invocation_get_parameters (invocation), "(&st&s)", &key, &expected,
                 &value);
  sp_node_cas_async (node, key, expected, value, on_write_done, g_object_ref (invocation));
}

static void
store_list (SpDBusService *service, GDBusMethodInvocation *invocation, GVariant *params)
{
  g_autoptr (GPtrArray) keys = NULL;
  GError *error = NULL;
  GVariantBuilder b;
  const char *prefix;
  gboolean stale;

  g_variant_get (params, "(&sb)", &prefix, &stale);
  keys = sp_node_list (service->node, prefix, stale, &error);
  if (!keys)
    {
      g_dbus_method_invocation_take_error (invocation, error);
      return;
    }
  g_variant_builder_init (&b, G_VARIANT_TYPE ("a(sst)"));
  for (guint i = 0; i < keys->len; i++)
    {
      g_autofree char *value = NULL;
      guint64 revision;

      /* The read was checked above; the same local state answers. */
      if (sp_node_get (service->node, keys->pdata[i], TRUE, &value, &revision, NULL))
        g_variant_builder_add (&b, "(sst)", keys->pdata[i], value, revision);
    }
  g_dbus_method_invocation_return_value (invocation,
                                         g_variant_new ("(@a(sst))", g_variant_builder_end (&b)));
}

/* The Store has methods and a signal, no properties: registered with the
 * generated interface description (GDBus checks each call's arguments
 * against it), without a skeleton turning every call into GValues and a
 * GObject signal, since every write comes this way. */
static void
on_store_call (GDBusConnection *bus, const char *sender, const char *path, const char *iface,
               const char *method, GVariant *params, GDBusMethodInvocation *invocation,
               gpointer user_data)
{
  SpDBusService *service = user_data;

  if (g_str_equal (method, "Set"))
    authorize (service, invocation, SP_ACTION_WRITE, run_set);
  else if (g_str_equal (method, "Get"))
    store_get (service, invocation, params);
  else if (g_str_equal (method, "Delete"))
    authorize (service, invocation, SP_ACTION_WRITE, run_delete);
  else if (g_str_equal (method, "CompareAndSwap"))
    authorize (service, invocation, SP_ACTION_WRITE, run_cas);
  else if (g_str_equal (method, "List"))
    store_list (service, invocation, params);
  else
    g_dbus_method_invocation_return_error (invocation, G_DBUS_ERROR, G_DBUS_ERROR_UNKNOWN_METHOD,
                                           "no method %s in %s", method, iface);
}

static const GDBusInterfaceVTable store_vtable = { on_store_call, NULL, NULL, { NULL } };

/* ---- lifecycle ---------------------------------------------------------- */

static void
bind (SpDBusService *service, const char *from, const char *to)
{
  g_ptr_array_add (service->bindings, g_object_bind_property (service->node, from, service->manager,
                                                              to, G_BINDING_SYNC_CREATE));
}

static gboolean
state_to_string (GBinding *binding, const GValue *from, GValue *to, gpointer user_data)
{
  g_value_set_string (to, sp_plugin_state_to_string (g_value_get_int (from)));
  return TRUE;
}

/* Plugin names are ours: letters, digits and '-', which a path spells '_'. */
static char *
plugin_path (SpPlugin *plugin)
{
  g_autofree char *element = g_strdelimit (g_strdup (sp_plugin_get_name (plugin)), "-", '_');

  return g_strdup_printf ("%s/plugin/%s", SP_DBUS_PATH, element);
}

/* A skeleton per plugin, its properties bound to the plugin's. */
static void
add_plugins (SpDBusService *service, GPtrArray *plugins)
{
  g_autoptr (GPtrArray) paths = g_ptr_array_new_with_free_func (g_free);

  service->plugins = g_ptr_array_new_with_free_func (g_object_unref);
  for (guint i = 0; i < plugins->len; i++)
    {
      SpPlugin *plugin = plugins->pdata[i];
      SpDBusPlugin *skeleton = sp_dbus_plugin_skeleton_new ();
      GBindingFlags flags = G_BINDING_SYNC_CREATE;

      g_ptr_array_add (service->bindings,
                       g_object_bind_property (plugin, "name", skeleton, "name", flags));
      g_ptr_array_add (service->bindings,
                       g_object_bind_property_full (plugin, "state", skeleton, "state", flags,
                                                    state_to_string, NULL, NULL, NULL));
      g_ptr_array_add (service->bindings, g_object_bind_property (plugin, "last-error", skeleton,
                                                                  "last-error", flags));
      g_ptr_array_add (service->bindings,
                       g_object_bind_property (plugin, "details", skeleton, "details", flags));
      g_ptr_array_add (service->plugins, skeleton);
      g_ptr_array_add (paths, plugin_path (plugin));
    }
  g_ptr_array_add (paths, NULL);
  sp_dbus_manager_set_plugins (service->manager, (const char *const *)paths->pdata);
}

SpDBusService *
sp_dbus_service_new (SpNode *node, GPtrArray *plugins)
{
  SpDBusService *service = g_new0 (SpDBusService, 1);

  register_errors ();
  service->kept_types = keep_types ();
  service->node = g_object_ref (node);
  service->manager = g_object_new (sp_fresh_manager_get_type (), NULL);
  SP_FRESH_MANAGER (service->manager)->node = node;
  service->bindings = g_ptr_array_new_with_free_func ((GDestroyNotify)g_binding_unbind);

  bind (service, "name", "node-name");
  bind (service, "role", "role");
  bind (service, "term", "term");
  bind (service, "leader", "leader");
  bind (service, "leader-address", "leader-address");
  bind (service, "commit-index", "commit-index");
  bind (service, "lease-valid", "lease-valid");
  bind (service, "holder", "holder");
  bind (service, "fence-keeper", "fence-keeper");
  bind (service, "refused-entries", "refused-entries");
  refresh_members (service);
  add_plugins (service, plugins);

  service->members_handler
      = g_signal_connect (node, "members-changed", G_CALLBACK (on_members_changed), service);
  service->store_handler
      = g_signal_connect (node, "store-changed", G_CALLBACK (on_store_changed), service);

  g_signal_connect (service->manager, "handle-transfer-leadership", G_CALLBACK (handle_transfer),
                    service);
  g_signal_connect (service->manager, "handle-add-member", G_CALLBACK (handle_add_member), service);
  g_signal_connect (service->manager, "handle-remove-member", G_CALLBACK (handle_remove_member),
                    service);
  g_signal_connect (service->manager, "handle-promote-member", G_CALLBACK (handle_promote_member),
                    service);
  g_signal_connect (service->manager, "handle-set-member-address",
                    G_CALLBACK (handle_set_member_address), service);
  return service;
}

gboolean
sp_dbus_service_export (SpDBusService *service, GDBusConnection *connection, GError **error)
{
  if (!g_dbus_interface_skeleton_export (G_DBUS_INTERFACE_SKELETON (service->manager), connection,
                                         SP_DBUS_PATH, error))
    return FALSE;
  service->store_id = g_dbus_connection_register_object (connection, SP_DBUS_PATH,
                                                         sp_dbus_store_interface_info (),
                                                         &store_vtable, service, NULL, error);
  if (!service->store_id)
    return FALSE;
  service->store_bus = g_object_ref (connection);
  for (guint i = 0; i < service->plugins->len; i++)
    {
      const char *const *paths = sp_dbus_manager_get_plugins (service->manager);

      if (!g_dbus_interface_skeleton_export (service->plugins->pdata[i], connection, paths[i],
                                             error))
        return FALSE;
    }
  return TRUE;
}

static void
on_flushed (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  GError *error = NULL;

  if (g_dbus_connection_flush_finish (G_DBUS_CONNECTION (source), result, &error))
    g_task_return_boolean (task, TRUE);
  else
    g_task_return_error (task, error);
}

void
sp_dbus_service_flush_async (SpDBusService *service, GAsyncReadyCallback callback,
                             gpointer user_data)
{
  g_autoptr (GTask) task = g_task_new (NULL, NULL, callback, user_data);

  if (!service->store_bus)
    {
      g_task_return_boolean (task, TRUE);
      return;
    }
  /* PropertiesChanged waits for an idle pass otherwise. */
  g_dbus_interface_skeleton_flush (G_DBUS_INTERFACE_SKELETON (service->manager));
  for (guint i = 0; i < service->plugins->len; i++)
    g_dbus_interface_skeleton_flush (service->plugins->pdata[i]);
  g_dbus_connection_flush (service->store_bus, NULL, on_flushed, g_steal_pointer (&task));
}

gboolean
sp_dbus_service_flush_finish (GAsyncResult *result, GError **error)
{
  return g_task_propagate_boolean (G_TASK (result), error);
}

void
sp_dbus_service_free (SpDBusService *service)
{
  if (!service)
    return;
  g_clear_signal_handler (&service->members_handler, service->node);
  g_clear_signal_handler (&service->store_handler, service->node);
  g_clear_handle_id (&service->members_later, g_source_remove);
  g_ptr_array_unref (service->bindings);
  /* Never exported when the bus was unreachable. */
  if (g_dbus_interface_skeleton_get_connection (G_DBUS_INTERFACE_SKELETON (service->manager)))
    g_dbus_interface_skeleton_unexport (G_DBUS_INTERFACE_SKELETON (service->manager));
  if (service->store_id)
    g_dbus_connection_unregister_object (service->store_bus, service->store_id);
  for (guint i = 0; i < service->plugins->len; i++)
    if (g_dbus_interface_skeleton_get_connection (service->plugins->pdata[i]))
      g_dbus_interface_skeleton_unexport (service->plugins->pdata[i]);
  g_ptr_array_unref (service->plugins);
  g_clear_object (&service->store_bus);
  g_object_unref (service->manager);
  g_object_unref (service->node);
  g_ptr_array_unref (service->kept_types);
  g_free (service);
}
