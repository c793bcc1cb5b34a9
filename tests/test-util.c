/* Helpers the unit tests share. */
#include "test-util.h"

#include <check.h>
#include <glib/gstdio.h>

void
sp_test_remove_tree (const char *path)
{
  g_autoptr (GDir) dir = g_dir_open (path, 0, NULL);
  const char *name;

  while (dir && (name = g_dir_read_name (dir)))
    {
      g_autofree char *child = g_build_filename (path, name, NULL);

      if (g_file_test (child, G_FILE_TEST_IS_DIR))
        sp_test_remove_tree (child);
      else
        ck_assert_int_eq (g_unlink (child), 0);
    }
  ck_assert_int_eq (g_rmdir (path), 0);
}

static void
assert_data_eq (GBytes *a, GBytes *b)
{
  /* NULL (a no-op entry) and empty are different things */
  ck_assert_int_eq (a == NULL, b == NULL);
  if (a)
    ck_assert (g_bytes_equal (a, b));
}

void
sp_test_assert_entry_eq (const SpRaftEntry *a, const SpRaftEntry *b)
{
  ck_assert_uint_eq (a->term, b->term);
  ck_assert_uint_eq (a->index, b->index);
  ck_assert_int_eq (a->type, b->type);
  assert_data_eq (a->data, b->data);
  ck_assert_int_eq (a->conf == NULL, b->conf == NULL);
  if (a->conf)
    ck_assert (sp_raft_conf_equal (a->conf, b->conf));
}

void
sp_test_assert_snapshot_eq (const SpRaftSnapshot *a, const SpRaftSnapshot *b)
{
  ck_assert_uint_eq (a->index, b->index);
  ck_assert_uint_eq (a->term, b->term);
  ck_assert (sp_raft_conf_equal (&a->conf, &b->conf));
  ck_assert_uint_eq (a->conf.n_learners, b->conf.n_learners);
  assert_data_eq (a->data, b->data);
}

void
sp_test_assert_msg_eq (const SpRaftMsg *a, const SpRaftMsg *b)
{
  ck_assert_int_eq (a->type, b->type);
  ck_assert_uint_eq (a->from, b->from);
  ck_assert_uint_eq (a->to, b->to);
  ck_assert_uint_eq (a->term, b->term);
  ck_assert_uint_eq (a->log_term, b->log_term);
  ck_assert_uint_eq (a->index, b->index);
  ck_assert_uint_eq (a->commit, b->commit);
  ck_assert_uint_eq (a->hint_index, b->hint_index);
  ck_assert_uint_eq (a->context, b->context);
  ck_assert_int_eq (a->reject, b->reject);
  ck_assert_int_eq (a->force, b->force);
  ck_assert_uint_eq (a->entries ? a->entries->len : 0, b->entries ? b->entries->len : 0);
  for (guint i = 0; a->entries && i < a->entries->len; i++)
    sp_test_assert_entry_eq (&g_array_index (a->entries, SpRaftEntry, i),
                             &g_array_index (b->entries, SpRaftEntry, i));
  ck_assert_int_eq (a->snapshot == NULL, b->snapshot == NULL);
  if (a->snapshot)
    sp_test_assert_snapshot_eq (a->snapshot, b->snapshot);
}
