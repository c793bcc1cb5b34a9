/* Durable Raft state: real files in a temporary directory, callbacks
 * received by iterating a private main context. */
#include <check.h>
#include <errno.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage.h"
#include "wire.h"
#include "test-util.h"

static GMainContext *ctx;
static char *tmp_dir;
static char *data_dir; /* under tmp_dir, created by sp_storage_open */
static GPtrArray *warnings;

static void
on_warning (const char *domain, GLogLevelFlags level, const char *message, gpointer user_data)
{
  g_ptr_array_add (warnings, g_strdup (message));
}

static void
setup (void)
{
  ctx = g_main_context_new ();
  g_main_context_push_thread_default (ctx);
  tmp_dir = g_dir_make_tmp ("sp-storage-XXXXXX", NULL);
  ck_assert_ptr_nonnull (tmp_dir);
  data_dir = g_build_filename (tmp_dir, "data", NULL);
  warnings = g_ptr_array_new_with_free_func (g_free);
  g_log_set_handler (G_LOG_DOMAIN, G_LOG_LEVEL_WARNING, on_warning, NULL);
}

static void
teardown (void)
{
  sp_test_remove_tree (tmp_dir);
  g_clear_pointer (&tmp_dir, g_free);
  g_clear_pointer (&data_dir, g_free);
  g_clear_pointer (&warnings, g_ptr_array_unref);
  g_main_context_pop_thread_default (ctx);
  g_clear_pointer (&ctx, g_main_context_unref);
}

/* ---- helpers ------------------------------------------------------------ */

typedef struct
{
  guint calls;
  GError *error;         /* first one */
  GMainContext *context; /* of the last call */
} Done;

static void
on_done (GError *error, gpointer user_data)
{
  Done *d = user_data;

  d->calls++;
  d->context = g_source_get_context (g_main_current_source ());
  if (error && !d->error)
    d->error = g_error_copy (error);
}

/* Takes entries. */
static void
submit (SpStorage *storage, GArray *entries, const SpRaftHardState *hs, Done *d)
{
  sp_storage_persist (storage, NULL, entries, hs, on_done, d);
  g_array_unref (entries);
}

static void
wait_for (Done *d, guint calls)
{
  while (d->calls < calls)
    g_main_context_iteration (ctx, TRUE);
}

static SpStorage *
open_ok (SpStorageState *state)
{
  g_autoptr (GError) error = NULL;
  SpStorage *storage = sp_storage_open (data_dir, state, &error);

  ck_assert_msg (storage != NULL, "open: %s", error ? error->message : "");
  return storage;
}

static void
reopen (SpStorage **storage, SpStorageState *state)
{
  g_clear_pointer (storage, sp_storage_free);
  sp_storage_state_clear (state);
  *storage = open_ok (state);
}

static GError *
open_fails (void)
{
  g_auto (SpStorageState) state = { 0 };
  GError *error = NULL;
  SpStorage *storage = sp_storage_open (data_dir, &state, &error);

  ck_assert_ptr_null (storage);
  ck_assert_ptr_nonnull (error);
  return error;
}

static GBytes *
string_bytes (char *s)
{
  return g_bytes_new_take (s, strlen (s));
}

static GBytes *
entry_data (guint64 index, guint64 term)
{
  return string_bytes (
      g_strdup_printf ("entry %" G_GUINT64_FORMAT " of term %" G_GUINT64_FORMAT, index, term));
}

static SpRaftConf
test_conf (void)
{
  SpRaftConf conf = { .voters = { 1, 2, 3 }, .n_voters = 3, .learners = { 4 }, .n_learners = 1 };

  return conf;
}

/* Entry 1 is a configuration, entry 2 a leader's no-op, the rest data. */
static GArray *
make_entries (guint64 first, guint n, guint64 term)
{
  GArray *entries = sp_raft_entries_new (n);

  for (guint i = 0; i < n; i++)
    {
      SpRaftEntry e = { .term = term, .index = first + i, .type = SP_RAFT_ENTRY_NORMAL };

      if (e.index == 1)
        {
          e.type = SP_RAFT_ENTRY_CONF;
          e.conf = g_rc_box_new (SpRaftConf);
          *e.conf = test_conf ();
        }
      else if (e.index != 2)
        {
          e.data = entry_data (e.index, term);
        }
      g_array_append_val (entries, e);
    }
  return entries;
}

static void
check_entry (const SpRaftEntry *e, guint64 index, guint64 term)
{
  ck_assert_uint_eq (e->index, index);
  ck_assert_uint_eq (e->term, term);
  if (index == 1)
    {
      SpRaftConf conf = test_conf ();

      ck_assert_int_eq (e->type, SP_RAFT_ENTRY_CONF);
      ck_assert_ptr_nonnull (e->conf);
      ck_assert (sp_raft_conf_equal (e->conf, &conf));
    }
  else if (index == 2)
    {
      ck_assert_int_eq (e->type, SP_RAFT_ENTRY_NORMAL);
      ck_assert_ptr_null (e->data);
    }
  else
    {
      g_autoptr (GBytes) want = entry_data (index, term);

      ck_assert_int_eq (e->type, SP_RAFT_ENTRY_NORMAL);
      ck_assert_ptr_nonnull (e->data);
      ck_assert (g_bytes_equal (e->data, want));
    }
}

/* Checks entries [from, from + n) of the given term starting at position at. */
static void
check_entries (const GArray *entries, guint at, guint64 from, guint n, guint64 term)
{
  ck_assert_uint_ge (entries->len, at + n);
  for (guint i = 0; i < n; i++)
    check_entry (&g_array_index (entries, SpRaftEntry, at + i), from + i, term);
}

static void
persist_ok (SpStorage *storage, const SpRaftSnapshot *snapshot, GArray *entries,
            const SpRaftHardState *hs)
{
  Done d = { 0 };

  sp_storage_persist (storage, snapshot, entries, hs, on_done, &d);
  ck_assert_uint_eq (d.calls, 0); /* never synchronous */
  wait_for (&d, 1);
  ck_assert_msg (d.error == NULL, "persist: %s", d.error ? d.error->message : "");
  if (entries)
    g_array_unref (entries);
}

static void
compact_ok (SpStorage *storage, const SpRaftSnapshot *snapshot)
{
  Done d = { 0 };

  sp_storage_compact (storage, snapshot, on_done, &d);
  wait_for (&d, 1);
  ck_assert_msg (d.error == NULL, "compact: %s", d.error ? d.error->message : "");
}

static SpRaftSnapshot
make_snapshot (guint64 index, guint64 term)
{
  SpRaftSnapshot s = { .index = index, .term = term, .conf = test_conf () };

  s.data = string_bytes (g_strdup_printf ("state at %" G_GUINT64_FORMAT, index));
  return s;
}

static void
check_snapshot (const SpRaftSnapshot *got, const SpRaftSnapshot *want)
{
  ck_assert_ptr_nonnull (got);
  ck_assert_uint_eq (got->index, want->index);
  ck_assert_uint_eq (got->term, want->term);
  ck_assert (sp_raft_conf_equal (&got->conf, &want->conf));
  ck_assert (g_bytes_equal (got->data, want->data));
}

static char *
file_path (const char *name)
{
  return g_build_filename (data_dir, name, NULL);
}

