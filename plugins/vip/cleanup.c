/* sparrow-vip-cleanup: removes this node's service addresses, whatever
 * state sparrowd left them in.  Run by sparrow.service's ExecStopPost=, so
 * a kill -9, a crash or a watchdog kill never leaves an address answering
 * beside the new leader's.
 *
 * First straight from the kernel (rtnetlink: immediate, needs no
 * NetworkManager), then from NetworkManager's applied connection so that
 * it does not put them back.  It never waits long: NetworkManager gets
 * TIMEOUT_MS in all.  The addresses are those the run that ended
 * recorded (vip-config.h) and those the configuration names now.  Exit 0
 * when none of them is left on the node (also when there is none), 1
 * otherwise or when the configuration or the record cannot be read. */

#include <locale.h>
#include <NetworkManager.h>

#include "config.h"
#include "nm-address.h"
#include "rtnl.h"
#include "vip-config.h"

#define TIMEOUT_MS 800

typedef struct
{
  NMClient *client;
  gboolean connected; /* nm_client_new_async() completed */
  guint pending;      /* changes not completed yet */
} Run;

static void
changed (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Run *run = user_data;
  g_autoptr (GError) error = NULL;

  if (!sp_nm_address_change_finish (NM_DEVICE (source), result, &error))
    g_printerr ("sparrow-vip-cleanup: NetworkManager: %s\n", error->message);
  run->pending--;
}

static void
got_client (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Run *run = user_data;
  g_autoptr (GError) error = NULL;

  run->client = nm_client_new_finish (result, &error);
  run->connected = TRUE;
  if (!run->client)
    g_printerr ("sparrow-vip-cleanup: NetworkManager: %s\n", error->message);
}

static gboolean
cancel (gpointer user_data)
{
  g_cancellable_cancel (user_data);
  return G_SOURCE_REMOVE;
}

/* Takes the addresses out of NetworkManager's applied connections. */
static void
remove_from_nm (GPtrArray *addresses, GMainContext *context, GCancellable *cancellable)
{
  g_autoptr (GHashTable) by_if
      = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, (GDestroyNotify)g_ptr_array_unref);
  g_autoptr (GPtrArray) none = g_ptr_array_new ();
  Run run = { 0 };
  GHashTableIter iter;
  gpointer ifname, list;

  nm_client_new_async (cancellable, got_client, &run);
  while (!run.connected)
    g_main_context_iteration (context, TRUE);
  if (!run.client)
    return;
  for (guint i = 0; i < addresses->len; i++)
    {
      SpVipAddress *a = g_ptr_array_index (addresses, i);
      GPtrArray *on_if = g_hash_table_lookup (by_if, a->ifname);

      if (!on_if)
        g_hash_table_insert (by_if, a->ifname, on_if = g_ptr_array_new ());
      g_ptr_array_add (on_if, a);
    }
  g_hash_table_iter_init (&iter, by_if);
  while (g_hash_table_iter_next (&iter, &ifname, &list))
    {
      NMDevice *device = nm_client_get_device_by_iface (run.client, ifname);

      if (!device)
        continue;
      run.pending++;
      sp_nm_address_change_async (device, none, list, cancellable, changed, &run);
    }
  while (run.pending)
    g_main_context_iteration (context, TRUE);
  g_object_unref (run.client);
}

/* The addresses the last run recorded in the runtime directory (empty
 * when it recorded none); *status 1 when the record cannot be read. */
static GPtrArray *
record_addresses (int *status)
{
  const char *dir = g_getenv ("RUNTIME_DIRECTORY");
  g_autofree char *path = dir ? g_build_filename (dir, SP_VIP_RECORD, NULL) : NULL;
  g_autoptr (GError) error = NULL;
  GPtrArray *addresses = path ? sp_vip_record_load (path, &error) : NULL;

  if (error)
    {
      g_printerr ("sparrow-vip-cleanup: %s\n", error->message);
      *status = 1;
    }
  return addresses ? addresses
                   : g_ptr_array_new_with_free_func ((GDestroyNotify)sp_vip_address_free);
}

/* Adds a copy of a unless the list has it. */
static void
add_new (GPtrArray *addresses, const SpVipAddress *a)
{
  for (guint i = 0; i < addresses->len; i++)
    if (g_str_equal (((SpVipAddress *)addresses->pdata[i])->text, a->text))
      return;
  g_ptr_array_add (addresses, sp_vip_address_parse (a->text, NULL));
}

int
main (int argc, char **argv)
{
  g_autofree char *path = NULL;
  GOptionEntry entries[] = {
    { "config", 'c', 0, G_OPTION_ARG_FILENAME, &path, "Configuration file", "PATH" },
    { NULL },
  };
  g_autoptr (GOptionContext) options
      = g_option_context_new ("- remove this node's service addresses");
  g_autoptr (GError) error = NULL;
  g_autoptr (SpConfig) config = NULL;
  g_autoptr (SpVipConfig) vip = NULL;
  g_autoptr (GPtrArray) addresses = NULL;
  g_autoptr (GMainContext) context = g_main_context_new ();
  g_autoptr (GCancellable) cancellable = g_cancellable_new ();
  g_autoptr (GSource) timeout = g_timeout_source_new (TIMEOUT_MS);
  int status = 0;

  setlocale (LC_ALL, "");
  g_option_context_add_main_entries (options, entries, NULL);
  if (!g_option_context_parse (options, &argc, &argv, &error))
    {
      g_printerr ("sparrow-vip-cleanup: %s\n", error->message);
      return 2;
    }
  /* What the run that ended recorded, and what the file says now: the
   * file may have been edited, or broken, since that run started. */
  addresses = record_addresses (&status);
  config = sp_config_load (path ? path : SP_CONFIG_DEFAULT_PATH, NULL, &error);
  if (config)
    vip = sp_vip_config_read (config, NULL, &error);
  if (error)
    {
      g_printerr ("sparrow-vip-cleanup: %s%s\n", error->message,
                  addresses->len ? "; removing the recorded addresses" : "");
      status = 1;
    }
  for (guint i = 0; vip && i < vip->addresses->len; i++)
    add_new (addresses, g_ptr_array_index (vip->addresses, i));
  if (!addresses->len)
    return status;

  if (!sp_rtnl_remove_addresses (addresses))
    status = 1;

  g_main_context_push_thread_default (context);
  g_source_set_callback (timeout, cancel, cancellable, NULL);
  g_source_attach (timeout, context);
  remove_from_nm (addresses, context, cancellable);
  g_source_destroy (timeout);
  g_main_context_pop_thread_default (context);
  return status;
}
