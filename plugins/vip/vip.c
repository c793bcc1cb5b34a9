/* The vip plugin: the service addresses follow the node's holder property.
 *
 * Per interface, one operation at a time (its GCancellable is op):
 *   add   probe the missing addresses (announce.h), add the others to the
 *         device's applied connection (nm-address.h), announce them;
 *   drop  remove them from the kernel at once (rtnl.h: the network is safe
 *         before hold() returns), then from the applied connection.
 * A drop cancels an add in flight; the version id of the applied
 * connection keeps a cancelled reapply from undoing a later one.  While
 * holding, a change of the device (re-activation, an address removed)
 * that leaves an address missing starts an add again.  Failures are
 * reported on the plugin's object and retried; with on-failure = transfer
 * the leader also hands leadership on (at most every TRANSFER_BACKOFF_S). */

#include <gmodule.h>
#include <NetworkManager.h>

#include "announce.h"
#include "nm-address.h"
#include "plugin.h"
#include "rtnl.h"
#include "vip-config.h"

#define RETRY_MS           2000
#define TRANSFER_BACKOFF_S 5

#define SP_TYPE_VIP_PLUGIN (sp_vip_plugin_get_type ())
G_DECLARE_FINAL_TYPE (SpVipPlugin, sp_vip_plugin, SP, VIP_PLUGIN, SpPlugin)

G_MODULE_EXPORT GType sp_plugin_module_get_type (void);

typedef struct
{
  SpVipPlugin *self;
  char *ifname;
  GPtrArray *addresses; /* SpVipAddress*, borrowed from the config */
  NMDevice *device;
  NMIPConfig *ipconfig[2]; /* IPv4, IPv6: watched for their addresses */
  GCancellable *op;        /* the operation in flight, NULL when idle */
  gboolean adding;         /* what op does */
  gboolean again;          /* look again once op is over */
  gboolean missing;        /* some address was missing when the add began */
  gboolean nm_may_have;    /* the applied connection may have our addresses */
  char *error;
  /* add: the probes in flight, and what they found */
  guint probes;
  GPtrArray *to_add; /* then what it added: the announcements' */
  GString *conflicts;
  guint announce_id;
  guint announce_left;
  guint retry_id;
  gint64 inactive_since; /* holding, but the device was not activated since */
  gboolean complete;     /* every address was there, last we looked */
  gboolean announced;    /* the add in flight announced already */
  gboolean late_add;     /* a cancelled add may still land before the removal in flight */
} Iface;

struct _SpVipPlugin
{
  SpPlugin parent;
  SpVipConfig *config;
  GPtrArray *ifaces; /* Iface*, one per configured interface */
  NMClient *client;
  GCancellable *cancellable; /* the client's creation; cancelled on dispose */
  gboolean started, stopped, holder;
  gboolean unremoved; /* since the release began, the kernel kept an address */
  guint refresh_id;
  gint64 last_transfer;
};

G_DEFINE_FINAL_TYPE (SpVipPlugin, sp_vip_plugin, SP_TYPE_PLUGIN)

static void sync_iface (Iface *i);

static gboolean
wanted (SpVipPlugin *self)
{
  return self->started && !self->stopped && self->holder
         && !sp_plugin_get_released (SP_PLUGIN (self));
}

/* ---- state on D-Bus ---------------------------------------------------- */

static gboolean
all_present (Iface *i)
{
  for (guint k = 0; k < i->addresses->len; k++)
    if (!i->device || !sp_nm_address_present (i->device, g_ptr_array_index (i->addresses, k)))
      return FALSE;
  return TRUE;
}

static gboolean
any_present (Iface *i)
{
  for (guint k = 0; k < i->addresses->len; k++)
    if (i->device && sp_nm_address_present (i->device, g_ptr_array_index (i->addresses, k)))
      return TRUE;
  return FALSE;
}