static guint64
file_size (const char *name)
{
  g_autofree char *path = file_path (name);
  struct stat st;

  ck_assert_int_eq (stat (path, &st), 0);
  return (guint64)st.st_size;
}

static GBytes *
read_file (const char *name)
{
  g_autofree char *path = file_path (name);
  g_autoptr (GError) error = NULL;
  char *contents;
  gsize len;

  ck_assert_msg (g_file_get_contents (path, &contents, &len, &error), "%s", error->message);
  return g_bytes_new_take (contents, len);
}

static void
write_file (const char *name, const guint8 *data, gsize len)
{
  g_autofree char *path = file_path (name);
  g_autoptr (GError) error = NULL;

  ck_assert_msg (g_file_set_contents (path, (const char *)data, (gssize)len, &error), "%s",
                 error->message);
}

static guint32
le32 (const guint8 *p)
{
  return (guint32)p[0] | (guint32)p[1] << 8 | (guint32)p[2] << 16 | (guint32)p[3] << 24;
}

static guint32 ref_crc32c (const guint8 *p, gsize n);

static guint64
le64 (const guint8 *p)
{
  return (guint64)le32 (p) | (guint64)le32 (p + 4) << 32;
}

/* hardstate: two slots of HS_SLOT bytes, [magic][u32 version][u32 crc32c]
 * [u64 sequence][u32 length][payload]. */
#define HS_SLOT   4096
#define HS_HEADER 24

static guint64
hs_seq (GBytes *file, guint slot)
{
  return le64 ((const guint8 *)g_bytes_get_data (file, NULL) + slot * HS_SLOT + 12);
}

static gsize
hs_len (GBytes *file, guint slot)
{
  return le32 ((const guint8 *)g_bytes_get_data (file, NULL) + slot * HS_SLOT + 20);
}

/* The hard state in a slot, checked against the documented layout. */
static SpRaftHardState
hs_slot (GBytes *file, guint slot)
{
  const guint8 *p = (const guint8 *)g_bytes_get_data (file, NULL) + slot * HS_SLOT;
  gsize len = hs_len (file, slot);
  g_autoptr (GBytes) payload = NULL;
  g_autoptr (GError) error = NULL;
  SpRaftHardState hs = { 0 };

  ck_assert_uint_eq (g_bytes_get_size (file), 2 * HS_SLOT);
  ck_assert_int_eq (memcmp (p, "SPHS", 4), 0);
  ck_assert_uint_eq (le32 (p + 4), 2);
  ck_assert_uint_eq (le64 (p + 12) % 2, slot);
  ck_assert_uint_le (len, HS_SLOT - HS_HEADER);
  ck_assert_uint_eq (le32 (p + 8), ref_crc32c (p + 12, 12 + len));
  for (gsize i = HS_HEADER + len; i < HS_SLOT; i++)
    ck_assert_uint_eq (p[i], 0);
  payload = g_bytes_new (p + HS_HEADER, len);
  ck_assert_msg (sp_wire_hard_state_from_bytes (payload, &hs, &error), "%s", error->message);
  return hs;
}

static void
check_hs (const SpRaftHardState *got, const SpRaftHardState *want)
{
  ck_assert_uint_eq (got->term, want->term);
  ck_assert_uint_eq (got->vote, want->vote);
  ck_assert_uint_eq (got->commit, want->commit);
}

/* Record offsets in the log, walking the documented layout. */
static GArray *
log_offsets (void)
{
  g_autoptr (GBytes) log = read_file ("log");
  gsize size;
  const guint8 *p = g_bytes_get_data (log, &size);
  GArray *offsets = g_array_new (FALSE, FALSE, sizeof (gsize));

  for (gsize off = 0; off < size; off += 8 + le32 (p + off))
    g_array_append_val (offsets, off);
  return offsets;
}

/* A bit-at-a-time CRC-32C, independent of the table-driven one. */
static guint32
ref_crc32c (const guint8 *p, gsize n)
{
  guint32 crc = 0xffffffff;

  for (gsize i = 0; i < n; i++)
    {
      crc ^= p[i];
      for (int k = 0; k < 8; k++)
        crc = (crc >> 1) ^ (0x82f63b78 & -(crc & 1));
    }
  return ~crc;
}

static gboolean
warned (const char *a, const char *b, const char *c)
{
  for (guint i = 0; i < warnings->len; i++)
    {
      const char *w = warnings->pdata[i];

      if (strstr (w, a) && strstr (w, b) && (!c || strstr (w, c)))
        return TRUE;
    }
  return FALSE;
}

/* ---- tests -------------------------------------------------------------- */

START_TEST (test_fresh_open)
{
  g_auto (SpStorageState) state = { 0 };
  g_autoptr (SpStorage) storage = open_ok (&state);
  struct stat st;

  ck_assert_uint_eq (state.hard_state.term, 0);
  ck_assert_uint_eq (state.hard_state.vote, 0);
  ck_assert_uint_eq (state.hard_state.commit, 0);
  ck_assert_ptr_null (state.snapshot);
  ck_assert_ptr_nonnull (state.entries);
  ck_assert_uint_eq (state.entries->len, 0);
  ck_assert (!state.torn_tail_cut);
  ck_assert_uint_eq (sp_storage_log_size (storage), 0);
  ck_assert_int_eq (stat (data_dir, &st), 0);
  ck_assert_uint_eq (st.st_mode & 0777, 0700);
}
END_TEST

START_TEST (test_persist_reopen)
{
  g_auto (SpStorageState) state = { 0 };
  g_autoptr (SpStorage) storage = open_ok (&state);
  SpRaftHardState hs = { .term = 2, .vote = 3, .commit = 4 };

  persist_ok (storage, NULL, make_entries (1, 3, 1), NULL);
  persist_ok (storage, NULL, make_entries (4, 2, 2), &hs);
  ck_assert_uint_eq (sp_storage_log_size (storage), file_size ("log"));
  reopen (&storage, &state);

  ck_assert_uint_eq (state.hard_state.term, 2);
  ck_assert_uint_eq (state.hard_state.vote, 3);
  ck_assert_uint_eq (state.hard_state.commit, 4);
  ck_assert_ptr_null (state.snapshot);
  ck_assert_uint_eq (state.entries->len, 5);
  check_entries (state.entries, 0, 1, 3, 1);
  check_entries (state.entries, 3, 4, 2, 2);
  ck_assert (!state.torn_tail_cut);
  ck_assert_uint_eq (warnings->len, 0);
}
END_TEST

