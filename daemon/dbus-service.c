#include "dbus-service.h"

#include "authority.h"
#include "sp-dbus-generated.h"

/* After a role change, members are shown again once heartbeats answered. */
#define MEMBERS_SOON_MS 200

struct _SpDBusService
{
  SpNode *node;
  SpDBusManager *manager;
  SpDBusStore *store;
  GPtrArray *bindings;
  gulong members_handler;
  gulong role_handler;
  guint members_soon;
  gulong store_handler;
  guint members_refresh;
};

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

static void
on_members_changed (SpNode *node, gpointer user_data)
{
  refresh_members (user_data);
}

static gboolean
on_members_soon (gpointer user_data)
{
  SpDBusService *service = user_data;

  service->members_soon = 0;
  refresh_members (service);
  return G_SOURCE_REMOVE;
}

static void
on_role_changed (SpNode *node, GParamSpec *pspec, gpointer user_data)
{
  SpDBusService *service = user_data;

  /* A new leader learns reachability and match indexes from the first
   * round of heartbeats: show them then rather than up to a second later. */
  refresh_members (service);
  g_clear_handle_id (&service->members_soon, g_source_remove);
  service->members_soon = g_timeout_add (MEMBERS_SOON_MS, on_members_soon, service);
}

static gboolean
on_members_refresh (gpointer user_data)
{
  /* Reachability and match indexes move without a membership change. */
  refresh_members (user_data);
  return G_SOURCE_CONTINUE;
}

static void
on_store_changed (SpNode *node, const char *key, const char *value, guint64 revision,
                  gpointer user_data)
{
  SpDBusService *service = user_data;

  sp_dbus_store_emit_changed (service->store, key, value ? value : "", value == NULL, revision);
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
  Pending *p = g_new0 (Pending, 1);

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

/* ---- Store methods ------------------------------------------------------ */

static void
on_write_done (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GDBusMethodInvocation) invocation = user_data;
  GError *error = NULL;
  guint64 revision;

  if (!sp_node_write_finish (SP_NODE (source), result, &revision, &error))
    g_dbus_method_invocation_take_error (invocation, error);
  else
    g_dbus_method_invocation_return_value (invocation, g_variant_new ("(t)", revision));
}