static void
update_state (SpVipPlugin *self)
{
  gboolean all = TRUE, none = TRUE;

  for (guint k = 0; k < self->ifaces->len; k++)
    {
      Iface *i = g_ptr_array_index (self->ifaces, k);

      if (i->error)
        {
          sp_plugin_report (SP_PLUGIN (self), SP_PLUGIN_FAILED, i->error);
          sp_plugin_details_changed (SP_PLUGIN (self));
          return;
        }
      all = all && all_present (i);
      none = none && !any_present (i);
    }
  if (wanted (self) && all)
    sp_plugin_report (SP_PLUGIN (self), SP_PLUGIN_ACTIVE, NULL);
  else if (!wanted (self) && none)
    sp_plugin_report (SP_PLUGIN (self), SP_PLUGIN_INACTIVE, NULL);
  sp_plugin_details_changed (SP_PLUGIN (self));
}

/* Wanted, or an address still on an interface. */
static gboolean
sp_vip_plugin_holding (SpPlugin *plugin)
{
  SpVipPlugin *self = SP_VIP_PLUGIN (plugin);

  if (wanted (self))
    return TRUE;
  for (guint k = 0; k < self->ifaces->len; k++)
    if (any_present (g_ptr_array_index (self->ifaces, k)))
      return TRUE;
  return FALSE;
}

static GVariant *
sp_vip_plugin_details (SpPlugin *plugin)
{
  SpVipPlugin *self = SP_VIP_PLUGIN (plugin);
  GVariantBuilder configured, held, states, details;

  g_variant_builder_init (&configured, G_VARIANT_TYPE_STRING_ARRAY);
  g_variant_builder_init (&held, G_VARIANT_TYPE_STRING_ARRAY);
  g_variant_builder_init (&states, G_VARIANT_TYPE ("a{ss}"));
  for (guint k = 0; k < self->ifaces->len; k++)
    {
      Iface *i = g_ptr_array_index (self->ifaces, k);
      g_autoptr (GEnumClass) klass = g_type_class_ref (NM_TYPE_DEVICE_STATE);
      GEnumValue *value
          = i->device ? g_enum_get_value (klass, nm_device_get_state (i->device)) : NULL;

      for (guint j = 0; j < i->addresses->len; j++)
        {
          SpVipAddress *a = g_ptr_array_index (i->addresses, j);

          g_variant_builder_add (&configured, "s", a->text);
          if (i->device && sp_nm_address_present (i->device, a))
            g_variant_builder_add (&held, "s", a->text);
        }
      g_variant_builder_add (&states, "{ss}", i->ifname,
                             value       ? value->value_nick
                             : i->device ? "unknown"
                                         : "missing");
    }
  g_variant_builder_init (&details, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add (&details, "{sv}", "addresses", g_variant_builder_end (&configured));
  g_variant_builder_add (&details, "{sv}", "held", g_variant_builder_end (&held));
  g_variant_builder_add (&details, "{sv}", "interfaces", g_variant_builder_end (&states));
  return g_variant_builder_end (&details);
}

/* ---- operations -------------------------------------------------------- */

static void
set_error (Iface *i, const char *error)
{
  g_free (i->error);
  i->error = g_strdup (error);
}

static void
transferred (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GError) error = NULL;

  if (!sp_node_admin_finish (SP_NODE (source), result, &error))
    g_message ("vip: handing leadership on: %s", error->message);
}

/* Called after sync_iface() has had every interface in question, never in
 * between: the verdict (unremoved) must include every interface's drop. */
static void
check_release (SpVipPlugin *self)
{
  /* Gone from the kernel is gone: a removal from NetworkManager's applied
   * connection goes on after the handover (were it to put an address back
   * meanwhile, the device's change drops it again).  Not while an add
   * cancelled may still land. */
  for (guint k = 0; k < self->ifaces->len; k++)
    {
      Iface *i = g_ptr_array_index (self->ifaces, k);

      if (i->op && (i->adding || i->late_add))
        return;
    }
  sp_plugin_released (SP_PLUGIN (self),
                      self->unremoved ? "an address could not be removed from the kernel" : NULL);
}