START_TEST (test_conflicting_append)
{
  g_auto (SpStorageState) state = { 0 };
  g_autoptr (SpStorage) storage = open_ok (&state);
  guint64 size;

  persist_ok (storage, NULL, make_entries (1, 6, 1), NULL);
  size = sp_storage_log_size (storage);
  persist_ok (storage, NULL, make_entries (4, 2, 2), NULL);
  ck_assert_uint_lt (sp_storage_log_size (storage), size);
  ck_assert_uint_eq (sp_storage_log_size (storage), file_size ("log"));
  reopen (&storage, &state);
  ck_assert_uint_eq (state.entries->len, 5);
  check_entries (state.entries, 0, 1, 3, 1);
  check_entries (state.entries, 3, 4, 2, 2);

  /* after a reopen the offsets come from the file */
  persist_ok (storage, NULL, make_entries (2, 1, 3), NULL);
  reopen (&storage, &state);
  ck_assert_uint_eq (state.entries->len, 2);
  check_entries (state.entries, 0, 1, 1, 1);
  check_entries (state.entries, 1, 2, 1, 3);

  /* a conflict inside one batch */
  {
    Done d = { 0 };

    submit (storage, make_entries (3, 4, 3), NULL, &d);
    submit (storage, make_entries (4, 1, 4), NULL, &d);
    wait_for (&d, 2);
    ck_assert_ptr_null (d.error);
  }
  reopen (&storage, &state);
  ck_assert_uint_eq (state.entries->len, 4);
  check_entries (state.entries, 2, 3, 1, 3);
  check_entries (state.entries, 3, 4, 1, 4);
}
END_TEST

START_TEST (test_leader_snapshot)
{
  g_auto (SpStorageState) state = { 0 };
  g_autoptr (SpStorage) storage = open_ok (&state);
  SpRaftHardState hs = { .term = 1, .commit = 2 };
  SpRaftSnapshot snap = make_snapshot (8, 2);
  SpRaftSnapshot inside = make_snapshot (3, 3);
  g_autoptr (GArray) offsets = NULL;

  persist_ok (storage, NULL, make_entries (1, 5, 1), &hs);
  hs = (SpRaftHardState){ .term = 2, .vote = 0, .commit = 8 };
  persist_ok (storage, &snap, make_entries (9, 2, 2), &hs);
  reopen (&storage, &state);
  check_snapshot (state.snapshot, &snap);
  ck_assert_uint_eq (state.hard_state.commit, 8);
  ck_assert_uint_eq (state.entries->len, 2);
  check_entries (state.entries, 0, 9, 2, 2);
  ck_assert_uint_eq (sp_storage_log_size (storage), file_size ("log"));
  offsets = log_offsets ();
  ck_assert_uint_eq (offsets->len, 2);

  /* a snapshot inside the stored log, disagreeing with it, drops it all */
  persist_ok (storage, NULL, make_entries (9, 5, 2), NULL);
  hs.term = 3;
  persist_ok (storage, &inside, NULL, &hs);
  ck_assert_uint_eq (sp_storage_log_size (storage), 0);
  reopen (&storage, &state);
  check_snapshot (state.snapshot, &inside);
  ck_assert_uint_eq (state.entries->len, 0);
  ck_assert_uint_eq (file_size ("log"), 0);

  g_bytes_unref (snap.data);
  g_bytes_unref (inside.data);
}
END_TEST

START_TEST (test_compact)
{
  g_auto (SpStorageState) state = { 0 };
  g_autoptr (SpStorage) storage = open_ok (&state);
  SpRaftSnapshot snap = make_snapshot (6, 1);
  guint64 before;

  persist_ok (storage, NULL, make_entries (1, 10, 1), NULL);
  before = sp_storage_log_size (storage);
  ck_assert_uint_eq (file_size ("log"), before);
  compact_ok (storage, &snap);
  ck_assert_uint_lt (sp_storage_log_size (storage), before);
  ck_assert_uint_eq (file_size ("log"), sp_storage_log_size (storage));
  reopen (&storage, &state);
  check_snapshot (state.snapshot, &snap);
  ck_assert_uint_eq (state.entries->len, 4);
  check_entries (state.entries, 0, 7, 4, 1);
  {
    g_autoptr (GArray) offsets = log_offsets ();

    ck_assert_uint_eq (offsets->len, 4);
  }

  /* the offset table follows the rewrite: a conflicting append lands right */
  persist_ok (storage, NULL, make_entries (9, 3, 2), NULL);
  reopen (&storage, &state);
  ck_assert_uint_eq (state.entries->len, 5);
  check_entries (state.entries, 0, 7, 2, 1);
  check_entries (state.entries, 2, 9, 3, 2);

  /* compacting past the end leaves an empty log */
  g_bytes_unref (snap.data);
  snap = make_snapshot (11, 2);
  compact_ok (storage, &snap);
  ck_assert_uint_eq (file_size ("log"), 0);
  persist_ok (storage, NULL, make_entries (12, 1, 2), NULL);
  reopen (&storage, &state);
  check_snapshot (state.snapshot, &snap);
  ck_assert_uint_eq (state.entries->len, 1);
  check_entries (state.entries, 0, 12, 1, 2);
  g_bytes_unref (snap.data);
}
END_TEST

START_TEST (test_compaction_lag)
{
  g_auto (SpStorageState) state = { 0 };
  g_autoptr (SpStorage) storage = open_ok (&state);
  SpRaftSnapshot snap = make_snapshot (5, 1);
  g_autofree char *snapshot_path = file_path ("snapshot");
  g_autofree char *log_path = file_path ("log");
  g_autoptr (GBytes) snapshot_file = NULL;
  g_autoptr (GArray) offsets = NULL;
  g_autoptr (GError) error = NULL;

  /* a snapshot stored, the log not yet rewritten (a crash in between) */
  persist_ok (storage, NULL, make_entries (1, 5, 1), NULL);
  compact_ok (storage, &snap);
  snapshot_file = read_file ("snapshot");
  g_clear_pointer (&storage, sp_storage_free);
  ck_assert_int_eq (g_unlink (snapshot_path), 0);
  ck_assert_int_eq (g_unlink (log_path), 0);
  sp_storage_state_clear (&state);
  storage = open_ok (&state);
  persist_ok (storage, NULL, make_entries (1, 8, 1), NULL);
  write_file ("snapshot", g_bytes_get_data (snapshot_file, NULL), g_bytes_get_size (snapshot_file));
  reopen (&storage, &state);
  check_snapshot (state.snapshot, &snap);
  ck_assert_uint_eq (state.entries->len, 3);
  check_entries (state.entries, 0, 6, 3, 1);

  /* a log wholly below the snapshot is replaced by entries after it */
  persist_ok (storage, NULL, make_entries (4, 1, 1), NULL);
  reopen (&storage, &state);
  ck_assert_uint_eq (state.entries->len, 0);
  persist_ok (storage, NULL, make_entries (6, 2, 2), NULL);
  reopen (&storage, &state);
  ck_assert_uint_eq (state.entries->len, 2);
  check_entries (state.entries, 0, 6, 2, 2);
  offsets = log_offsets ();
  ck_assert_uint_eq (offsets->len, 2);

  /* a log starting after the snapshot's successor has a gap */
  snap.index = 6;
  snap.term = 2;
  compact_ok (storage, &snap);
  persist_ok (storage, NULL, make_entries (8, 1, 2), NULL);
  g_clear_pointer (&storage, sp_storage_free);
  write_file ("snapshot", g_bytes_get_data (snapshot_file, NULL), g_bytes_get_size (snapshot_file));
  error = open_fails ();
  ck_assert (g_error_matches (error, SP_STORAGE_ERROR, SP_STORAGE_ERROR_CORRUPT));
  ck_assert_ptr_nonnull (strstr (error->message, "/log"));
  ck_assert_ptr_nonnull (strstr (error->message, "offset 0"));
  g_bytes_unref (snap.data);
}
END_TEST

