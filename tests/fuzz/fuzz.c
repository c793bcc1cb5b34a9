#include "fuzz.h"

#include <glib/gstdio.h>
#include <stdlib.h>

static GLogWriterOutput
discard (GLogLevelFlags level, const GLogField *fields, gsize n_fields, gpointer user_data)
{
  return G_LOG_WRITER_HANDLED;
}

void
sp_fuzz_init (void)
{
  static gsize done;

  if (!g_once_init_enter (&done))
    return;
  if (!g_getenv ("SPARROW_FUZZ_VERBOSE"))
    g_log_set_writer_func (discard, NULL, NULL);
  g_log_set_always_fatal (G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_ERROR);
  g_once_init_leave (&done, 1);
}

char *
sp_fuzz_make_dir (void)
{
  const char *base = g_file_test ("/dev/shm", G_FILE_TEST_IS_DIR) ? "/dev/shm" : g_get_tmp_dir ();
  g_autofree char *template = g_build_filename (base, "sparrow-fuzz-XXXXXX", NULL);

  if (!g_mkdtemp (template))
    abort ();
  return g_steal_pointer (&template);
}

void
sp_fuzz_remove_dir (const char *dir)
{
  g_autoptr (GDir) d = g_dir_open (dir, 0, NULL);
  const char *name;

  while (d && (name = g_dir_read_name (d)))
    {
      g_autofree char *path = g_build_filename (dir, name, NULL);

      if (g_file_test (path, G_FILE_TEST_IS_DIR) && !g_file_test (path, G_FILE_TEST_IS_SYMLINK))
        sp_fuzz_remove_dir (path);
      else
        g_unlink (path);
    }
  g_rmdir (dir);
}

void
sp_fuzz_write_file (const char *dir, const char *name, const uint8_t *data, size_t size)
{
  g_autofree char *path = g_build_filename (dir, name, NULL);

  if (!g_file_set_contents (path, (const char *)data, (gssize)size, NULL))
    abort ();
}