static gboolean
retry (gpointer user_data)
{
  Iface *i = user_data;

  i->retry_id = 0;
  sync_iface (i);
  check_release (i->self);
  return G_SOURCE_REMOVE;
}

/* The operation failed: report, retry later, and as leader that cannot
 * hold its addresses let another node try. */
static void
op_failed (Iface *i, const char *error)
{
  SpVipPlugin *self = i->self;
  gint64 now = g_get_monotonic_time ();

  set_error (i, error);
  update_state (self);
  if (!i->retry_id)
    i->retry_id = g_timeout_add (RETRY_MS, retry, i);
  if (i->adding && wanted (self) && self->config->transfer_on_failure
      && (self->last_transfer == 0
          || now - self->last_transfer > TRANSFER_BACKOFF_S * G_USEC_PER_SEC))
    {
      self->last_transfer = now;
      g_message ("vip: cannot hold the addresses here: handing leadership on");
      sp_node_transfer_async (sp_plugin_get_node (SP_PLUGIN (self)), "", transferred, NULL);
    }
}

/* An operation is over (op was not cancelled meanwhile). */
static void
op_done (Iface *i)
{
  g_clear_object (&i->op);
  if (i->again)
    {
      i->again = FALSE;
      sync_iface (i);
    }
  check_release (i->self);
}

static gboolean
announce_tick (gpointer user_data)
{
  Iface *i = user_data;

  /* What the last add added: NetworkManager may not have published it yet. */
  for (guint k = 0; k < i->to_add->len; k++)
    {
      g_autoptr (GError) error = NULL;

      if (!sp_announce_once (g_ptr_array_index (i->to_add, k), &error))
        g_warning ("vip: announcing %s", error->message);
    }
  if (--i->announce_left > 0)
    return G_SOURCE_CONTINUE;
  i->announce_id = 0;
  return G_SOURCE_REMOVE;
}

static void
announce (Iface *i)
{
  g_clear_handle_id (&i->announce_id, g_source_remove);
  i->announce_left = i->self->config->announce_count;
  if (i->announce_left == 0 || announce_tick (i) == G_SOURCE_REMOVE)
    return;
  i->announce_id = g_timeout_add (i->self->config->announce_interval_ms, announce_tick, i);
}

/* Each callback gets the iface and the op it belongs to; a cancelled op's
 * iface has moved on (or is gone), so it is not touched. */
typedef struct
{
  Iface *iface;
  GCancellable *op;
  SpVipAddress *address; /* the one a probe asks about */
} Call;

static Call *
call_new (Iface *i, SpVipAddress *address)
{
  Call *c = g_new (Call, 1);

  c->iface = i;
  c->op = g_object_ref (i->op);
  c->address = address;
  return c;
}

static Iface *
call_end (Call *c, SpVipAddress **address)
{
  Iface *i = g_cancellable_is_cancelled (c->op) ? NULL : c->iface;

  if (address)
    *address = c->address;
  g_object_unref (c->op);
  g_free (c);
  return i;
}

static void
added (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GError) error = NULL;
  gboolean ok = sp_nm_address_change_finish (NM_DEVICE (source), result, &error);
  Iface *i = call_end (user_data, NULL);

  if (!i)
    return;
  if (!ok)
    {
      g_ptr_array_set_size (i->to_add, 0);
      op_failed (i, error->message);
    }
  else
    {
      if (i->missing && !i->announced)
        announce (i);
      if (i->conflicts->len)
        op_failed (i, i->conflicts->str);
      else
        {
          set_error (i, NULL);
          update_state (i->self);
        }
    }
  op_done (i);
}