START_TEST (test_torn_tail_short)
{
  g_auto (SpStorageState) state = { 0 };
  g_autoptr (SpStorage) storage = open_ok (&state);
  g_autoptr (GArray) offsets = NULL;
  g_autofree char *log = file_path ("log");
  g_autofree char *at = NULL, *dropped = NULL;
  guint64 size;
  gsize last;

  persist_ok (storage, NULL, make_entries (1, 5, 1), NULL);
  g_clear_pointer (&storage, sp_storage_free);
  offsets = log_offsets ();
  last = g_array_index (offsets, gsize, 4);
  size = file_size ("log");
  ck_assert_int_eq (truncate (log, (off_t)size - 3), 0);

  sp_storage_state_clear (&state);
  storage = open_ok (&state);
  ck_assert (state.torn_tail_cut);
  ck_assert_uint_eq (state.entries->len, 4);
  check_entries (state.entries, 0, 1, 4, 1);
  ck_assert_uint_eq (file_size ("log"), last);
  at = g_strdup_printf ("offset %" G_GSIZE_FORMAT, last);
  dropped = g_strdup_printf ("%" G_GUINT64_FORMAT " bytes", size - 3 - last);
  ck_assert_msg (warned (log, at, dropped), "no warning naming %s, %s, %s", log, at, dropped);

  /* repaired for good, and writable */
  reopen (&storage, &state);
  ck_assert (!state.torn_tail_cut);
  persist_ok (storage, NULL, make_entries (5, 1, 2), NULL);
  reopen (&storage, &state);
  ck_assert_uint_eq (state.entries->len, 5);
  check_entries (state.entries, 4, 5, 1, 2);
}
END_TEST

START_TEST (test_torn_tail_garbage)
{
  g_auto (SpStorageState) state = { 0 };
  g_autoptr (SpStorage) storage = open_ok (&state);
  g_autoptr (GBytes) good = NULL;
  g_autofree char *log = file_path ("log");
  g_autofree char *at = NULL;
  /* claims 100 payload bytes, holds 10 */
  const guint8 half[] = { 100, 0, 0, 0, 0xef, 0xbe, 0xad, 0xde, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 };
  guint8 zeros[4096] = { 0 };
  gsize len;

  persist_ok (storage, NULL, make_entries (1, 5, 1), NULL);
  g_clear_pointer (&storage, sp_storage_free);
  good = read_file ("log");
  at = g_strdup_printf ("offset %" G_GSIZE_FORMAT, g_bytes_get_size (good));

  for (guint round = 0; round < 2; round++)
    {
      GByteArray *bad = g_byte_array_new ();
      const guint8 *tail = round == 0 ? half : zeros;

      len = round == 0 ? sizeof half : sizeof zeros; /* zeros: allocated, never written */
      g_byte_array_append (bad, g_bytes_get_data (good, NULL), (guint)g_bytes_get_size (good));
      g_byte_array_append (bad, tail, (guint)len);
      write_file ("log", bad->data, bad->len);
      g_byte_array_unref (bad);
      g_ptr_array_set_size (warnings, 0);

      sp_storage_state_clear (&state);
      storage = open_ok (&state);
      ck_assert (state.torn_tail_cut);
      ck_assert_uint_eq (state.entries->len, 5);
      check_entries (state.entries, 0, 1, 5, 1);
      ck_assert_uint_eq (file_size ("log"), g_bytes_get_size (good));
      {
        g_autofree char *dropped = g_strdup_printf ("%" G_GSIZE_FORMAT " bytes", len);

        ck_assert (warned (log, at, dropped));
      }
      g_clear_pointer (&storage, sp_storage_free);
    }
}
END_TEST

START_TEST (test_corrupt_log)
{
  g_auto (SpStorageState) state = { 0 };
  g_autoptr (SpStorage) storage = open_ok (&state);
  g_autoptr (GBytes) good = NULL;
  g_autoptr (GArray) offsets = NULL;
  g_autofree char *log = file_path ("log");
  g_autofree char *at = NULL;
  gsize start, end;

  persist_ok (storage, NULL, make_entries (1, 5, 1), NULL);
  g_clear_pointer (&storage, sp_storage_free);
  good = read_file ("log");
  offsets = log_offsets ();
  start = g_array_index (offsets, gsize, 2);
  end = g_array_index (offsets, gsize, 3);
  at = g_strdup_printf ("offset %" G_GSIZE_FORMAT, start);

  /* every byte of the middle record: length, checksum and payload */
  for (gsize pos = start; pos < end; pos++)
    {
      g_autofree guint8 *bad = g_memdup2 (g_bytes_get_data (good, NULL), g_bytes_get_size (good));
      g_autoptr (GError) error = NULL;

      bad[pos] ^= 0xff;
      write_file ("log", bad, g_bytes_get_size (good));
      error = open_fails ();
      ck_assert_msg (g_error_matches (error, SP_STORAGE_ERROR, SP_STORAGE_ERROR_CORRUPT),
                     "byte %" G_GSIZE_FORMAT ": %s", pos, error->message);
      ck_assert_msg (strstr (error->message, log) && strstr (error->message, at),
                     "byte %" G_GSIZE_FORMAT ": %s", pos, error->message);
      /* nothing was cut */
      ck_assert_uint_eq (file_size ("log"), g_bytes_get_size (good));
    }
  ck_assert_uint_eq (warnings->len, 0);
}
END_TEST

static void
check_corrupt (const char *name, const guint8 *data, gsize len, guint64 offset)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *path = file_path (name);
  g_autofree char *at = g_strdup_printf ("offset %" G_GUINT64_FORMAT, offset);

  write_file (name, data, len);
  error = open_fails ();
  ck_assert_msg (g_error_matches (error, SP_STORAGE_ERROR, SP_STORAGE_ERROR_CORRUPT), "%s",
                 error->message);
  ck_assert_msg (strstr (error->message, path) && strstr (error->message, at), "%s",
                 error->message);
}

static void
check_header_damage (const char *name)
{
  g_autoptr (GBytes) good = read_file (name);
  gsize len = g_bytes_get_size (good);
  g_autofree guint8 *bad = g_malloc0 (len + 1);

  memcpy (bad, g_bytes_get_data (good, NULL), len);
  bad[len - 1] ^= 0x01; /* payload */
  check_corrupt (name, bad, len, 20);
  bad[len - 1] ^= 0x01;
  check_corrupt (name, bad, len + 1, 12); /* a byte too many */
  check_corrupt (name, bad, 10, 10);      /* cut inside the header */
  bad[4] = 9;                             /* version */
  check_corrupt (name, bad, len, 4);
  bad[0] = 'X'; /* magic */
  check_corrupt (name, bad, len, 0);
  write_file (name, g_bytes_get_data (good, NULL), len);
}

