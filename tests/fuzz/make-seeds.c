/* Writes the seed corpora of the fuzz harnesses (tests/fuzz/corpus/NAME/)
 * from the project's own encoders, so that the seeds are what sparrowd
 * writes and sends: one Raft message of every kind, log entries, hard
 * states, snapshots, whole data directories, store commands and
 * snapshots, and transport streams (a hello then frames).  The config
 * seeds are text, committed as written.  Run from the build directory:
 *   tests/fuzz/make-seeds ../tests/fuzz/corpus */
#include <glib/gstdio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage.h"
#include "store.h"
#include "wire.h"

static const char *out_dir;

static void
save (const char *corpus, const char *name, const void *data, gsize size)
{
  g_autofree char *dir = g_build_filename (out_dir, corpus, NULL);
  g_autofree char *path = g_build_filename (dir, name, NULL);
  g_autoptr (GError) error = NULL;

  g_mkdir_with_parents (dir, 0755);
  if (!g_file_set_contents (path, data, (gssize)size, &error))
    g_error ("%s", error->message);
}

/* The wire harness reads the rest as kind (0 message, 1 entry, 2 hard
 * state, 3 snapshot). */
static void
save_wire (const char *name, guint8 kind, GBytes *bytes)
{
  gsize size;
  const guint8 *p = g_bytes_get_data (bytes, &size);
  g_autofree guint8 *buf = g_malloc (size + 1);

  buf[0] = kind;
  memcpy (buf + 1, p, size);
  save ("wire", name, buf, size + 1);
}

static SpRaftConf
conf_of (guint n_voters, guint n_learners)
{
  SpRaftConf c = { 0 };

  for (guint i = 0; i < n_voters; i++)
    c.voters[c.n_voters++] = i + 1;
  for (guint i = 0; i < n_learners; i++)
    c.learners[c.n_learners++] = n_voters + i + 1;
  return c;
}

static GArray *
entries_new (guint64 first, guint n)
{
  GArray *entries = sp_raft_entries_new (n);

  for (guint i = 0; i < n; i++)
    {
      SpRaftEntry e = { .term = 2, .index = first + i, .type = SP_RAFT_ENTRY_NORMAL };

      if (i % 3 == 1)
        e.data = sp_store_cmd_set ("vip", "10.77.0.100", NULL);
      else if (i % 3 == 2)
        {
          SpRaftConf c = conf_of (3, 1);

          e.type = SP_RAFT_ENTRY_CONF;
          e.conf = g_rc_box_dup (sizeof c, &c);
          e.data = sp_store_cmd_member ("delta", "127.0.0.4:7400", NULL);
        }
      g_array_append_val (entries, e);
    }
  return entries;
}

static void
apply (SpStore *store, GBytes *cmd)
{
  if (!sp_store_apply (store, cmd, NULL, NULL))
    g_error ("a seed command did not apply");
  g_bytes_unref (cmd);
}

static SpRaftSnapshot *
snapshot_new (guint64 index)
{
  SpRaftSnapshot *s = g_new0 (SpRaftSnapshot, 1);
  g_autoptr (SpStore) store = sp_store_new ();

  apply (store, sp_store_cmd_set ("a", "1", NULL));
  s->index = index;
  s->term = 2;
  s->conf = conf_of (3, 0);
  s->data = sp_store_snapshot (store);
  return s;
}

static SpRaftMsg
msg_of (SpRaftMsgType type)
{
  SpRaftMsg m = { .type = type,
                  .from = 2,
                  .to = 1,
                  .term = 3,
                  .log_term = 2,
                  .index = 7,
                  .commit = 5,
                  .hint_index = 4,
                  .context = 9 };

  m.reject = type == SP_RAFT_MSG_APPEND_RESP;
  m.force = type == SP_RAFT_MSG_VOTE;
  return m;
}