static void
apply (Iface *i)
{
  g_autoptr (GPtrArray) none = g_ptr_array_new ();

  /* In the kernel and announced now; NetworkManager records them next. */
  i->announced = FALSE;
  if (i->missing && i->to_add->len && !i->conflicts->len)
    {
      gboolean all = TRUE;

      for (guint k = 0; k < i->to_add->len; k++)
        {
          g_autoptr (GError) error = NULL;

          if (!sp_rtnl_add_address (g_ptr_array_index (i->to_add, k), &error))
            {
              g_message ("vip: %s; NetworkManager adds it", error->message);
              all = FALSE;
            }
        }
      if (all)
        {
          announce (i);
          i->announced = TRUE;
        }
    }
  i->nm_may_have = TRUE;
  sp_nm_address_change_async (i->device, i->to_add, none, i->op, added, call_new (i, NULL));
}

static void
probed (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *mac = NULL;
  gboolean no_conflict = sp_announce_probe_finish (result, &mac, &error);
  SpVipAddress *a;
  Iface *i = call_end (user_data, &a);

  if (!i)
    return;
  if (mac)
    g_string_append_printf (i->conflicts,
                            "%s%s: already answered by %s (another host has it); "
                            "not added",
                            i->conflicts->len ? "; " : "", a->text, mac);
  else
    {
      /* A probe that could not be sent does not keep the address away. */
      if (!no_conflict)
        g_warning ("vip: probing %s", error->message);
      g_ptr_array_add (i->to_add, a);
    }
  if (--i->probes == 0)
    apply (i);
}

static void
cancel_op (Iface *i)
{
  if (i->op)
    g_cancellable_cancel (i->op);
  g_clear_object (&i->op);
  i->again = FALSE;
}

static void
add (Iface *i)
{
  cancel_op (i);
  i->op = g_cancellable_new ();
  i->adding = TRUE;
  g_ptr_array_set_size (i->to_add, 0);
  g_string_truncate (i->conflicts, 0);
  i->probes = 0;
  i->missing = !all_present (i);
  for (guint k = 0; k < i->addresses->len; k++)
    {
      SpVipAddress *a = g_ptr_array_index (i->addresses, k);

      if (i->self->config->probe_ms && !sp_nm_address_present (i->device, a))
        {
          i->probes++;
          sp_announce_probe_async (a, i->self->config->probe_ms, i->op, probed, call_new (i, a));
        }
      else
        g_ptr_array_add (i->to_add, a);
    }
  if (i->probes == 0)
    apply (i);
}

static void
removed (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GError) error = NULL;
  gboolean ok = sp_nm_address_change_finish (NM_DEVICE (source), result, &error);
  Iface *i = call_end (user_data, NULL);

  if (!i)
    return;
  i->late_add = FALSE;
  if (ok)
    {
      i->nm_may_have = FALSE;
      set_error (i, NULL);
      update_state (i->self);
    }
  else
    op_failed (i, error->message);
  op_done (i);
}

/* From the kernel now, from NetworkManager next. */
static void
drop (Iface *i)
{
  g_autoptr (GPtrArray) none = g_ptr_array_new ();
  gboolean removing = i->op && !i->adding;

  g_clear_handle_id (&i->announce_id, g_source_remove);
  g_ptr_array_set_size (i->to_add, 0);
  /* A planned handover may not go on with an address left here. */
  if (!sp_rtnl_remove_addresses (i->addresses))
    i->self->unremoved = TRUE;
  if (removing || !i->device || !i->nm_may_have)
    {
      if (!removing)
        {
          set_error (i, NULL);
          cancel_op (i);
        }
      return;
    }
  /* NetworkManager runs a cancelled call anyway, before the removal. */
  i->late_add = i->late_add || (i->op && i->adding);
  cancel_op (i);
  i->op = g_cancellable_new ();
  i->adding = FALSE;
  sp_nm_address_change_async (i->device, none, i->addresses, i->op, removed, call_new (i, NULL));
}