static void
check_hardstate_damage (void)
{
  g_autoptr (GBytes) good = read_file ("hardstate");
  gsize len = g_bytes_get_size (good);
  g_autofree guint8 *bad = g_malloc0 (len + 1);
  static const guint8 old_format[] = { 'S', 'P', 'H', 'S', 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 };

  ck_assert_uint_eq (len, 2 * HS_SLOT);
  memcpy (bad, g_bytes_get_data (good, NULL), len);
  check_corrupt ("hardstate", bad, len + 1, len);                /* a byte too many */
  check_corrupt ("hardstate", bad, HS_SLOT, HS_SLOT);            /* one slot only */
  check_corrupt ("hardstate", bad, 10, 10);                      /* cut inside a slot */
  check_corrupt ("hardstate", old_format, sizeof old_format, 4); /* the single-copy format */
  for (guint slot = 0; slot < 2; slot++)
    {
      guint8 *p = bad + slot * HS_SLOT;

      /* a torn write leaves magic and version as they were */
      p[4] = 9; /* version */
      check_corrupt ("hardstate", bad, len, slot * HS_SLOT + 4);
      p[4] = 2;
      p[0] = 'X'; /* magic */
      check_corrupt ("hardstate", bad, len, slot * HS_SLOT);
      p[0] = 'S';
    }
  write_file ("hardstate", g_bytes_get_data (good, NULL), len);
}

START_TEST (test_corrupt_hardstate_snapshot)
{
  g_auto (SpStorageState) state = { 0 };
  g_autoptr (SpStorage) storage = open_ok (&state);
  SpRaftHardState hs = { .term = 7, .vote = 2, .commit = 1 };
  SpRaftSnapshot snap = make_snapshot (1, 1);

  persist_ok (storage, NULL, make_entries (1, 1, 1), &hs);
  compact_ok (storage, &snap);
  g_clear_pointer (&storage, sp_storage_free);

  check_hardstate_damage ();
  check_header_damage ("snapshot");
  /* restored: opens again */
  reopen (&storage, &state);
  ck_assert_uint_eq (state.hard_state.term, 7);
  check_snapshot (state.snapshot, &snap);
  g_bytes_unref (snap.data);
}
END_TEST

START_TEST (test_file_format)
{
  g_auto (SpStorageState) state = { 0 };
  g_autoptr (SpStorage) storage = open_ok (&state);
  SpRaftHardState hs = { .term = 5, .vote = 1, .commit = 3 };
  g_autoptr (GArray) entries = make_entries (3, 1, 5);
  g_autoptr (GBytes) want_hs = sp_wire_hard_state_to_bytes (&hs);
  g_autoptr (GBytes) want_entry = sp_wire_entry_to_bytes (&g_array_index (entries, SpRaftEntry, 0));
  g_autoptr (GBytes) hs_file = NULL, log_file = NULL;
  const guint8 *p;
  gsize len;

  ck_assert_uint_eq (ref_crc32c ((const guint8 *)"123456789", 9), 0xe3069283);

  persist_ok (storage, NULL, make_entries (1, 3, 5), &hs);
  /* created with the first hard state in both slots, sequence numbers 0, 1 */
  hs_file = read_file ("hardstate");
  p = g_bytes_get_data (hs_file, &len);
  ck_assert_uint_eq (len, 2 * HS_SLOT);
  for (guint slot = 0; slot < 2; slot++)
    {
      SpRaftHardState got = hs_slot (hs_file, slot);

      check_hs (&got, &hs);
      ck_assert_uint_eq (hs_seq (hs_file, slot), slot);
      ck_assert_uint_eq (hs_len (hs_file, slot), g_bytes_get_size (want_hs));
      ck_assert_int_eq (memcmp (p + slot * HS_SLOT + HS_HEADER, g_bytes_get_data (want_hs, NULL),
                                g_bytes_get_size (want_hs)),
                        0);
    }
  /* the next one goes to slot 0, in place */
  {
    SpRaftHardState next = { .term = 6, .vote = 0, .commit = 3 };
    SpRaftHardState got;

    persist_ok (storage, NULL, NULL, &next);
    g_clear_pointer (&hs_file, g_bytes_unref);
    hs_file = read_file ("hardstate");
    ck_assert_uint_eq (hs_seq (hs_file, 0), 2);
    got = hs_slot (hs_file, 0);
    check_hs (&got, &next);
    ck_assert_uint_eq (hs_seq (hs_file, 1), 1);
    got = hs_slot (hs_file, 1);
    check_hs (&got, &hs);
  }

  log_file = read_file ("log");
  p = g_bytes_get_data (log_file, &len);
  {
    g_autoptr (GArray) offsets = log_offsets ();
    gsize off = g_array_index (offsets, gsize, 2);

    ck_assert_uint_eq (offsets->len, 3);
    ck_assert_uint_eq (le32 (p + off), g_bytes_get_size (want_entry));
    ck_assert_uint_eq (off + 8 + g_bytes_get_size (want_entry), len);
    ck_assert_uint_eq (le32 (p + off + 4), ref_crc32c (p + off + 8, len - off - 8));
    ck_assert_int_eq (memcmp (p + off + 8, g_bytes_get_data (want_entry, NULL), len - off - 8), 0);
  }
}
END_TEST

/* A crash while a slot is written, at every byte of it: the new hard state
 * where the slot reads whole, else the previous one, from the other slot. */
START_TEST (test_hardstate_torn_slot)
{
  g_auto (SpStorageState) state = { 0 };
  g_autoptr (SpStorage) storage = open_ok (&state);
  SpRaftHardState first = { .term = 2, .vote = 3, .commit = 4 };
  SpRaftHardState second = { .term = 3, .vote = 1, .commit = 9 };
  SpRaftHardState third = { .term = 4, .vote = 2, .commit = 10 };
  g_autoptr (GBytes) before = NULL, after = NULL;
  g_autofree char *path = file_path ("hardstate");
  g_autofree guint8 *bad = g_malloc (2 * HS_SLOT);
  guint tears = 0;

  persist_ok (storage, NULL, make_entries (1, 4, 2), &first);
  before = read_file ("hardstate");
  persist_ok (storage, NULL, NULL, &second);
  g_clear_pointer (&storage, sp_storage_free);
  after = read_file ("hardstate");
  /* sequence 2 replaced sequence 0 in slot 0 */
  ck_assert_uint_eq (hs_seq (before, 0), 0);
  ck_assert_uint_eq (hs_seq (after, 0), 2);
  ck_assert_uint_eq (hs_seq (after, 1), 1);

  /* the first cut bytes of slot 0 written, the rest as before */
  for (gsize cut = 0; cut <= HS_HEADER + hs_len (after, 0) + 1; cut++)
    {
      const guint8 *old = g_bytes_get_data (before, NULL);
      const guint8 *new = g_bytes_get_data (after, NULL);
      gboolean whole_new, whole_old;

      memcpy (bad, new, 2 * HS_SLOT);
      memcpy (bad + cut, old + cut, HS_SLOT - cut);
      whole_new = memcmp (bad, new, HS_SLOT) == 0;
      whole_old = memcmp (bad, old, HS_SLOT) == 0;
      write_file ("hardstate", bad, 2 * HS_SLOT);
      g_ptr_array_set_size (warnings, 0);
      sp_storage_state_clear (&state);
      storage = open_ok (&state);
      check_hs (&state.hard_state, whole_new ? &second : &first);
      if (whole_new || whole_old)
        {
          ck_assert_uint_eq (warnings->len, 0);
        }
      else
        {
          tears++;
          ck_assert_uint_eq (warnings->len, 1);
          ck_assert_msg (warned (path, "slot at offset 0 ", "at offset 4096"), "%s",
                         (char *)warnings->pdata[0]);
        }
      g_clear_pointer (&storage, sp_storage_free);
    }
  ck_assert_uint_gt (tears, 20);

  /* any damaged byte the newest slot's checksum covers (or the checksum) */
  for (gsize pos = 8; pos < HS_HEADER + hs_len (after, 0); pos++)
    {
      memcpy (bad, g_bytes_get_data (after, NULL), 2 * HS_SLOT);
      bad[pos] ^= 0x5a;
      write_file ("hardstate", bad, 2 * HS_SLOT);
      g_ptr_array_set_size (warnings, 0);
      sp_storage_state_clear (&state);
      storage = open_ok (&state);
      check_hs (&state.hard_state, &first);
      ck_assert_msg (warned (path, "slot at offset 0 ", NULL), "byte %" G_GSIZE_FORMAT, pos);
      g_clear_pointer (&storage, sp_storage_free);
    }

  /* the older slot damaged: the newest still counts */
  memcpy (bad, g_bytes_get_data (after, NULL), 2 * HS_SLOT);
  bad[HS_SLOT + HS_HEADER] ^= 0x01;
  write_file ("hardstate", bad, 2 * HS_SLOT);
  g_ptr_array_set_size (warnings, 0);
  sp_storage_state_clear (&state);
  storage = open_ok (&state);
  check_hs (&state.hard_state, &second);
  ck_assert (warned (path, "slot at offset 4096 ", NULL));
  g_clear_pointer (&storage, sp_storage_free);

  /* after falling back, the next write replaces the torn slot */
  memcpy (bad, g_bytes_get_data (after, NULL), 2 * HS_SLOT);
  bad[8] ^= 0x01; /* checksum */
  write_file ("hardstate", bad, 2 * HS_SLOT);
  sp_storage_state_clear (&state);
  storage = open_ok (&state);
  check_hs (&state.hard_state, &first);
  persist_ok (storage, NULL, NULL, &third);
  g_ptr_array_set_size (warnings, 0);
  reopen (&storage, &state);
  check_hs (&state.hard_state, &third);
  ck_assert_uint_eq (warnings->len, 0);
  ck_assert_uint_eq (state.entries->len, 4);
  {
    g_autoptr (GBytes) file = read_file ("hardstate");
    SpRaftHardState got = hs_slot (file, 0);

    ck_assert_uint_eq (hs_seq (file, 0), 2);
    check_hs (&got, &third);
  }
}
END_TEST

