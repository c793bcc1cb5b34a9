/* Runs a fuzz harness over files, without libFuzzer: the regression test
 * of the normal suite.  Usage: driver DIR... [--optional DIR...]: every
 * regular file of each DIR, in name order, is one input; a directory
 * after --optional may be missing (no crash found yet).  Fails when no
 * input was run at all. */
#include "fuzz.h"

#include <stdio.h>
#include <string.h>

static int
compare (gconstpointer a, gconstpointer b)
{
  return strcmp (*(const char *const *)a, *(const char *const *)b);
}

static gboolean
run_dir (const char *dir, gboolean optional, guint *count)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GDir) d = g_dir_open (dir, 0, &error);
  g_autoptr (GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
  const char *name;
  guint before = *count;

  if (!d)
    {
      if (optional && g_error_matches (error, G_FILE_ERROR, G_FILE_ERROR_NOENT))
        return TRUE;
      fprintf (stderr, "%s\n", error->message);
      return FALSE;
    }
  while ((name = g_dir_read_name (d)))
    g_ptr_array_add (names, g_strdup (name));
  g_ptr_array_sort (names, compare);
  for (guint i = 0; i < names->len; i++)
    {
      g_autofree char *path = g_build_filename (dir, names->pdata[i], NULL);
      g_autofree char *data = NULL;
      gsize size;

      if (!g_file_test (path, G_FILE_TEST_IS_REGULAR))
        continue;
      if (!g_file_get_contents (path, &data, &size, &error))
        {
          fprintf (stderr, "%s\n", error->message);
          return FALSE;
        }
      /* An exact-size copy, as libFuzzer gives: a read past the end is caught. */
      {
        g_autofree guint8 *copy = g_memdup2 (data, size);

        LLVMFuzzerTestOneInput (copy, size);
      }
      (*count)++;
    }
  printf ("%u inputs from %s\n", *count - before, dir);
  return TRUE;
}

int
main (int argc, char **argv)
{
  gboolean optional = FALSE;
  guint count = 0;

  for (int i = 1; i < argc; i++)
    {
      if (strcmp (argv[i], "--optional") == 0)
        optional = TRUE;
      else if (!run_dir (argv[i], optional, &count))
        return 1;
    }
  if (count == 0)
    {
      fprintf (stderr, "no input at all\n");
      return 1;
    }
  return 0;
}