static void
sync_iface (Iface *i)
{
  SpVipPlugin *self = i->self;

  if (!wanted (self))
    {
      i->inactive_since = 0;
      drop (i);
      update_state (self);
      return;
    }
  if (i->op && i->adding)
    {
      i->again = TRUE;
      return;
    }
  /* Not connected to NetworkManager yet: client_ready() looks again.  (It
   * could not connect: that is reported already.) */
  if (!self->client)
    return;
  if (!i->device)
    {
      g_autofree char *error
          = g_strdup_printf ("%s: NetworkManager has no device %s", i->ifname, i->ifname);

      cancel_op (i);
      i->adding = TRUE;
      op_failed (i, error);
      return;
    }
  if (nm_device_get_state (i->device) != NM_DEVICE_STATE_ACTIVATED)
    {
      /* A re-activation passes through disconnected: it is looked at again
       * when the state changes, and is a failure only if it lasts. */
      gint64 now = g_get_monotonic_time ();

      if (!i->inactive_since)
        i->inactive_since = now;
      if (now - i->inactive_since >= RETRY_MS * 1000)
        {
          g_autofree char *error = g_strdup_printf ("%s: the device is not activated", i->ifname);

          cancel_op (i);
          i->adding = TRUE;
          op_failed (i, error);
        }
      else if (!i->retry_id)
        i->retry_id = g_timeout_add (RETRY_MS, retry, i);
      return;
    }
  i->inactive_since = 0;
  add (i);
}

/* ---- watching the device ---------------------------------------------- */

/* While holding, something changed on the device: add what went missing. */
static void
device_changed (Iface *i)
{
  gboolean complete = all_present (i);

  /* Held as of now, not as of the node's last wake-up: the fence keeper
   * removes the addresses right at the end of the lease, and this event may
   * come before the node saw that end (its hold (FALSE) then comes first). */
  sp_node_refresh (sp_plugin_get_node (SP_PLUGIN (i->self)));
  if (wanted (i->self) && !i->op && !complete)
    {
      if (i->complete)
        g_message ("vip: %s: an address went missing (or the device was re-activated): "
                   "adding it again",
                   i->ifname);
      sync_iface (i);
    }
  else if (wanted (i->self) && i->op && i->adding)
    i->again = TRUE;
  else if (!wanted (i->self) && i->self->started && any_present (i))
    /* Put back by a late reapply (or by hand): this node holds nothing. */
    sp_rtnl_remove_addresses (i->addresses);
  i->complete = complete;
  /* NetworkManager publishes the kernel's addresses after our changes
   * completed: State follows them. */
  update_state (i->self);
}

static void
ipconfig_changed (GObject *object, GParamSpec *pspec, gpointer user_data)
{
  device_changed (user_data);
}

static void
watch_ipconfigs (Iface *i)
{
  for (guint f = 0; f < 2; f++)
    {
      NMIPConfig *config = !i->device ? NULL
                           : f == 0   ? nm_device_get_ip4_config (i->device)
                                      : nm_device_get_ip6_config (i->device);

      if (config == i->ipconfig[f])
        continue;
      if (i->ipconfig[f])
        {
          g_signal_handlers_disconnect_by_data (i->ipconfig[f], i);
          g_clear_object (&i->ipconfig[f]);
        }
      if (config)
        {
          i->ipconfig[f] = g_object_ref (config);
          g_signal_connect (config, "notify::addresses", G_CALLBACK (ipconfig_changed), i);
        }
    }
}

static void
device_notify (GObject *object, GParamSpec *pspec, gpointer user_data)
{
  Iface *i = user_data;

  watch_ipconfigs (i);
  device_changed (i);
}

static void
set_device (Iface *i, NMDevice *device)
{
  if (i->device == device)
    return;
  if (i->device)
    {
      g_signal_handlers_disconnect_by_data (i->device, i);
      g_clear_object (&i->device);
    }
  if (device)
    {
      i->device = g_object_ref (device);
      g_signal_connect (device, "notify::state", G_CALLBACK (device_notify), i);
      g_signal_connect (device, "notify::ip4-config", G_CALLBACK (device_notify), i);
      g_signal_connect (device, "notify::ip6-config", G_CALLBACK (device_notify), i);
    }
  watch_ipconfigs (i);
}

