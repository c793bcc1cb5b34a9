/* sparrow-vip-cleanup: removes this node's service addresses, whatever
 * state sparrowd left them in.  Run by sparrow.service's ExecStopPost=, so
 * a kill -9, a crash or a watchdog kill never leaves an address answering
 * beside the new leader's.
 *
 * First straight from the kernel (rtnetlink: immediate, needs no
 * NetworkManager), then from NetworkManager's applied connection so that
 * it does not put them back.  It never waits long: NetworkManager gets
 * TIMEOUT_MS in all.  The addresses are those recorded when the run that
 * ended started (--record, the unit's ExecStartPre=: SP_VIP_RECORD_PATH)
 * and those the configuration names now.  Exit 0 when none of them is
 * left on the node (also when there is none), 1 otherwise or when the
 * configuration or the record cannot be read or is not trusted.
 *
 * It runs as root, sparrowd as user sparrow: it reads only files that
 * no one less privileged than itself can have written (trusted()), so a
 * compromised sparrowd cannot have it remove the host's own addresses.
 * That is why the record is written by this helper, from the
 * configuration, and not by sparrowd. */

#include <errno.h>
#include <glib/gstdio.h>
#include <locale.h>
#include <NetworkManager.h>
#include <sys/stat.h>

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

static gboolean refuse (GError **error, const char *format, ...) G_GNUC_PRINTF (2, 3);

static gboolean
refuse (GError **error, const char *format, ...)
{
  va_list args;
  g_autofree char *text = NULL;

  va_start (args, format);
  text = g_strdup_vprintf (format, args);
  va_end (args);
  g_set_error (error, G_FILE_ERROR, G_FILE_ERROR_PERM, "%s: not trusted", text);
  return FALSE;
}

/* Whether path, a regular file or a directory, may be trusted by this
 * helper: it and every directory above it belong to root (or to the user
 * running this, in a test), are not writable by group or others (a
 * directory above may be if sticky: no one can rename another's entries)
 * and none is a symbolic link.  Then no one else can change what path
 * names between this check and its reading.  G_FILE_ERROR_NOENT when it
 * does not exist. */
static gboolean
trusted (const char *path, GError **error)
{
  g_autofree char *at = g_canonicalize_filename (path, NULL);

  for (gboolean leaf = TRUE;; leaf = FALSE)
    {
      struct stat st;
      char *up;

      if (lstat (at, &st) != 0)
        {
          int saved = errno;

          g_set_error (error, G_FILE_ERROR, g_file_error_from_errno (saved), "%s: %s", at,
                       g_strerror (saved));
          return FALSE;
        }
      if (S_ISLNK (st.st_mode))
        return refuse (error, "%s: a symbolic link", at);
      if (leaf && !S_ISREG (st.st_mode) && !S_ISDIR (st.st_mode))
        return refuse (error, "%s: not a regular file or directory", at);
      if (st.st_uid != 0 && st.st_uid != geteuid ())
        return refuse (error, "%s: owned by uid %u, not root", at, (guint)st.st_uid);
      if ((st.st_mode & (S_IWGRP | S_IWOTH))
          && (leaf || !S_ISDIR (st.st_mode) || !(st.st_mode & S_ISVTX)))
        return refuse (error, "%s: writable by group or others (mode %04o)", at,
                       (guint)(st.st_mode & 07777));
      if (g_str_equal (at, "/"))
        return TRUE;
      up = g_path_get_dirname (at);
      g_free (at);
      at = up;
    }
}

/* The configuration file and its drop-ins (config.h), each trusted. */
static gboolean
config_trusted (const char *path, GError **error)
{
  g_autofree char *dir = g_path_get_dirname (path);
  g_autofree char *drop_ins = g_build_filename (dir, "sparrow.conf.d", NULL);
  g_autoptr (GDir) list = NULL;
  const char *name;

  if (!trusted (path, error))
    return FALSE;
  if (!g_file_test (drop_ins, G_FILE_TEST_EXISTS))
    return TRUE;
  if (!trusted (drop_ins, error) || !(list = g_dir_open (drop_ins, 0, error)))
    return FALSE;
  while ((name = g_dir_read_name (list)))
    {
      g_autofree char *file = g_build_filename (drop_ins, name, NULL);

      if (g_str_has_suffix (name, ".conf") && !trusted (file, error))
        return FALSE;
    }
  return TRUE;
}

/* The addresses recorded when the last run started (empty when none);
 * *status 1 when the record cannot be read or is not trusted. */
static GPtrArray *
record_addresses (const char *record, int *status)
{
  g_autoptr (GError) error = NULL;
  GPtrArray *addresses = NULL;

  if (trusted (record, &error))
    addresses = sp_vip_record_load (record, &error);
  else if (g_error_matches (error, G_FILE_ERROR, G_FILE_ERROR_NOENT))
    g_clear_error (&error);
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

/* --record: what the run about to start may hold, from the configuration,
 * in a directory of root's own (sparrowd's runtime directory belongs to
 * user sparrow).  No [vip]: no record. */
static int
record (const char *path, const char *record)
{
  g_autofree char *dir = g_path_get_dirname (record);
  g_autoptr (GError) error = NULL;
  g_autoptr (SpConfig) config = NULL;
  g_autoptr (SpVipConfig) vip = NULL;

  if (g_unlink (record) != 0 && errno != ENOENT)
    {
      g_printerr ("sparrow-vip-cleanup: %s: %s\n", record, g_strerror (errno));
      return 1;
    }
  if (config_trusted (path, &error) && (config = sp_config_load (path, NULL, &error)))
    vip = sp_vip_config_read (config, NULL, &error);
  if (error)
    {
      g_printerr ("sparrow-vip-cleanup: %s; nothing recorded\n", error->message);
      return 1;
    }
  if (!vip)
    return 0;
  if (g_mkdir (dir, 0700) != 0 && errno != EEXIST)
    {
      g_printerr ("sparrow-vip-cleanup: %s: %s\n", dir, g_strerror (errno));
      return 1;
    }
  if (!trusted (dir, &error) || !sp_vip_record_save (record, vip->addresses, &error))
    {
      g_printerr ("sparrow-vip-cleanup: %s\n", error->message);
      return 1;
    }
  return 0;
}

int
main (int argc, char **argv)
{
  g_autofree char *path = NULL;
  g_autofree char *record_path = NULL;
  gboolean record_only = FALSE;
  GOptionEntry entries[] = {
    { "config", 'c', 0, G_OPTION_ARG_FILENAME, &path, "Configuration file", "PATH" },
    { "record", 0, 0, G_OPTION_ARG_NONE, &record_only,
      "Record the configured addresses for the clean-up after this run", NULL },
    { "record-file", 0, 0, G_OPTION_ARG_FILENAME, &record_path,
      "The record (default " SP_VIP_RECORD_PATH ")", "PATH" },
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
  if (!path)
    path = g_strdup (SP_CONFIG_DEFAULT_PATH);
  if (!record_path)
    record_path = g_strdup (SP_VIP_RECORD_PATH);
  if (record_only)
    return record (path, record_path);
  /* What the run that ended recorded, and what the file says now: the
   * file may have been edited, or broken, since that run started. */
  addresses = record_addresses (record_path, &status);
  if (config_trusted (path, &error))
    config = sp_config_load (path, NULL, &error);
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