static void
wire_seeds (void)
{
  SpRaftHardState hs = { .term = 3, .vote = 2, .commit = 7 };
  g_autoptr (GArray) entries = entries_new (8, 3);
  g_autoptr (SpRaftSnapshot) snap = snapshot_new (7);
  g_autoptr (GBytes) hs_bytes = sp_wire_hard_state_to_bytes (&hs);
  g_autoptr (GBytes) snap_bytes = sp_wire_snapshot_to_bytes (snap);

  for (int type = 0; type < SP_RAFT_MSG_N_TYPES; type++)
    {
      SpRaftMsg m = msg_of (type);
      g_autoptr (GBytes) bytes = NULL;
      g_autofree char *name = g_strdup_printf ("msg-%s", sp_raft_msg_type_to_string (type));

      if (type == SP_RAFT_MSG_APPEND)
        m.entries = entries;
      if (type == SP_RAFT_MSG_SNAPSHOT)
        m.snapshot = snap;
      bytes = sp_wire_msg_to_bytes (&m);
      save_wire (name, 0, bytes);
    }
  for (guint i = 0; i < entries->len; i++)
    {
      g_autoptr (GBytes) bytes = sp_wire_entry_to_bytes (&g_array_index (entries, SpRaftEntry, i));
      g_autofree char *name = g_strdup_printf ("entry-%u", i);

      save_wire (name, 1, bytes);
    }
  save_wire ("hardstate", 2, hs_bytes);
  save_wire ("snapshot", 3, snap_bytes);
}

static GBytes *
read_file (const char *dir, const char *name)
{
  g_autofree char *path = g_build_filename (dir, name, NULL);
  char *data = NULL;
  gsize size = 0;

  if (!g_file_get_contents (path, &data, &size, NULL))
    return NULL;
  return g_bytes_new_take (data, size);
}

static void
append_u32 (GByteArray *out, guint32 v)
{
  guint8 b[4] = { v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, v >> 24 };

  g_byte_array_append (out, b, 4);
}

static void
on_done (GError *error, gpointer user_data)
{
  if (error)
    g_error ("%s", error->message);
  *(gboolean *)user_data = TRUE;
}

/* A data directory as sparrowd leaves it, packed as the storage harness
 * reads it: [files][log length][snapshot length] log snapshot hardstate. */
static void
storage_seed (const char *name, gboolean with_snapshot)
{
  g_autofree char *dir = g_dir_make_tmp ("sparrow-seed-XXXXXX", NULL);
  g_auto (SpStorageState) state = { 0 };
  g_autoptr (SpStorage) storage = sp_storage_open (dir, &state, NULL);
  g_autoptr (GArray) entries = entries_new (with_snapshot ? 8 : 1, 4);
  g_autoptr (SpRaftSnapshot) snap = with_snapshot ? snapshot_new (7) : NULL;
  SpRaftHardState hs = { .term = 2, .vote = 1, .commit = 3 };
  g_autoptr (GByteArray) out = g_byte_array_new ();
  g_autoptr (GBytes) log = NULL;
  g_autoptr (GBytes) snapshot = NULL;
  g_autoptr (GBytes) hardstate = NULL;
  const char *names[] = { "log", "snapshot", "hardstate" };
  gboolean done = FALSE;
  guint8 files = 0;

  if (!storage)
    g_error ("cannot open %s", dir);
  sp_storage_persist (storage, snap, entries, &hs, on_done, &done);
  while (!done)
    g_main_context_iteration (NULL, TRUE);
  g_clear_pointer (&storage, sp_storage_free);
  log = read_file (dir, "log");
  snapshot = read_file (dir, "snapshot");
  hardstate = read_file (dir, "hardstate");
  files = (log ? 1 : 0) | (snapshot ? 2 : 0) | (hardstate ? 4 : 0);
  g_byte_array_append (out, &files, 1);
  append_u32 (out, log ? g_bytes_get_size (log) : 0);
  append_u32 (out, snapshot ? g_bytes_get_size (snapshot) : 0);
  if (log)
    g_byte_array_append (out, g_bytes_get_data (log, NULL), g_bytes_get_size (log));
  if (snapshot)
    g_byte_array_append (out, g_bytes_get_data (snapshot, NULL), g_bytes_get_size (snapshot));
  if (hardstate)
    g_byte_array_append (out, g_bytes_get_data (hardstate, NULL), g_bytes_get_size (hardstate));
  save ("storage", name, out->data, out->len);
  for (guint i = 0; i < G_N_ELEMENTS (names); i++)
    {
      g_autofree char *path = g_build_filename (dir, names[i], NULL);

      g_unlink (path);
    }
  g_rmdir (dir);
}