static void
devices_changed (NMClient *client, NMDevice *device, gpointer user_data)
{
  SpVipPlugin *self = user_data;

  for (guint k = 0; k < self->ifaces->len; k++)
    {
      Iface *i = g_ptr_array_index (self->ifaces, k);
      NMDevice *now = nm_client_get_device_by_iface (client, i->ifname);

      if (now != i->device)
        {
          cancel_op (i);
          set_device (i, now);
          sync_iface (i);
        }
    }
  check_release (self);
}

static void
client_ready (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GError) error = NULL;
  NMClient *client = nm_client_new_finish (result, &error);
  SpVipPlugin *self;

  if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return;
  self = user_data;
  if (!client)
    {
      g_autofree char *text = g_strdup_printf ("NetworkManager: %s", error->message);

      sp_plugin_report (SP_PLUGIN (self), SP_PLUGIN_FAILED, text);
      return;
    }
  self->client = client;
  g_signal_connect (client, "device-added", G_CALLBACK (devices_changed), self);
  g_signal_connect (client, "device-removed", G_CALLBACK (devices_changed), self);
  for (guint k = 0; k < self->ifaces->len; k++)
    {
      Iface *i = g_ptr_array_index (self->ifaces, k);

      set_device (i, nm_client_get_device_by_iface (client, i->ifname));
      sync_iface (i);
    }
  check_release (self);
}

/* ---- the plugin -------------------------------------------------------- */

static void
iface_free (Iface *i)
{
  cancel_op (i);
  set_device (i, NULL);
  g_clear_handle_id (&i->announce_id, g_source_remove);
  g_clear_handle_id (&i->retry_id, g_source_remove);
  g_ptr_array_unref (i->addresses);
  g_ptr_array_unref (i->to_add);
  g_string_free (i->conflicts, TRUE);
  g_free (i->error);
  g_free (i->ifname);
  g_free (i);
}

static gboolean
sp_vip_plugin_probe (SpPlugin *plugin, SpConfig *config, GPtrArray *warnings, GError **error)
{
  SpVipPlugin *self = SP_VIP_PLUGIN (plugin);

  self->config = sp_vip_config_read (config, warnings, error);
  if (!self->config)
    return FALSE;
  for (guint k = 0; k < self->config->addresses->len; k++)
    {
      SpVipAddress *a = g_ptr_array_index (self->config->addresses, k);
      Iface *i = NULL;

      for (guint j = 0; j < self->ifaces->len && !i; j++)
        if (g_str_equal (((Iface *)g_ptr_array_index (self->ifaces, j))->ifname, a->ifname))
          i = g_ptr_array_index (self->ifaces, j);
      if (!i)
        {
          i = g_new0 (Iface, 1);
          i->self = self;
          i->ifname = g_strdup (a->ifname);
          i->addresses = g_ptr_array_new ();
          i->to_add = g_ptr_array_new ();
          i->conflicts = g_string_new (NULL);
          i->nm_may_have = TRUE; /* an earlier run may have left them */
          g_ptr_array_add (self->ifaces, i);
        }
      g_ptr_array_add (i->addresses, a);
    }
  return TRUE;
}

static gboolean
refresh (gpointer user_data)
{
  SpVipPlugin *self = user_data;

  for (guint k = 0; k < self->ifaces->len; k++)
    {
      Iface *i = g_ptr_array_index (self->ifaces, k);

      if (wanted (self) && !i->op && i->device)
        announce (i);
    }
  return G_SOURCE_CONTINUE;
}

