#include "nm-address.h"

#define ATTEMPTS 5

typedef struct
{
  GPtrArray *add;
  GPtrArray *remove;
  guint attempts;
} Change;

static void
change_free (Change *c)
{
  g_ptr_array_unref (c->add);
  g_ptr_array_unref (c->remove);
  g_free (c);
}

static void get_applied (GTask *task);

static NMIPAddress *
nm_address_of (const SpVipAddress *a)
{
  return nm_ip_address_new_binary (a->family, a->addr, a->prefix, NULL);
}

static NMSettingIPConfig *
ip_setting (NMConnection *connection, int family)
{
  return family == AF_INET
             ? NM_SETTING_IP_CONFIG (nm_connection_get_setting_ip4_config (connection))
             : NM_SETTING_IP_CONFIG (nm_connection_get_setting_ip6_config (connection));
}

static gboolean
takes_addresses (const char *method)
{
  return !g_strv_contains ((const char *const[]){ NM_SETTING_IP4_CONFIG_METHOD_DISABLED,
                                                  NM_SETTING_IP6_CONFIG_METHOD_DISABLED,
                                                  NM_SETTING_IP6_CONFIG_METHOD_IGNORE,
                                                  NM_SETTING_IP6_CONFIG_METHOD_LINK_LOCAL, NULL },
                           method);
}

/* Edits connection; *changed tells whether a reapply is needed. */
static gboolean
edit (NMConnection *connection, Change *c, gboolean *changed, GError **error)
{
  *changed = FALSE;
  for (guint i = 0; i < c->remove->len; i++)
    {
      const SpVipAddress *a = g_ptr_array_index (c->remove, i);
      NMSettingIPConfig *s = ip_setting (connection, a->family);
      NMIPAddress *address = nm_address_of (a);

      if (s && nm_setting_ip_config_remove_address_by_value (s, address))
        *changed = TRUE;
      nm_ip_address_unref (address);
    }
  for (guint i = 0; i < c->add->len; i++)
    {
      const SpVipAddress *a = g_ptr_array_index (c->add, i);
      NMSettingIPConfig *s = ip_setting (connection, a->family);
      NMIPAddress *address;
      const char *family = a->family == AF_INET ? "ipv4" : "ipv6";

      if (!s || !takes_addresses (nm_setting_ip_config_get_method (s)))
        {
          g_set_error (error, NM_DEVICE_ERROR, NM_DEVICE_ERROR_INCOMPATIBLE_CONNECTION,
                       "%s: the connection \"%s\" on %s has %s.method \"%s\", which takes no "
                       "addresses (make it manual or auto)",
                       a->text, nm_connection_get_id (connection), a->ifname, family,
                       s ? nm_setting_ip_config_get_method (s) : "(none)");
          return FALSE;
        }
      address = nm_address_of (a);
      if (nm_setting_ip_config_add_address (s, address))
        *changed = TRUE;
      nm_ip_address_unref (address);
    }
  return TRUE;
}

/* Whether one of addresses is applied but not in the kernel (removed by
 * hand): a reapply puts it back. */
static gboolean
missing (NMDevice *device, GPtrArray *addresses)
{
  for (guint i = 0; i < addresses->len; i++)
    if (!sp_nm_address_present (device, g_ptr_array_index (addresses, i)))
      return TRUE;
  return FALSE;
}

static void
reapplied (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  Change *c = g_task_get_task_data (task);
  g_autoptr (GError) error = NULL;

  if (nm_device_reapply_finish (NM_DEVICE (source), result, &error))
    g_task_return_boolean (task, TRUE);
  else if (g_error_matches (error, NM_DEVICE_ERROR, NM_DEVICE_ERROR_VERSION_ID_MISMATCH)
           && ++c->attempts < ATTEMPTS)
    get_applied (g_steal_pointer (&task));
  else
    g_task_return_error (task, g_steal_pointer (&error));
}

static void
got_applied (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  NMDevice *device = NM_DEVICE (source);
  Change *c = g_task_get_task_data (task);
  g_autoptr (GError) error = NULL;
  guint64 version_id = 0;
  g_autoptr (NMConnection) connection
      = nm_device_get_applied_connection_finish (device, result, &version_id, &error);
  gboolean changed;

  if (!connection)
    {
      if (c->add->len == 0 && g_error_matches (error, NM_DEVICE_ERROR, NM_DEVICE_ERROR_NOT_ACTIVE))
        g_task_return_boolean (task, TRUE);
      else
        g_task_return_error (task, g_steal_pointer (&error));
      return;
    }
  if (!edit (connection, c, &changed, &error))
    g_task_return_error (task, g_steal_pointer (&error));
  else if (!changed && !missing (device, c->add))
    g_task_return_boolean (task, TRUE);
  else
    {
      GCancellable *cancellable = g_task_get_cancellable (task);

      nm_device_reapply_async (device, connection, version_id, 0, cancellable, reapplied,
                               g_steal_pointer (&task));
    }
}

static void
get_applied (GTask *task)
{
  nm_device_get_applied_connection_async (g_task_get_source_object (task), 0,
                                          g_task_get_cancellable (task), got_applied, task);
}

void
sp_nm_address_change_async (NMDevice *device, GPtrArray *add, GPtrArray *remove,
                            GCancellable *cancellable, GAsyncReadyCallback callback,
                            gpointer user_data)
{
  GTask *task = g_task_new (device, cancellable, callback, user_data);
  Change *c = g_new0 (Change, 1);

  c->add = g_ptr_array_ref (add);
  c->remove = g_ptr_array_ref (remove);
  g_task_set_task_data (task, c, (GDestroyNotify)change_free);
  get_applied (task);
}

gboolean
sp_nm_address_change_finish (NMDevice *device, GAsyncResult *result, GError **error)
{
  return g_task_propagate_boolean (G_TASK (result), error);
}

gboolean
sp_nm_address_present (NMDevice *device, const SpVipAddress *address)
{
  NMIPConfig *config = address->family == AF_INET ? nm_device_get_ip4_config (device)
                                                  : nm_device_get_ip6_config (device);
  GPtrArray *addresses = config ? nm_ip_config_get_addresses (config) : NULL;

  for (guint i = 0; addresses && i < addresses->len; i++)
    {
      NMIPAddress *a = g_ptr_array_index (addresses, i);
      guint8 bin[16] = { 0 };

      nm_ip_address_get_address_binary (a, bin);
      if (nm_ip_address_get_prefix (a) == address->prefix
          && memcmp (bin, address->addr, address->family == AF_INET ? 4 : 16) == 0)
        return TRUE;
    }
  return FALSE;
}