static gboolean
handle_get (SpDBusStore *store, GDBusMethodInvocation *invocation, const char *key, gboolean stale,
            SpDBusService *service)
{
  g_autofree char *value = NULL;
  GError *error = NULL;
  guint64 revision;

  if (!sp_node_get (service->node, key, stale, &value, &revision, &error))
    g_dbus_method_invocation_take_error (invocation, error);
  else
    sp_dbus_store_complete_get (store, invocation, value, revision);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

static void
run_set (SpNode *node, GDBusMethodInvocation *invocation)
{
  const char *key, *value;

  g_variant_get (g_dbus_method_invocation_get_parameters (invocation), "(&s&s)", &key, &value);
  sp_node_set_async (node, key, value, on_write_done, g_object_ref (invocation));
}

static gboolean
handle_set (SpDBusStore *store, GDBusMethodInvocation *invocation, const char *key,
            const char *value, SpDBusService *service)
{
  return authorize (service, invocation, SP_ACTION_WRITE, run_set);
}

static void
run_delete (SpNode *node, GDBusMethodInvocation *invocation)
{
  const char *key;

  g_variant_get (g_dbus_method_invocation_get_parameters (invocation), "(&s)", &key);
  sp_node_delete_async (node, key, on_write_done, g_object_ref (invocation));
}

static gboolean
handle_delete (SpDBusStore *store, GDBusMethodInvocation *invocation, const char *key,
               SpDBusService *service)
{
  return authorize (service, invocation, SP_ACTION_WRITE, run_delete);
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

static gboolean
handle_cas (SpDBusStore *store, GDBusMethodInvocation *invocation, const char *key,
            guint64 expected, const char *value, SpDBusService *service)
{
  return authorize (service, invocation, SP_ACTION_WRITE, run_cas);
}

static gboolean
handle_list (SpDBusStore *store, GDBusMethodInvocation *invocation, const char *prefix,
             gboolean stale, SpDBusService *service)
{
  g_autoptr (GPtrArray) keys = NULL;
  GError *error = NULL;
  GVariantBuilder b;

  keys = sp_node_list (service->node, prefix, stale, &error);
  if (!keys)
    {
      g_dbus_method_invocation_take_error (invocation, error);
      return G_DBUS_METHOD_INVOCATION_HANDLED;
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
  sp_dbus_store_complete_list (store, invocation, g_variant_builder_end (&b));
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

/* ---- lifecycle ---------------------------------------------------------- */

static void
bind (SpDBusService *service, const char *from, const char *to)
{
  g_ptr_array_add (service->bindings, g_object_bind_property (service->node, from, service->manager,
                                                              to, G_BINDING_SYNC_CREATE));
}

SpDBusService *
sp_dbus_service_new (SpNode *node)
{
  SpDBusService *service = g_new0 (SpDBusService, 1);

  register_errors ();
  service->node = g_object_ref (node);
  service->manager = sp_dbus_manager_skeleton_new ();
  service->store = sp_dbus_store_skeleton_new ();
  service->bindings = g_ptr_array_new_with_free_func ((GDestroyNotify)g_binding_unbind);

  bind (service, "name", "node-name");
  bind (service, "role", "role");
  bind (service, "term", "term");
  bind (service, "leader", "leader");
  bind (service, "leader-address", "leader-address");
  bind (service, "commit-index", "commit-index");
  bind (service, "lease-valid", "lease-valid");
  refresh_members (service);

  service->members_handler
      = g_signal_connect (node, "members-changed", G_CALLBACK (on_members_changed), service);
  service->store_handler
      = g_signal_connect (node, "store-changed", G_CALLBACK (on_store_changed), service);
  service->role_handler
      = g_signal_connect (node, "notify::role", G_CALLBACK (on_role_changed), service);
  service->members_refresh = g_timeout_add_seconds (1, on_members_refresh, service);

  g_signal_connect (service->manager, "handle-transfer-leadership", G_CALLBACK (handle_transfer),
                    service);
  g_signal_connect (service->manager, "handle-add-member", G_CALLBACK (handle_add_member), service);
  g_signal_connect (service->manager, "handle-remove-member", G_CALLBACK (handle_remove_member),
                    service);
  g_signal_connect (service->manager, "handle-promote-member", G_CALLBACK (handle_promote_member),
                    service);
  g_signal_connect (service->store, "handle-get", G_CALLBACK (handle_get), service);
  g_signal_connect (service->store, "handle-set", G_CALLBACK (handle_set), service);
  g_signal_connect (service->store, "handle-delete", G_CALLBACK (handle_delete), service);
  g_signal_connect (service->store, "handle-compare-and-swap", G_CALLBACK (handle_cas), service);
  g_signal_connect (service->store, "handle-list", G_CALLBACK (handle_list), service);
  return service;
}

gboolean
sp_dbus_service_export (SpDBusService *service, GDBusConnection *connection, GError **error)
{
  return g_dbus_interface_skeleton_export (G_DBUS_INTERFACE_SKELETON (service->manager), connection,
                                           SP_DBUS_PATH, error)
         && g_dbus_interface_skeleton_export (G_DBUS_INTERFACE_SKELETON (service->store),
                                              connection, SP_DBUS_PATH, error);
}

void
sp_dbus_service_free (SpDBusService *service)
{
  if (!service)
    return;
  g_clear_handle_id (&service->members_refresh, g_source_remove);
  g_clear_signal_handler (&service->members_handler, service->node);
  g_clear_signal_handler (&service->store_handler, service->node);
  g_clear_signal_handler (&service->role_handler, service->node);
  g_clear_handle_id (&service->members_soon, g_source_remove);
  g_ptr_array_unref (service->bindings);
  /* Never exported when the bus was unreachable. */
  if (g_dbus_interface_skeleton_get_connection (G_DBUS_INTERFACE_SKELETON (service->manager)))
    g_dbus_interface_skeleton_unexport (G_DBUS_INTERFACE_SKELETON (service->manager));
  if (g_dbus_interface_skeleton_get_connection (G_DBUS_INTERFACE_SKELETON (service->store)))
    g_dbus_interface_skeleton_unexport (G_DBUS_INTERFACE_SKELETON (service->store));
  g_object_unref (service->manager);
  g_object_unref (service->store);
  g_object_unref (service->node);
  g_free (service);
}