static void
sp_vip_plugin_start (SpPlugin *plugin)
{
  SpVipPlugin *self = SP_VIP_PLUGIN (plugin);

  /* What this run may hold was recorded for the clean-up after it before
   * sparrowd started (sparrow-vip-cleanup --record): not here, since the
   * clean-up, root, trusts nothing sparrowd can write. */
  self->started = TRUE;
  /* The fence keeper takes them away at the end of a lease this process
   * could not act on (stopped, starved). */
  for (guint k = 0; k < self->config->addresses->len; k++)
    {
      const SpVipAddress *a = g_ptr_array_index (self->config->addresses, k);

      sp_node_add_fence_address (sp_plugin_get_node (plugin), a->family, a->addr, a->prefix,
                                 a->ifname);
    }
  /* Stale copies go from the kernel now, from NetworkManager once the
   * client is there. */
  for (guint k = 0; k < self->ifaces->len; k++)
    drop (g_ptr_array_index (self->ifaces, k));
  if (self->config->refresh_s)
    self->refresh_id = g_timeout_add_seconds (self->config->refresh_s, refresh, self);
  nm_client_new_async (self->cancellable, client_ready, self);
}

static void
sync_all (SpVipPlugin *self)
{
  for (guint k = 0; k < self->ifaces->len; k++)
    sync_iface (g_ptr_array_index (self->ifaces, k));
  check_release (self);
}

static void
sp_vip_plugin_hold (SpPlugin *plugin, gboolean holder)
{
  SpVipPlugin *self = SP_VIP_PLUGIN (plugin);

  self->holder = holder;
  sync_all (self);
}

static void
sp_vip_plugin_release (SpPlugin *plugin)
{
  SpVipPlugin *self = SP_VIP_PLUGIN (plugin);

  self->unremoved = FALSE;
  sync_all (self);
}

static void
sp_vip_plugin_resume (SpPlugin *plugin)
{
  sync_all (SP_VIP_PLUGIN (plugin));
}

static void
sp_vip_plugin_stop (SpPlugin *plugin)
{
  SpVipPlugin *self = SP_VIP_PLUGIN (plugin);

  self->stopped = TRUE;
  sync_all (self);
}

static void
sp_vip_plugin_dispose (GObject *object)
{
  SpVipPlugin *self = SP_VIP_PLUGIN (object);

  g_cancellable_cancel (self->cancellable);
  g_clear_handle_id (&self->refresh_id, g_source_remove);
  g_ptr_array_set_size (self->ifaces, 0);
  if (self->client)
    g_signal_handlers_disconnect_by_data (self->client, self);
  g_clear_object (&self->client);
  G_OBJECT_CLASS (sp_vip_plugin_parent_class)->dispose (object);
}

static void
sp_vip_plugin_finalize (GObject *object)
{
  SpVipPlugin *self = SP_VIP_PLUGIN (object);

  g_ptr_array_unref (self->ifaces);
  g_object_unref (self->cancellable);
  sp_vip_config_free (self->config);
  G_OBJECT_CLASS (sp_vip_plugin_parent_class)->finalize (object);
}

static void
sp_vip_plugin_init (SpVipPlugin *self)
{
  self->ifaces = g_ptr_array_new_with_free_func ((GDestroyNotify)iface_free);
  self->cancellable = g_cancellable_new ();
}

static void
sp_vip_plugin_class_init (SpVipPluginClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);
  SpPluginClass *plugin_class = SP_PLUGIN_CLASS (klass);

  object_class->dispose = sp_vip_plugin_dispose;
  object_class->finalize = sp_vip_plugin_finalize;
  plugin_class->probe = sp_vip_plugin_probe;
  plugin_class->start = sp_vip_plugin_start;
  plugin_class->hold = sp_vip_plugin_hold;
  plugin_class->release = sp_vip_plugin_release;
  plugin_class->resume = sp_vip_plugin_resume;
  plugin_class->stop = sp_vip_plugin_stop;
  plugin_class->details = sp_vip_plugin_details;
  plugin_class->holding = sp_vip_plugin_holding;
}

GType
sp_plugin_module_get_type (void)
{
  return SP_TYPE_VIP_PLUGIN;
}