/* Both slots damaged: no hard state to trust, open fails. */
START_TEST (test_hardstate_both_slots_damaged)
{
  g_auto (SpStorageState) state = { 0 };
  g_autoptr (SpStorage) storage = open_ok (&state);
  SpRaftHardState hs = { .term = 5, .vote = 2, .commit = 7 };
  g_autoptr (GBytes) good = NULL;
  g_autofree char *path = file_path ("hardstate");
  g_autofree guint8 *bad = g_malloc (2 * HS_SLOT);
  /* checksum, sequence, length, payload */
  static const gsize positions[] = { 8, 11, 12, 19, 20, 23, HS_HEADER, HS_HEADER + 5 };

  for (guint i = 0; i < 3; i++)
    {
      hs.commit++;
      persist_ok (storage, NULL, NULL, &hs);
    }
  g_clear_pointer (&storage, sp_storage_free);
  good = read_file ("hardstate");

  for (guint i = 0; i < G_N_ELEMENTS (positions); i++)
    for (guint j = 0; j < G_N_ELEMENTS (positions); j++)
      {
        g_autoptr (GError) error = NULL;

        memcpy (bad, g_bytes_get_data (good, NULL), 2 * HS_SLOT);
        bad[positions[i]] ^= 0x80;
        bad[HS_SLOT + positions[j]] ^= 0x01;
        write_file ("hardstate", bad, 2 * HS_SLOT);
        error = open_fails ();
        ck_assert_msg (g_error_matches (error, SP_STORAGE_ERROR, SP_STORAGE_ERROR_CORRUPT), "%s",
                       error->message);
        ck_assert_msg (strstr (error->message, path) && strstr (error->message, "offset 0")
                           && strstr (error->message, "offset 4096")
                           && strstr (error->message, "both slots"),
                       "%s", error->message);
      }
  ck_assert_uint_eq (warnings->len, 0);

  /* restored: opens again */
  write_file ("hardstate", g_bytes_get_data (good, NULL), 2 * HS_SLOT);
  storage = open_ok (&state);
  check_hs (&state.hard_state, &hs);
  g_clear_pointer (&storage, sp_storage_free);

  /* an empty file was never written by us: no hard state yet, with a warning */
  write_file ("hardstate", NULL, 0);
  sp_storage_state_clear (&state);
  storage = open_ok (&state);
  ck_assert_uint_eq (state.hard_state.term, 0);
  ck_assert (warned (path, "empty", NULL));
  persist_ok (storage, NULL, NULL, &hs);
  reopen (&storage, &state);
  check_hs (&state.hard_state, &hs);
  ck_assert_uint_eq (file_size ("hardstate"), 2 * HS_SLOT);
}
END_TEST

/* Many writes and reopens: the slots alternate, in place, and each reopen
 * finds the newest hard state and goes on from its sequence number. */
/* A commit-only change is written without a sync into the slot that does
 * not hold the synced hard state, so tearing it loses only commit progress,
 * never a term or vote. */
START_TEST (test_hardstate_commit_only)
{
  g_auto (SpStorageState) state = { 0 };
  g_autoptr (SpStorage) storage = open_ok (&state);
  SpRaftHardState voted = { .term = 4, .vote = 2, .commit = 1 };
  SpRaftHardState hs = voted;
  g_autoptr (GBytes) file = NULL;
  g_autoptr (GBytes) torn = NULL;
  SpRaftHardState got;
  guint8 *bytes;
  gsize len;
  guint synced;

  persist_ok (storage, NULL, NULL, &hs);
  hs.term = 5;
  persist_ok (storage, NULL, NULL, &hs);
  voted = hs;
  file = read_file ("hardstate");
  synced = hs_seq (file, 0) > hs_seq (file, 1) ? 0 : 1;
  for (guint i = 2; i <= 6; i++)
    {
      hs.commit = i;
      persist_ok (storage, NULL, NULL, &hs);
    }
  g_clear_pointer (&file, g_bytes_unref);
  file = read_file ("hardstate");
  got = hs_slot (file, synced);
  check_hs (&got, &voted);
  got = hs_slot (file, !synced);
  check_hs (&got, &hs);
  ck_assert_uint_gt (hs_seq (file, !synced), hs_seq (file, synced));

  reopen (&storage, &state);
  check_hs (&state.hard_state, &hs);

  /* The unsynced slot torn (power lost before it reached the disk). */
  g_clear_pointer (&storage, sp_storage_free);
  sp_storage_state_clear (&state);
  bytes = g_bytes_unref_to_data (g_steal_pointer (&file), &len);
  bytes[!synced * HS_SLOT + HS_HEADER] ^= 0xff;
  write_file ("hardstate", bytes, len);
  g_free (bytes);
  g_ptr_array_set_size (warnings, 0);
  storage = open_ok (&state);
  check_hs (&state.hard_state, &voted);
  ck_assert_uint_eq (warnings->len, 1);

  /* A new vote after commit-only writes is synced, in the other slot. */
  hs = (SpRaftHardState){ .term = 6, .vote = 3, .commit = 7 };
  persist_ok (storage, NULL, NULL, &hs);
  hs.commit = 8;
  persist_ok (storage, NULL, NULL, &hs);
  torn = read_file ("hardstate");
  got = hs_slot (torn, !synced);
  ck_assert_uint_eq (got.term, 6);
  got = hs_slot (torn, synced);
  check_hs (&got, &hs);
}
END_TEST

