/* Persists per second through SpStorage, fsync on: batch size 1 (submit,
 * wait, repeat) and 32 (32 submitted per loop iteration, then wait).
 * Each persist is one 128-byte entry and a hard state, as a follower's
 * ready would be.
 *
 *   storage-bench [--dir DIR] [--seconds N]
 *
 * DIR (default: a new directory under $TMPDIR) must be on the disk to
 * measure: a tmpfs makes fsync free. */
#include <glib/gstdio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage.h"

typedef struct
{
  guint done;
  gboolean failed;
} Counter;

static void
on_done (GError *error, gpointer user_data)
{
  Counter *c = user_data;

  if (error)
    {
      g_printerr ("persist failed: %s\n", error->message);
      c->failed = TRUE;
    }
  c->done++;
}

static gboolean
run (const char *dir, guint batch, double seconds)
{
  g_auto (SpStorageState) state = { 0 };
  g_autoptr (GError) error = NULL;
  g_autoptr (SpStorage) storage = sp_storage_open (dir, &state, &error);
  g_autoptr (GBytes) data = NULL;
  guint8 payload[128];
  Counter c = { 0 };
  guint64 index = 0;
  guint syncs;
  gint64 start, elapsed;

  if (!storage)
    {
      g_printerr ("%s\n", error->message);
      return FALSE;
    }
  memset (payload, 'x', sizeof payload);
  data = g_bytes_new (payload, sizeof payload);
  syncs = sp_storage_sync_count (storage);
  start = g_get_monotonic_time ();
  do
    {
      for (guint i = 0; i < batch; i++)
        {
          g_autoptr (GArray) entries = sp_raft_entries_new (1);
          SpRaftEntry e = { .term = 1, .index = ++index, .data = g_bytes_ref (data) };
          SpRaftHardState hs = { .term = 1, .vote = 1, .commit = index };

          g_array_append_val (entries, e);
          sp_storage_persist (storage, NULL, entries, &hs, on_done, &c);
        }
      while (c.done < index)
        g_main_context_iteration (NULL, TRUE);
      elapsed = g_get_monotonic_time () - start;
    }
  while (!c.failed && elapsed < seconds * G_USEC_PER_SEC);
  if (c.failed)
    return FALSE;

  printf ("batch %2u: %7" G_GUINT64_FORMAT " persists in %.2f s = %8.0f persists/s"
          " (%u fsync batches, %.0f/s)\n",
          batch, index, elapsed / 1e6, index / (elapsed / 1e6),
          sp_storage_sync_count (storage) - syncs,
          (sp_storage_sync_count (storage) - syncs) / (elapsed / 1e6));
  return TRUE;
}

static void
remove_files (const char *dir)
{
  static const char *const names[] = { "log", "hardstate", "snapshot" };

  for (guint i = 0; i < G_N_ELEMENTS (names); i++)
    {
      g_autofree char *path = g_build_filename (dir, names[i], NULL);

      g_unlink (path);
    }
}

int
main (int argc, char **argv)
{
  g_autofree char *dir = NULL;
  g_autofree char *data_dir = NULL;
  double seconds = 3;
  g_autoptr (GError) error = NULL;
  g_autoptr (GOptionContext) options = g_option_context_new ("- SpStorage persists per second");
  GOptionEntry entries[] = {
    { "dir", 'd', 0, G_OPTION_ARG_FILENAME, &dir, "Directory to create the data dir in", "DIR" },
    { "seconds", 's', 0, G_OPTION_ARG_DOUBLE, &seconds, "Seconds per batch size (3)", "N" },
    { NULL },
  };
  static const guint batches[] = { 1, 32 };
  gboolean made = FALSE, ok = TRUE;

  g_option_context_add_main_entries (options, entries, NULL);
  if (!g_option_context_parse (options, &argc, &argv, &error))
    {
      g_printerr ("%s\n", error->message);
      return EXIT_FAILURE;
    }
  if (!dir)
    {
      if (!(dir = g_dir_make_tmp ("sp-storage-bench-XXXXXX", &error)))
        {
          g_printerr ("%s\n", error->message);
          return EXIT_FAILURE;
        }
      made = TRUE;
    }
  data_dir = g_build_filename (dir, "data", NULL);
  printf ("data directory %s\n", data_dir);
  for (guint i = 0; i < G_N_ELEMENTS (batches) && ok; i++)
    {
      remove_files (data_dir);
      ok = run (data_dir, batches[i], seconds);
    }
  remove_files (data_dir);
  g_rmdir (data_dir);
  if (made)
    g_rmdir (dir);
  return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