/* Store records as the store harness reads them: [op][length u16] bytes. */
static void
append_record (GByteArray *out, guint8 op, GBytes *bytes)
{
  gsize size = g_bytes_get_size (bytes);
  guint8 head[3] = { op, size & 0xff, (size >> 8) & 0xff };

  g_byte_array_append (out, head, 3);
  g_byte_array_append (out, g_bytes_get_data (bytes, NULL), size);
  g_bytes_unref (bytes);
}

static void
store_seeds (void)
{
  g_autoptr (GByteArray) cmds = g_byte_array_new ();
  g_autoptr (GByteArray) restore = g_byte_array_new ();
  g_autoptr (SpStore) store = sp_store_new ();

  append_record (cmds, 0, sp_store_cmd_set ("vip", "10.77.0.100", NULL));
  append_record (cmds, 0, sp_store_cmd_set ("other", "x", NULL));
  append_record (cmds, 0, sp_store_cmd_cas ("lock", 0, "alpha", NULL));
  append_record (cmds, 0, sp_store_cmd_cas ("lock", 3, "beta", NULL));
  append_record (cmds, 0, sp_store_cmd_delete ("other", NULL));
  append_record (cmds, 0, sp_store_cmd_member ("delta", "127.0.0.4:7400", NULL));
  append_record (cmds, 0, sp_store_cmd_member ("epsilon", "[::1]:7400", NULL));
  append_record (cmds, 0, sp_store_cmd_member_address ("delta", "127.0.0.5:7400", NULL));
  save ("store", "commands", cmds->data, cmds->len);

  apply (store, sp_store_cmd_set ("vip", "10.77.0.100", NULL));
  apply (store, sp_store_cmd_member ("delta", "127.0.0.4:7400", NULL));
  append_record (restore, 1, sp_store_snapshot (store));
  append_record (restore, 0, sp_store_cmd_set ("after", "restore", NULL));
  save ("store", "restore", restore->data, restore->len);
}

static void
append_frame (GByteArray *out, GBytes *payload)
{
  guint8 head[4];

  sp_wire_frame_header (g_bytes_get_size (payload), head);
  g_byte_array_append (out, head, 4);
  g_byte_array_append (out, g_bytes_get_data (payload, NULL), g_bytes_get_size (payload));
}

/* The transport's hello: (qts) version, id, member name. */
static GBytes *
hello_new (guint64 id, const char *name)
{
  g_autoptr (GVariant) v = g_variant_ref_sink (g_variant_new ("(qts)", SP_WIRE_VERSION, id, name));
  g_autoptr (GVariant) le
      = G_BYTE_ORDER == G_BIG_ENDIAN ? g_variant_byteswap (v) : g_variant_ref (v);

  return g_variant_get_data_as_bytes (le);
}

/* Transport streams: [cutting seed] then a hello and frames. */
static void
transport_seed (const char *name, guint8 cut, guint64 id, const char *member, gboolean large)
{
  g_autoptr (GByteArray) out = g_byte_array_new ();
  g_autoptr (GBytes) hello = hello_new (id, member);

  g_byte_array_append (out, &cut, 1);
  append_frame (out, hello);
  for (int type = 0; type < SP_RAFT_MSG_N_TYPES; type++)
    {
      SpRaftMsg m = msg_of (type);
      g_autoptr (GArray) entries = NULL;
      g_autoptr (SpRaftSnapshot) snap = NULL;
      g_autoptr (GBytes) bytes = NULL;

      m.from = id;
      if (type == SP_RAFT_MSG_APPEND)
        m.entries = entries = entries_new (8, large ? 200 : 2);
      if (type == SP_RAFT_MSG_SNAPSHOT)
        m.snapshot = snap = snapshot_new (7);
      bytes = sp_wire_msg_to_bytes (&m);
      append_frame (out, bytes);
    }
  save ("transport", name, out->data, out->len);
}

int
main (int argc, char **argv)
{
  if (argc != 2)
    {
      fprintf (stderr, "usage: %s CORPUS_DIR\n", argv[0]);
      return 2;
    }
  out_dir = argv[1];
  wire_seeds ();
  storage_seed ("log-only", FALSE);
  storage_seed ("with-snapshot", TRUE);
  store_seeds ();
  transport_seed ("peer-whole", 0, 2, "beta", FALSE);
  transport_seed ("peer-pieces", 3, 2, "beta", FALSE);
  transport_seed ("peer-large", 40, 2, "beta", TRUE);
  transport_seed ("stranger", 1, 7, "eta", FALSE);
  return 0;
}