START_TEST (test_hardstate_alternates)
{
  g_auto (SpStorageState) state = { 0 };
  g_autoptr (SpStorage) storage = open_ok (&state);
  g_autofree char *path = file_path ("hardstate");
  SpRaftHardState prev = { 0 };
  guint64 seq = 0;
  struct stat st;
  ino_t inode = 0;

  for (guint i = 1; i <= 60; i++)
    {
      SpRaftHardState hs = { .term = i / 3 + 1, .vote = i % 4, .commit = i };
      g_autoptr (GBytes) file = NULL;
      SpRaftHardState got;

      persist_ok (storage, NULL, NULL, &hs);
      /* two in a row, at times, before the reopen */
      if (i % 5 == 0)
        {
          prev = hs;
          hs.commit += 1000;
          persist_ok (storage, NULL, NULL, &hs);
          seq++;
        }
      seq = i == 1 ? 1 : seq + 1;
      reopen (&storage, &state);
      check_hs (&state.hard_state, &hs);

      file = read_file ("hardstate");
      ck_assert_uint_eq (hs_seq (file, seq % 2), seq);
      got = hs_slot (file, seq % 2);
      check_hs (&got, &hs);
      ck_assert_uint_eq (hs_seq (file, (seq + 1) % 2), seq - 1);
      got = hs_slot (file, (seq + 1) % 2);
      check_hs (&got, i == 1 ? &hs : &prev);
      prev = hs;

      /* the same file throughout: written in place, never replaced */
      ck_assert_int_eq (stat (path, &st), 0);
      if (i == 1)
        inode = st.st_ino;
      ck_assert_uint_eq (st.st_ino, inode);
      ck_assert_uint_eq (st.st_size, 2 * HS_SLOT);
    }
  ck_assert_uint_eq (warnings->len, 0);
}
END_TEST

typedef struct
{
  GArray *order;
  guint index;
} Ordered;

static void
on_ordered (GError *error, gpointer user_data)
{
  Ordered *o = user_data;

  ck_assert_ptr_null (error);
  g_array_append_val (o->order, o->index);
}

START_TEST (test_batching)
{
  g_auto (SpStorageState) state = { 0 };
  g_autoptr (SpStorage) storage = open_ok (&state);
  g_autoptr (GArray) order = g_array_new (FALSE, FALSE, sizeof (guint));
  Ordered calls[100];
  guint before = sp_storage_sync_count (storage);

  /* one loop iteration's worth of submissions */
  for (guint i = 0; i < G_N_ELEMENTS (calls); i++)
    {
      g_autoptr (GArray) entries = make_entries (i + 1, 1, 1);
      SpRaftHardState hs = { .term = 1, .commit = i };

      calls[i] = (Ordered){ order, i };
      sp_storage_persist (storage, NULL, entries, &hs, on_ordered, &calls[i]);
    }
  while (order->len < G_N_ELEMENTS (calls))
    g_main_context_iteration (ctx, TRUE);
  for (guint i = 0; i < order->len; i++)
    ck_assert_uint_eq (g_array_index (order, guint, i), i);
  /* submitted in one iteration: written as one batch, one log fsync */
  ck_assert_uint_eq (sp_storage_sync_count (storage) - before, 1);

  reopen (&storage, &state);
  ck_assert_uint_eq (state.entries->len, 100);
  check_entries (state.entries, 2, 3, 98, 1);
  ck_assert_uint_eq (state.hard_state.commit, 99);
}
END_TEST

typedef struct
{
  SpStorage *storage;
  Done *done;
  guint ticks;
  guint syncs;
} Ticker;

static gboolean
on_tick (gpointer user_data)
{
  Ticker *t = user_data;

  if (++t->ticks == 5)
    {
      /* the loop ran on while the write was stuck */
      ck_assert_uint_eq (t->done->calls, 0);
      ck_assert_uint_eq (sp_storage_sync_count (t->storage), t->syncs);
      sp_storage_hold_writes (t->storage, FALSE);
    }
  return G_SOURCE_CONTINUE;
}

START_TEST (test_loop_runs_during_write)
{
  g_auto (SpStorageState) state = { 0 };
  g_autoptr (SpStorage) storage = open_ok (&state);
  g_autoptr (GSource) timeout = g_timeout_source_new (1);
  Done d = { 0 };
  Ticker t = { storage, &d, 0, sp_storage_sync_count (storage) };

  g_source_set_callback (timeout, on_tick, &t, NULL);
  g_source_attach (timeout, ctx);
  sp_storage_hold_writes (storage, TRUE);
  submit (storage, make_entries (1, 3, 1), NULL, &d);
  wait_for (&d, 1);
  ck_assert_ptr_null (d.error);
  ck_assert_uint_ge (t.ticks, 5);
  g_source_destroy (timeout);
}
END_TEST

START_TEST (test_callback_context)
{
  g_auto (SpStorageState) state = { 0 };
  g_autoptr (SpStorage) storage = open_ok (&state);
  g_autoptr (GMainContext) other = g_main_context_new ();
  Done d = { 0 };

  g_main_context_push_thread_default (other);
  submit (storage, make_entries (1, 1, 1), NULL, &d);
  g_main_context_pop_thread_default (other);
  while (d.calls == 0)
    g_main_context_iteration (other, TRUE);
  ck_assert_ptr_null (d.error);
  ck_assert_ptr_eq (d.context, other);
}
END_TEST

START_TEST (test_free_drains)
{
  g_auto (SpStorageState) state = { 0 };
  g_autoptr (SpStorage) storage = open_ok (&state);
  SpRaftHardState hs = { .term = 4 };
  Done d = { 0 };

  submit (storage, make_entries (1, 2, 1), &hs, &d);
  g_clear_pointer (&storage, sp_storage_free); /* before the loop ran at all */
  wait_for (&d, 1);
  ck_assert_ptr_null (d.error);
  sp_storage_state_clear (&state);
  storage = open_ok (&state);
  ck_assert_uint_eq (state.entries->len, 2);
  ck_assert_uint_eq (state.hard_state.term, 4);
}
END_TEST

START_TEST (test_gap_fails)
{
  g_auto (SpStorageState) state = { 0 };
  g_autoptr (SpStorage) storage = open_ok (&state);
  Done d = { 0 };

  submit (storage, make_entries (3, 2, 1), NULL, &d);
  wait_for (&d, 1);
  ck_assert_ptr_nonnull (d.error);
  ck_assert_ptr_nonnull (strstr (d.error->message, "start at 3"));
  g_clear_error (&d.error);
  /* nothing is written after a failure */
  submit (storage, make_entries (1, 2, 1), NULL, &d);
  wait_for (&d, 2);
  ck_assert (g_error_matches (d.error, SP_STORAGE_ERROR, SP_STORAGE_ERROR_IO));
  g_clear_error (&d.error);
  ck_assert_uint_eq (file_size ("log"), 0);
}
END_TEST

START_TEST (test_implied_term)
{
  g_auto (SpStorageState) state = { 0 };
  g_autoptr (SpStorage) storage = open_ok (&state);
  SpRaftHardState old = { .term = 2, .vote = 5, .commit = 1 };
  SpRaftHardState hs = { .term = 3, .vote = 1, .commit = 2 };
  g_autoptr (GBytes) old_file = NULL, new_file = NULL;

  persist_ok (storage, NULL, make_entries (1, 2, 2), &old);
  old_file = read_file ("hardstate");
  persist_ok (storage, NULL, make_entries (3, 1, 3), &hs);
  g_clear_pointer (&storage, sp_storage_free);
  new_file = read_file ("hardstate");

  for (guint round = 0; round < 2; round++)
    {
      if (round == 0)
        {
          /* the log's fdatasync landed, the hard state's write was torn */
          g_autofree guint8 *bad = g_memdup2 (g_bytes_get_data (new_file, NULL), 2 * HS_SLOT);

          ck_assert_uint_eq (hs_seq (new_file, 0), 2);
          bad[HS_HEADER] ^= 0xff;
          write_file ("hardstate", bad, 2 * HS_SLOT);
        }
      else
        {
          /* or never reached the disk */
          write_file ("hardstate", g_bytes_get_data (old_file, NULL), g_bytes_get_size (old_file));
        }
      g_ptr_array_set_size (warnings, 0);
      sp_storage_state_clear (&state);
      storage = open_ok (&state);
      ck_assert_uint_eq (state.hard_state.term, 3);
      ck_assert_uint_eq (state.hard_state.vote, 0);
      ck_assert_uint_eq (state.hard_state.commit, 1);
      ck_assert_uint_eq (warnings->len, round == 0 ? 2 : 1);
      ck_assert (warned ("term 2 is older", "term 3 with no vote", NULL));
      g_clear_pointer (&storage, sp_storage_free);
    }
}
END_TEST

/* Random appends, leader snapshots and compactions, several per loop
 * iteration at times, checked against a model after every reopen. */
START_TEST (test_random_model)
{
  g_auto (SpStorageState) state = { 0 };
  g_autoptr (SpStorage) storage = open_ok (&state);
  g_autoptr (GRand) rand = g_rand_new_with_seed (7);
  g_autoptr (GArray) terms = g_array_new (FALSE, TRUE, sizeof (guint64)); /* [i]: entry i's */
  guint64 snap_index = 0, snap_term = 0, last = 0, term = 1;
  Done d = { 0 };
  guint submitted = 0;

  g_array_set_size (terms, 1);
  for (guint step = 0; step < 300; step++)
    {
      guint op = (guint)g_rand_int_range (rand, 0, 10);

      if (g_rand_int_range (rand, 0, 4) == 0)
        term++;
      if (op < 6)
        {
          guint64 first
              = (guint64)g_rand_int_range (rand, (gint32)snap_index + 1, (gint32)last + 2);
          guint n = (guint)g_rand_int_range (rand, 1, 6);

          submit (storage, make_entries (first, n, term), NULL, &d);
          submitted++;
          last = first + n - 1;
          g_array_set_size (terms, (guint)last + 1);
          for (guint64 i = first; i <= last; i++)
            g_array_index (terms, guint64, i) = term;
        }
      else if (op < 8 && last > snap_index)
        {
          SpRaftSnapshot snap = make_snapshot (
              (guint64)g_rand_int_range (rand, (gint32)snap_index + 1, (gint32)last + 1), 0);

          snap.term = g_array_index (terms, guint64, snap.index);
          sp_storage_compact (storage, &snap, on_done, &d);
          submitted++;
          snap_index = snap.index;
          snap_term = snap.term;
          g_bytes_unref (snap.data);
        }
      else if (op == 8)
        {
          SpRaftSnapshot snap
              = make_snapshot (last + (guint64)g_rand_int_range (rand, 0, 4) + 1, term);

          if (last > snap_index && g_rand_boolean (rand))
            snap.index = last; /* inside the stored log */
          sp_storage_persist (storage, &snap, NULL, NULL, on_done, &d);
          submitted++;
          snap_index = last = snap.index;
          snap_term = term;
          g_array_set_size (terms, (guint)last + 1);
          g_bytes_unref (snap.data);
        }
      else
        {
          continue;
        }
      if (g_rand_int_range (rand, 0, 3) == 0)
        wait_for (&d, submitted);
      if (g_rand_int_range (rand, 0, 10) == 0)
        {
          wait_for (&d, submitted);
          ck_assert_msg (d.error == NULL, "%s", d.error ? d.error->message : "");
          reopen (&storage, &state);
          ck_assert_uint_eq (state.snapshot ? state.snapshot->index : 0, snap_index);
          ck_assert_uint_eq (state.snapshot ? state.snapshot->term : 0, snap_term);
          ck_assert_uint_eq (state.entries->len, last - snap_index);
          for (guint i = 0; i < state.entries->len; i++)
            check_entry (&g_array_index (state.entries, SpRaftEntry, i), snap_index + 1 + i,
                         g_array_index (terms, guint64, snap_index + 1 + i));
          ck_assert_uint_eq (sp_storage_log_size (storage), file_size ("log"));
        }
    }
  wait_for (&d, submitted);
  ck_assert_ptr_null (d.error);
}
END_TEST

int
main (void)
{
  Suite *s = suite_create ("storage");
  TCase *tc = tcase_create ("storage");
  SRunner *sr;
  int failed;

  tcase_add_checked_fixture (tc, setup, teardown);
  tcase_set_timeout (tc, 60);
  tcase_add_test (tc, test_fresh_open);
  tcase_add_test (tc, test_persist_reopen);
  tcase_add_test (tc, test_conflicting_append);
  tcase_add_test (tc, test_leader_snapshot);
  tcase_add_test (tc, test_compact);
  tcase_add_test (tc, test_compaction_lag);
  tcase_add_test (tc, test_torn_tail_short);
  tcase_add_test (tc, test_torn_tail_garbage);
  tcase_add_test (tc, test_corrupt_log);
  tcase_add_test (tc, test_corrupt_hardstate_snapshot);
  tcase_add_test (tc, test_file_format);
  tcase_add_test (tc, test_hardstate_torn_slot);
  tcase_add_test (tc, test_hardstate_both_slots_damaged);
  tcase_add_test (tc, test_hardstate_alternates);
  tcase_add_test (tc, test_hardstate_commit_only);
  tcase_add_test (tc, test_batching);
  tcase_add_test (tc, test_loop_runs_during_write);
  tcase_add_test (tc, test_callback_context);
  tcase_add_test (tc, test_free_drains);
  tcase_add_test (tc, test_gap_fails);
  tcase_add_test (tc, test_implied_term);
  tcase_add_test (tc, test_random_model);
  suite_add_tcase (s, tc);
  sr = srunner_create (s);
  srunner_run_all (sr, CK_NORMAL);
  failed = srunner_ntests_failed (sr);
  srunner_free (sr);
  return failed == 0 ? 0 : 1;
}
