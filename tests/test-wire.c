/* The GVariant codec: round trips, and what a broken or hostile peer or a
 * damaged disk can hand it. */
#include <check.h>
#include <string.h>

#include "wire.h"
#include "test-util.h"

/* The documented formats, to build records the encoder refuses to make. */
#define ENTRY_TYPE "(ttymaym(atat))"
/* a SNAPSHOT message with the configuration given as two variants */
#define MSG_CONF_ARGS "(@at(tt(@at@at)may))"
/* the values of a message header, in order */
#define HEADER_LEN 11

static SpRaftConf *
new_conf (guint n_voters, guint n_learners)
{
  SpRaftConf *c = g_rc_box_new0 (SpRaftConf);

  for (guint i = 0; i < n_voters; i++)
    c->voters[c->n_voters++] = 100 + i;
  for (guint i = 0; i < n_learners; i++)
    c->learners[c->n_learners++] = 200 + i;
  return c;
}

static SpRaftEntry
normal_entry (guint64 term, guint64 index, const char *data)
{
  SpRaftEntry e = { .term = term, .index = index, .type = SP_RAFT_ENTRY_NORMAL };

  if (data)
    e.data = g_bytes_new (data, strlen (data));
  return e;
}

static SpRaftEntry
conf_entry (guint64 term, guint64 index, guint n_voters, guint n_learners)
{
  SpRaftEntry e = { .term = term, .index = index, .type = SP_RAFT_ENTRY_CONF };

  e.conf = new_conf (n_voters, n_learners);
  return e;
}

/* A configuration that carries the application's data with it. */
static SpRaftEntry
conf_data_entry (guint64 term, guint64 index, const char *data)
{
  SpRaftEntry e = conf_entry (term, index, 3, 2);

  e.data = g_bytes_new (data, strlen (data));
  return e;
}

static SpRaftSnapshot *
new_snapshot (guint64 index, guint64 term, const char *data)
{
  SpRaftSnapshot *s = g_new0 (SpRaftSnapshot, 1);

  s->index = index;
  s->term = term;
  s->conf.voters[s->conf.n_voters++] = 1;
  s->conf.voters[s->conf.n_voters++] = 2;
  s->conf.learners[s->conf.n_learners++] = 9;
  if (data)
    s->data = g_bytes_new (data, strlen (data));
  return s;
}

/* Every kind of entry: data, NULL data (no-op), empty data, configuration,
 * configuration with data and with empty data. */
static GArray *
sample_entries (guint64 first)
{
  GArray *a = sp_raft_entries_new (6);
  SpRaftEntry e[] = {
    normal_entry (3, first, "set vip 10.77.0.100"),
    normal_entry (3, first + 1, NULL),
    normal_entry (4, first + 2, ""),
    conf_entry (4, first + 3, 3, 2),
    conf_data_entry (4, first + 4, "member n4 127.0.0.1:7004"),
    conf_data_entry (5, first + 5, ""),
  };

  g_array_append_vals (a, e, G_N_ELEMENTS (e));
  return a;
}

static SpRaftMsg *
sample_msg (SpRaftMsgType type)
{
  SpRaftMsg *m = g_new0 (SpRaftMsg, 1);

  m->type = type;
  m->from = 1;
  m->to = G_MAXUINT64;
  m->term = 7;
  m->log_term = 6;
  m->index = 41;
  m->commit = 40;
  m->hint_index = 12;
  m->context = 0x0102030405060708;
  m->reject = type % 2;
  m->force = type % 3 == 0;
  if (type == SP_RAFT_MSG_APPEND)
    m->entries = sample_entries (42);
  if (type == SP_RAFT_MSG_SNAPSHOT)
    m->snapshot = new_snapshot (40, 6, "state");
  return m;
}

static SpRaftMsg *
decode_ok (GBytes *bytes)
{
  g_autoptr (GError) error = NULL;
  SpRaftMsg *m = sp_wire_msg_from_bytes (bytes, &error);

  ck_assert_msg (m != NULL, "%s", error ? error->message : "no error set");
  ck_assert_ptr_null (error);
  return m;
}

/* Fails to decode with code, and the message names every one of what. */
static void
assert_msg_rejected (GBytes *bytes, SpWireError code, const char *const *what)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (SpRaftMsg) m = sp_wire_msg_from_bytes (bytes, &error);

  ck_assert_ptr_null (m);
  ck_assert_ptr_nonnull (error);
  ck_assert_msg (g_error_matches (error, SP_WIRE_ERROR, code), "%s", error->message);
  for (guint i = 0; what && what[i]; i++)
    ck_assert_msg (strstr (error->message, what[i]), "\"%s\" lacks \"%s\"", error->message,
                   what[i]);
}

/* Decodes to m without its entries and snapshot. */
static void
assert_encoded_msg_stripped (const SpRaftMsg *m)
{
  g_autoptr (GBytes) bytes = sp_wire_msg_to_bytes (m);
  g_autoptr (SpRaftMsg) back = decode_ok (bytes);
  SpRaftMsg bare = *m;

  bare.entries = NULL;
  bare.snapshot = NULL;
  sp_test_assert_msg_eq (&bare, back);
}

static void
assert_encoded_msg_rejected (const SpRaftMsg *m, const char *const *what)
{
  g_autoptr (GBytes) bytes = sp_wire_msg_to_bytes (m);

  assert_msg_rejected (bytes, SP_WIRE_ERROR_MALFORMED, what);
}

START_TEST (test_msg_round_trip)
{
  for (SpRaftMsgType t = 0; t < SP_RAFT_MSG_N_TYPES; t++)
    {
      g_autoptr (SpRaftMsg) m = sample_msg (t);
      g_autoptr (GBytes) bytes = sp_wire_msg_to_bytes (m);
      g_autoptr (SpRaftMsg) back = decode_ok (bytes);

      sp_test_assert_msg_eq (m, back);
      /* the core tells APPEND without entries apart by NULL */
      ck_assert_int_eq (back->entries != NULL, t == SP_RAFT_MSG_APPEND);
    }
}
END_TEST

START_TEST (test_msg_empty_append_and_null_snapshot_data)
{
  g_autoptr (SpRaftMsg) append = sample_msg (SP_RAFT_MSG_APPEND);
  g_autoptr (SpRaftMsg) snap = sample_msg (SP_RAFT_MSG_SNAPSHOT);
  g_autoptr (GBytes) append_bytes = NULL;
  g_autoptr (GBytes) snap_bytes = NULL;
  g_autoptr (SpRaftMsg) append_back = NULL;
  g_autoptr (SpRaftMsg) snap_back = NULL;

  /* a heartbeat-like append: no entries at all */
  g_clear_pointer (&append->entries, g_array_unref);
  append_bytes = sp_wire_msg_to_bytes (append);
  append_back = decode_ok (append_bytes);
  ck_assert_ptr_nonnull (append_back->entries);
  ck_assert_uint_eq (append_back->entries->len, 0);

  g_clear_pointer (&snap->snapshot->data, g_bytes_unref);
  snap_bytes = sp_wire_msg_to_bytes (snap);
  snap_back = decode_ok (snap_bytes);
  sp_test_assert_msg_eq (snap, snap_back);
}
END_TEST

START_TEST (test_entry_round_trip)
{
  g_autoptr (GArray) entries = sample_entries (1);

  for (guint i = 0; i < entries->len; i++)
    {
      const SpRaftEntry *e = &g_array_index (entries, SpRaftEntry, i);
      g_autoptr (GBytes) bytes = sp_wire_entry_to_bytes (e);
      g_autoptr (GVariant) v = g_variant_ref_sink (sp_wire_entry_to_variant (e));
      g_autoptr (GError) error = NULL;
      SpRaftEntry back;

      ck_assert_msg (sp_wire_entry_from_bytes (bytes, &back, &error), "%s", error->message);
      sp_test_assert_entry_eq (e, &back);
      sp_raft_entry_clear (&back);

      ck_assert_msg (sp_wire_entry_from_variant (v, &back, &error), "%s", error->message);
      sp_test_assert_entry_eq (e, &back);
      sp_raft_entry_clear (&back);
    }
}
END_TEST

START_TEST (test_entry_from_variant_wrong_type)
{
  g_autoptr (GVariant) v = g_variant_ref_sink (g_variant_new ("(tt)", 1, 2));
  g_autoptr (GError) error = NULL;
  SpRaftEntry e;

  ck_assert (!sp_wire_entry_from_variant (v, &e, &error));
  ck_assert (g_error_matches (error, SP_WIRE_ERROR, SP_WIRE_ERROR_MALFORMED));
  ck_assert_ptr_nonnull (strstr (error->message, "(tt)"));
  ck_assert_ptr_null (e.data);
  ck_assert_ptr_null (e.conf);
}
END_TEST

START_TEST (test_hard_state_round_trip_and_layout)
{
  SpRaftHardState hs = { .term = 0x1122334455667788, .vote = 3, .commit = 99 }, back;
  g_autoptr (GBytes) bytes = sp_wire_hard_state_to_bytes (&hs);
  g_autoptr (GError) error = NULL;
  const guint8 *p;
  gsize n;

  ck_assert_msg (sp_wire_hard_state_from_bytes (bytes, &back, &error), "%s", error->message);
  ck_assert_uint_eq (back.term, hs.term);
  ck_assert_uint_eq (back.vote, hs.vote);
  ck_assert_uint_eq (back.commit, hs.commit);

  /* (q(ttt)) little-endian: version, padding to 8, then the three fields */
  p = g_bytes_get_data (bytes, &n);
  ck_assert_uint_eq (n, 32);
  ck_assert_uint_eq (p[0], SP_WIRE_RECORD_VERSION);
  ck_assert_uint_eq (p[1], 0);
  ck_assert_uint_eq (p[8], 0x88);
  ck_assert_uint_eq (p[15], 0x11);
  ck_assert_uint_eq (p[16], 3);
  ck_assert_uint_eq (p[24], 99);
}
END_TEST

START_TEST (test_snapshot_round_trip)
{
  const char *datas[] = { "the whole store", "", NULL };

  for (guint i = 0; i < G_N_ELEMENTS (datas); i++)
    {
      g_autoptr (SpRaftSnapshot) s = new_snapshot (1000, 12, datas[i]);
      g_autoptr (GBytes) bytes = sp_wire_snapshot_to_bytes (s);
      g_autoptr (GError) error = NULL;
      g_autoptr (SpRaftSnapshot) back = sp_wire_snapshot_from_bytes (bytes, &error);

      ck_assert_msg (back != NULL, "%s", error->message);
      sp_test_assert_snapshot_eq (s, back);
    }
}
END_TEST

START_TEST (test_unaligned_input)
{
  /* storage hands over records at arbitrary offsets in a file buffer */
  g_autoptr (SpRaftMsg) m = sample_msg (SP_RAFT_MSG_APPEND);
  g_autoptr (GBytes) bytes = sp_wire_msg_to_bytes (m);
  gsize n = g_bytes_get_size (bytes);
  g_autofree guint8 *buf = g_malloc (n + 1);
  g_autoptr (GBytes) odd = NULL;
  g_autoptr (SpRaftMsg) back = NULL;

  memcpy (buf + 1, g_bytes_get_data (bytes, NULL), n);
  odd = g_bytes_new_static (buf + 1, n);
  back = decode_ok (odd);
  sp_test_assert_msg_eq (m, back);
}
END_TEST

START_TEST (test_truncated)
{
  g_autoptr (SpRaftMsg) m = sample_msg (SP_RAFT_MSG_APPEND);
  g_autoptr (GBytes) bytes = sp_wire_msg_to_bytes (m);
  gsize n = g_bytes_get_size (bytes);

  for (gsize len = 0; len < n; len++)
    {
      g_autoptr (GBytes) prefix = g_bytes_new_from_bytes (bytes, 0, len);

      assert_msg_rejected (prefix, SP_WIRE_ERROR_MALFORMED, NULL);
    }
  {
    g_autoptr (GBytes) one = g_bytes_new_from_bytes (bytes, 0, 1);
    const char *what[] = { "raft message", "version", NULL };

    assert_msg_rejected (one, SP_WIRE_ERROR_MALFORMED, what);
  }
}
END_TEST

START_TEST (test_wrong_version)
{
  g_autoptr (SpRaftMsg) m = sample_msg (SP_RAFT_MSG_SNAPSHOT);
  g_autoptr (GBytes) msg = sp_wire_msg_to_bytes (m);
  SpRaftEntry e = normal_entry (1, 1, "x");
  g_autoptr (GBytes) entry = sp_wire_entry_to_bytes (&e);
  SpRaftHardState hs = { 1, 1, 1 };
  g_autoptr (GBytes) hard_state = sp_wire_hard_state_to_bytes (&hs);
  g_autoptr (GBytes) snapshot = sp_wire_snapshot_to_bytes (m->snapshot);
  GBytes *all[] = { msg, entry, hard_state, snapshot };

  sp_raft_entry_clear (&e);
  for (guint i = 0; i < G_N_ELEMENTS (all); i++)
    {
      g_autoptr (GByteArray) a = g_bytes_unref_to_array (g_bytes_ref (all[i]));
      g_autoptr (GBytes) v2 = NULL;
      g_autoptr (GError) error = NULL;
      guint version = (i == 0 ? SP_WIRE_VERSION : SP_WIRE_RECORD_VERSION) + 1;
      g_autofree char *said = g_strdup_printf ("version: %u", version);
      gboolean ok;

      a->data[0] = version;
      v2 = g_byte_array_free_to_bytes (g_steal_pointer (&a));
      switch (i)
        {
          case 0:
            ok = sp_wire_msg_from_bytes (v2, &error) != NULL;
            break;
          case 1:
            ok = sp_wire_entry_from_bytes (v2, &e, &error);
            break;
          case 2:
            ok = sp_wire_hard_state_from_bytes (v2, &hs, &error);
            break;
          default:
            ok = sp_wire_snapshot_from_bytes (v2, &error) != NULL;
        }
      ck_assert (!ok);
      ck_assert_msg (g_error_matches (error, SP_WIRE_ERROR, SP_WIRE_ERROR_VERSION), "%s",
                     error->message);
      ck_assert_msg (strstr (error->message, said), "\"%s\" lacks \"%s\"", error->message, said);
    }
}
END_TEST

static GVariant *
ids_variant (guint n, guint64 base)
{
  g_autofree guint64 *ids = g_new (guint64, n + 1);

  for (guint i = 0; i < n; i++)
    ids[i] = base + i;
  return g_variant_new_fixed_array (G_VARIANT_TYPE_UINT64, ids, n, sizeof (guint64));
}

/* A SNAPSHOT message whose configuration the encoder cannot express. */
static GVariant *
ids_variant_from (const guint64 *ids, gsize n)
{
  return g_variant_new_fixed_array (G_VARIANT_TYPE_UINT64, ids, n, sizeof (guint64));
}

static GVariant *
header_variant (SpRaftMsgType type, guint64 flags)
{
  /* version, type, flags, from, to, term, then zeros */
  guint64 h[HEADER_LEN] = { SP_WIRE_VERSION, type, flags, 1, 2, 3 };

  return g_variant_new_fixed_array (G_VARIANT_TYPE_UINT64, h, HEADER_LEN, sizeof (guint64));
}

static GBytes *
snapshot_msg_with_conf (GVariant *voters, GVariant *learners)
{
  guint64 index = 10, snap_term = 3;
  g_autoptr (GVariant) v
      = g_variant_ref_sink (g_variant_new (MSG_CONF_ARGS, header_variant (SP_RAFT_MSG_SNAPSHOT, 0),
                                           index, snap_term, voters, learners, NULL));

  return g_variant_get_data_as_bytes (v);
}

/* A header-only message the encoder would not write. */
static GBytes *
msg_with_header (GVariant *header)
{
  g_autoptr (GVariant) v = g_variant_ref_sink (header);

  return g_variant_get_data_as_bytes (v);
}

START_TEST (test_bad_header)
{
  guint64 short_h[HEADER_LEN - 1] = { SP_WIRE_VERSION, SP_RAFT_MSG_HEARTBEAT };
  g_autoptr (GBytes) good = msg_with_header (header_variant (SP_RAFT_MSG_HEARTBEAT, 0));
  g_autoptr (GBytes) flags = msg_with_header (header_variant (SP_RAFT_MSG_HEARTBEAT, 4));
  g_autoptr (GBytes) type = msg_with_header (header_variant (SP_RAFT_MSG_N_TYPES, 0));
  g_autoptr (GBytes) len = msg_with_header (g_variant_new_fixed_array (
      G_VARIANT_TYPE_UINT64, short_h, G_N_ELEMENTS (short_h), sizeof (guint64)));
  g_autoptr (SpRaftMsg) m = decode_ok (good);
  const char *flags_what[] = { "flags", "4", NULL };
  g_autofree char *n_types = g_strdup_printf ("type: %u", SP_RAFT_MSG_N_TYPES);
  const char *type_what[] = { n_types, NULL };
  const char *len_what[] = { "header", "10 values", NULL };
  const char *odd_what[] = { "header", "91 bytes", NULL };
  g_autoptr (GByteArray) odd = g_byte_array_new ();
  g_autoptr (GBytes) odd_bytes = NULL;

  ck_assert_int_eq (m->type, SP_RAFT_MSG_HEARTBEAT);
  ck_assert_uint_eq (m->term, 3);
  assert_msg_rejected (flags, SP_WIRE_ERROR_MALFORMED, flags_what);
  assert_msg_rejected (type, SP_WIRE_ERROR_MALFORMED, type_what);
  assert_msg_rejected (len, SP_WIRE_ERROR_MALFORMED, len_what);
  /* a whole header and three bytes more */
  g_byte_array_append (odd, g_bytes_get_data (good, NULL), g_bytes_get_size (good));
  g_byte_array_append (odd, (const guint8 *)"abc", 3);
  odd_bytes = g_byte_array_free_to_bytes (g_steal_pointer (&odd));
  assert_msg_rejected (odd_bytes, SP_WIRE_ERROR_MALFORMED, odd_what);
}
END_TEST

static GVariant *
header_of (const SpRaftMsg *m)
{
  guint64 h[HEADER_LEN] = {
    SP_WIRE_VERSION, m->type,    (m->reject ? 1 : 0) | (m->force ? 2 : 0),
    m->from,         m->to,      m->term,
    m->log_term,     m->index,   m->commit,
    m->hint_index,   m->context,
  };

  return g_variant_new_fixed_array (G_VARIANT_TYPE_UINT64, h, HEADER_LEN, sizeof (guint64));
}

static void
assert_layout (const SpRaftMsg *m, GVariant *want)
{
  g_autoptr (GVariant) sunk = g_variant_ref_sink (want);
  g_autoptr (GBytes) bytes = sp_wire_msg_to_bytes (m);
  g_autoptr (GBytes) want_bytes = g_variant_get_data_as_bytes (sunk);

  ck_assert (g_variant_is_normal_form (sunk));
  ck_assert_msg (g_bytes_equal (bytes, want_bytes), "%s is not laid out as %s",
                 sp_raft_msg_type_to_string (m->type), g_variant_get_type_string (sunk));
}

/* The message layouts are the ones documented in wire.c, byte for byte. */
START_TEST (test_msg_layout)
{
  g_autoptr (SpRaftMsg) append = sample_msg (SP_RAFT_MSG_APPEND);
  g_autoptr (SpRaftMsg) snap = sample_msg (SP_RAFT_MSG_SNAPSHOT);
  g_autoptr (SpRaftMsg) heartbeat = sample_msg (SP_RAFT_MSG_HEARTBEAT);
  /* sample_entries: data, a no-op, empty data, then three times a
   * configuration (3 voters 100-102, 2 learners 200-201): without data,
   * with data, with empty data */
  {
    const guint64 meta[] = { 3, 42, 1, 3, 43, 0, 4, 44, 1, 4, 45, 2, 4, 46, 3, 5, 47, 3 };
    const guint64 voters[] = { 100, 101, 102 }, learners[] = { 200, 201 };
    const char *set = "set vip 10.77.0.100", *member = "member n4 127.0.0.1:7004";
    GVariant *datas[] = {
      g_variant_new_fixed_array (G_VARIANT_TYPE_BYTE, set, strlen (set), 1),
      g_variant_new_fixed_array (G_VARIANT_TYPE_BYTE, NULL, 0, 1),
      g_variant_new_fixed_array (G_VARIANT_TYPE_BYTE, NULL, 0, 1),
      g_variant_new_fixed_array (G_VARIANT_TYPE_BYTE, NULL, 0, 1),
      g_variant_new_fixed_array (G_VARIANT_TYPE_BYTE, member, strlen (member), 1),
      g_variant_new_fixed_array (G_VARIANT_TYPE_BYTE, NULL, 0, 1),
    };
    GVariant *confs[3];

    for (guint i = 0; i < G_N_ELEMENTS (confs); i++)
      confs[i] = g_variant_new ("(@at@at)", ids_variant_from (voters, 3),
                                ids_variant_from (learners, 2));
    assert_layout (append, g_variant_new ("(@at@at@aay@a(atat))", header_of (append),
                                          ids_variant_from (meta, G_N_ELEMENTS (meta)),
                                          g_variant_new_array (G_VARIANT_TYPE_BYTESTRING, datas,
                                                               G_N_ELEMENTS (datas)),
                                          g_variant_new_array (NULL, confs, G_N_ELEMENTS (confs))));
  }
  assert_layout (
      snap,
      g_variant_new (
          "(@at(tt(@at@at)m@ay))", header_of (snap), snap->snapshot->index, snap->snapshot->term,
          g_variant_new_fixed_array (G_VARIANT_TYPE_UINT64, snap->snapshot->conf.voters,
                                     snap->snapshot->conf.n_voters, sizeof (guint64)),
          g_variant_new_fixed_array (G_VARIANT_TYPE_UINT64, snap->snapshot->conf.learners,
                                     snap->snapshot->conf.n_learners, sizeof (guint64)),
          g_variant_new_fixed_array (G_VARIANT_TYPE_BYTE, "state", 5, 1)));
  assert_layout (heartbeat, header_of (heartbeat));
}
END_TEST

/* A leader's notice of a transfer (a heartbeat with force and the target
 * in hint_index) stays a header alone, read and written in place, and
 * keeps both fields. */
START_TEST (test_transfer_notice)
{
  SpRaftMsg notice = {
    .type = SP_RAFT_MSG_HEARTBEAT,
    .from = 1,
    .to = 2,
    .term = 9,
    .commit = 4,
    .context = 77,
    .force = TRUE,
    .hint_index = 0xfedcba9876543210,
  };
  g_autoptr (GBytes) bytes = sp_wire_msg_to_bytes (&notice);
  g_autoptr (SpRaftMsg) back = decode_ok (bytes);

  ck_assert_uint_eq (g_bytes_get_size (bytes), HEADER_LEN * sizeof (guint64));
  ck_assert (back->force);
  ck_assert_uint_eq (back->hint_index, notice.hint_index);
  sp_test_assert_msg_eq (&notice, back);
}
END_TEST

/* Entry records put together by hand: what earlier versions wrote (no
 * data in a CONF entry) and a CONF entry carrying data both read. */
START_TEST (test_entry_record_conf_data)
{
  const guint64 voters[] = { 1, 2, 3 };
  const char *member = "member n4 127.0.0.1:7004";
  GVariant *datas[] = {
    g_variant_new_maybe (G_VARIANT_TYPE_BYTESTRING, NULL),
    g_variant_new_maybe (
        NULL, g_variant_new_fixed_array (G_VARIANT_TYPE_BYTE, member, strlen (member), 1)),
  };

  for (guint i = 0; i < G_N_ELEMENTS (datas); i++)
    {
      GVariant *conf
          = g_variant_new ("(@at@at)", ids_variant_from (voters, 3), ids_variant_from (NULL, 0));
      g_autoptr (GVariant) v = g_variant_ref_sink (
          g_variant_new ("(q(tty@may@m(atat)))", SP_WIRE_RECORD_VERSION, 5, 9, SP_RAFT_ENTRY_CONF,
                         datas[i], g_variant_new_maybe (NULL, conf)));
      g_autoptr (GBytes) bytes = g_variant_get_data_as_bytes (v);
      g_autoptr (GError) error = NULL;
      SpRaftEntry e;

      ck_assert (g_variant_is_of_type (v, G_VARIANT_TYPE ("(q" ENTRY_TYPE ")")));
      ck_assert_msg (sp_wire_entry_from_bytes (bytes, &e, &error), "%s", error->message);
      ck_assert_int_eq (e.type, SP_RAFT_ENTRY_CONF);
      ck_assert_uint_eq (e.index, 9);
      ck_assert_uint_eq (e.conf->n_voters, 3);
      if (i == 0)
        ck_assert_ptr_null (e.data);
      else
        {
          g_autoptr (GBytes) want = g_bytes_new_static (member, strlen (member));

          ck_assert (g_bytes_equal (e.data, want));
        }
      sp_raft_entry_clear (&e);
    }
}
END_TEST

START_TEST (test_too_many_nodes)
{
  g_autoptr (GBytes) ok = snapshot_msg_with_conf (ids_variant (10, 1), ids_variant (6, 100));
  g_autoptr (GBytes) bad = snapshot_msg_with_conf (ids_variant (10, 1), ids_variant (7, 100));
  g_autoptr (GBytes) voters = snapshot_msg_with_conf (ids_variant (17, 1), ids_variant (0, 1));
  g_autoptr (SpRaftMsg) m = decode_ok (ok);
  const char *what[] = { "snapshot.conf", "at most 16", NULL };

  ck_assert_uint_eq (m->snapshot->conf.n_voters, 10);
  ck_assert_uint_eq (m->snapshot->conf.n_learners, 6);
  assert_msg_rejected (bad, SP_WIRE_ERROR_MALFORMED, what);
  assert_msg_rejected (voters, SP_WIRE_ERROR_MALFORMED, what);
}
END_TEST

START_TEST (test_bad_node_ids)
{
  g_autoptr (GBytes) zero = snapshot_msg_with_conf (ids_variant (3, 0), ids_variant (0, 1));
  g_autoptr (GBytes) twice = snapshot_msg_with_conf (ids_variant (3, 1), ids_variant (2, 3));
  const char *zero_what[] = { "snapshot.conf", "0", NULL };
  const char *twice_what[] = { "snapshot.conf", "node 3 is listed twice", NULL };

  assert_msg_rejected (zero, SP_WIRE_ERROR_MALFORMED, zero_what);
  assert_msg_rejected (twice, SP_WIRE_ERROR_MALFORMED, twice_what);
}
END_TEST

START_TEST (test_non_consecutive_entries)
{
  g_autoptr (SpRaftMsg) gap = sample_msg (SP_RAFT_MSG_APPEND);
  g_autoptr (SpRaftMsg) start = sample_msg (SP_RAFT_MSG_APPEND);
  g_autoptr (SpRaftMsg) wrap = sample_msg (SP_RAFT_MSG_APPEND);
  const char *gap_what[] = { "entries[2].index", "45 does not follow 43", NULL };
  const char *start_what[] = { "entries[0].index", NULL };

  g_array_index (gap->entries, SpRaftEntry, 2).index = 45;
  assert_encoded_msg_rejected (gap, gap_what);
  start->index = 40;
  assert_encoded_msg_rejected (start, start_what);
  /* index + 1 must not wrap around to a valid-looking entry */
  wrap->index = G_MAXUINT64;
  g_array_set_size (wrap->entries, 1);
  g_array_index (wrap->entries, SpRaftEntry, 0).index = 0;
  assert_encoded_msg_rejected (wrap, start_what);
}
END_TEST

/* An append of two entries (indexes 1 and 2) put together by hand. */
static GBytes *
append_with (const guint64 *fields, gsize n_fields, const char *data0, const char *data1,
             guint n_confs)
{
  GVariant *datas[] = {
    g_variant_new_fixed_array (G_VARIANT_TYPE_BYTE, data0, strlen (data0), 1),
    g_variant_new_fixed_array (G_VARIANT_TYPE_BYTE, data1, strlen (data1), 1),
  };
  guint64 voters[] = { 1, 2, 3 };
  g_autofree GVariant **confs = g_new (GVariant *, MAX (n_confs, 1));
  g_autoptr (GVariant) v = NULL;

  for (guint i = 0; i < n_confs; i++)
    confs[i] = g_variant_new ("(@at@at)", ids_variant_from (voters, 3), ids_variant_from (NULL, 0));
  v = g_variant_ref_sink (
      g_variant_new ("(@at@at@aay@a(atat))", header_variant (SP_RAFT_MSG_APPEND, 0),
                     ids_variant_from (fields, n_fields),
                     g_variant_new_array (G_VARIANT_TYPE_BYTESTRING, datas, 2),
                     g_variant_new_array (G_VARIANT_TYPE ("(atat)"), confs, n_confs)));
  return g_variant_get_data_as_bytes (v);
}

START_TEST (test_inconsistent_fields)
{
  g_autoptr (SpRaftMsg) conf_missing = sample_msg (SP_RAFT_MSG_APPEND);
  g_autoptr (SpRaftMsg) conf_extra = sample_msg (SP_RAFT_MSG_APPEND);
  g_autoptr (SpRaftMsg) conf_data = sample_msg (SP_RAFT_MSG_APPEND);
  g_autoptr (SpRaftMsg) heartbeat = sample_msg (SP_RAFT_MSG_HEARTBEAT);
  g_autoptr (SpRaftMsg) vote = sample_msg (SP_RAFT_MSG_VOTE);
  g_autoptr (SpRaftMsg) snap = sample_msg (SP_RAFT_MSG_SNAPSHOT);
  g_autoptr (SpRaftMsg) type = sample_msg (SP_RAFT_MSG_TIMEOUT_NOW);
  /* term, index, kind: a normal entry with data, then a configuration */
  const guint64 good[] = { 3, 1, 1, 3, 2, 2 };
  const guint64 kind[] = { 3, 1, 4, 3, 2, 2 };
  /* a configuration with data, then one whose data is empty */
  const guint64 conf_data_fields[] = { 3, 1, 3, 3, 2, 3 };
  const guint64 noop[] = { 3, 1, 0, 3, 2, 2 };
  const guint64 short_fields[] = { 3, 1, 1, 3, 2 };
  g_autoptr (GBytes) good_bytes = append_with (good, 6, "x", "", 1);
  g_autoptr (SpRaftMsg) m = decode_ok (good_bytes);
  SpRaftEntry *e;
  const char *conf_what[] = { "entries[5].conf", "missing", NULL };
  const char *snapshot_what[] = { "raft message", NULL };
  g_autofree char *n_types = g_strdup_printf ("type: %u", SP_RAFT_MSG_N_TYPES);
  const char *type_what[] = { n_types, NULL };
  const char *kind_what[] = { "entries[0].kind", "4", NULL };
  const char *noop_what[] = { "entries[0].data", "no-op", NULL };
  const char *conf_data_what[] = { "entries[1].data", "CONF", NULL };
  const char *confs_what[] = { "2 confs for 1 CONF entries", NULL };
  const char *fields_what[] = { "5 values for 2 entries", NULL };

  ck_assert_uint_eq (m->entries->len, 2);
  ck_assert_int_eq (g_array_index (m->entries, SpRaftEntry, 1).type, SP_RAFT_ENTRY_CONF);
  ck_assert_ptr_null (g_array_index (m->entries, SpRaftEntry, 1).data);
  {
    g_autoptr (GBytes) b = append_with (conf_data_fields, 6, "x", "", 2);
    g_autoptr (SpRaftMsg) with_data = decode_ok (b);
    const SpRaftEntry *e0 = &g_array_index (with_data->entries, SpRaftEntry, 0);
    const SpRaftEntry *e1 = &g_array_index (with_data->entries, SpRaftEntry, 1);

    ck_assert_int_eq (e0->type, SP_RAFT_ENTRY_CONF);
    ck_assert_ptr_nonnull (e0->conf);
    ck_assert_uint_eq (g_bytes_get_size (e0->data), 1);
    ck_assert_int_eq (e1->type, SP_RAFT_ENTRY_CONF);
    ck_assert_ptr_nonnull (e1->conf);
    ck_assert_ptr_nonnull (e1->data);
    ck_assert_uint_eq (g_bytes_get_size (e1->data), 0);
  }

  /* what the decoder refuses */
  {
    g_autoptr (GBytes) b1 = append_with (kind, 6, "x", "", 1);
    g_autoptr (GBytes) b2 = append_with (noop, 6, "x", "", 1);
    g_autoptr (GBytes) b3 = append_with (good, 6, "x", "y", 1);
    g_autoptr (GBytes) b4 = append_with (good, 6, "x", "", 2);
    g_autoptr (GBytes) b5 = append_with (short_fields, 5, "x", "", 1);

    assert_msg_rejected (b1, SP_WIRE_ERROR_MALFORMED, kind_what);
    assert_msg_rejected (b2, SP_WIRE_ERROR_MALFORMED, noop_what);
    assert_msg_rejected (b3, SP_WIRE_ERROR_MALFORMED, conf_data_what);
    assert_msg_rejected (b4, SP_WIRE_ERROR_MALFORMED, confs_what);
    assert_msg_rejected (b5, SP_WIRE_ERROR_MALFORMED, fields_what);
  }

  e = &g_array_index (conf_missing->entries, SpRaftEntry, 5);
  g_rc_box_release (g_steal_pointer (&e->conf));
  assert_encoded_msg_rejected (conf_missing, conf_what);

  /* what the format has no room for does not travel: a NORMAL entry's
   * conf; a CONF entry's data does */
  e = &g_array_index (conf_extra->entries, SpRaftEntry, 0);
  e->conf = new_conf (1, 0);
  e = &g_array_index (conf_data->entries, SpRaftEntry, 3);
  e->data = g_bytes_new ("x", 1);
  {
    g_autoptr (GBytes) b1 = sp_wire_msg_to_bytes (conf_extra);
    g_autoptr (GBytes) b2 = sp_wire_msg_to_bytes (conf_data);
    g_autoptr (SpRaftMsg) m1 = decode_ok (b1);
    g_autoptr (SpRaftMsg) m2 = decode_ok (b2);

    ck_assert_ptr_null (g_array_index (m1->entries, SpRaftEntry, 0).conf);
    sp_test_assert_msg_eq (conf_data, m2);
  }

  /* a header-only type has no room for entries or a snapshot */
  heartbeat->entries = sample_entries (42);
  assert_encoded_msg_stripped (heartbeat);
  vote->snapshot = new_snapshot (3, 1, NULL);
  assert_encoded_msg_stripped (vote);
  /* and a Snapshot without one is not one */
  g_clear_pointer (&snap->snapshot, sp_raft_snapshot_free);
  assert_encoded_msg_rejected (snap, snapshot_what);

  type->type = SP_RAFT_MSG_N_TYPES;
  assert_encoded_msg_rejected (type, type_what);
}
END_TEST

START_TEST (test_too_large)
{
  g_autoptr (GBytes) big
      = g_bytes_new_take (g_malloc0 (SP_WIRE_MAX_FRAME + 1), SP_WIRE_MAX_FRAME + 1);

  assert_msg_rejected (big, SP_WIRE_ERROR_TOO_LARGE, NULL);
}
END_TEST

/* What a decoded message must satisfy, whatever the input was. */
static void
assert_valid (const SpRaftMsg *m)
{
  g_autoptr (GBytes) again = NULL;
  g_autoptr (SpRaftMsg) back = NULL;

  ck_assert_int_lt (m->type, SP_RAFT_MSG_N_TYPES);
  ck_assert_int_eq (m->entries != NULL, m->type == SP_RAFT_MSG_APPEND);
  ck_assert_int_eq (m->snapshot != NULL, m->type == SP_RAFT_MSG_SNAPSHOT);
  for (guint i = 0; m->entries && i < m->entries->len; i++)
    {
      const SpRaftEntry *e = &g_array_index (m->entries, SpRaftEntry, i);

      ck_assert_uint_eq (e->index, m->index + 1 + i);
      ck_assert_int_le (e->type, SP_RAFT_ENTRY_CONF);
      ck_assert_int_eq (e->conf != NULL, e->type == SP_RAFT_ENTRY_CONF);
      if (e->conf)
        ck_assert_uint_le (e->conf->n_voters + e->conf->n_learners, SP_RAFT_MAX_NODES);
    }
  if (m->snapshot)
    ck_assert_uint_le (m->snapshot->conf.n_voters + m->snapshot->conf.n_learners,
                       SP_RAFT_MAX_NODES);
  /* and it is stable: what we would send on says the same */
  again = sp_wire_msg_to_bytes (m);
  back = decode_ok (again);
  sp_test_assert_msg_eq (m, back);
}

/* Returns whether bytes decoded; either way nothing leaks or crashes. */
static gboolean
decode_any (GBytes *bytes)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (SpRaftMsg) m = sp_wire_msg_from_bytes (bytes, &error);
  SpRaftEntry e;
  SpRaftHardState hs;
  g_autoptr (SpRaftSnapshot) s = sp_wire_snapshot_from_bytes (bytes, NULL);

  if (sp_wire_entry_from_bytes (bytes, &e, NULL))
    {
      ck_assert_int_eq (e.conf != NULL, e.type == SP_RAFT_ENTRY_CONF);
      sp_raft_entry_clear (&e);
    }
  sp_wire_hard_state_from_bytes (bytes, &hs, NULL);
  if (!m)
    {
      ck_assert_ptr_nonnull (error);
      ck_assert_int_eq (error->domain, SP_WIRE_ERROR);
      ck_assert_ptr_nonnull (error->message);
      return FALSE;
    }
  ck_assert_ptr_null (error);
  assert_valid (m);
  return TRUE;
}

START_TEST (test_random_garbage)
{
  g_autoptr (GRand) rand = g_rand_new_with_seed (20240607);

  for (guint i = 0; i < 2000; i++)
    {
      gsize n = g_rand_int_range (rand, 0, 600);
      g_autofree guint8 *buf = g_malloc (n + 1);
      g_autoptr (GBytes) bytes = NULL;

      for (gsize j = 0; j < n; j++)
        buf[j] = g_rand_int_range (rand, 0, 256);
      /* past the version check most of the time, into the GVariant parser */
      if (n >= 2 && i % 4 != 0)
        {
          buf[0] = i % 2 ? SP_WIRE_VERSION : SP_WIRE_RECORD_VERSION;
          buf[1] = 0;
        }
      bytes = g_bytes_new (buf, n);
      decode_any (bytes);
    }
}
END_TEST

START_TEST (test_random_corruption)
{
  g_autoptr (GRand) rand = g_rand_new_with_seed (7);
  guint decoded = 0, rejected = 0;

  for (guint i = 0; i < 2000; i++)
    {
      g_autoptr (SpRaftMsg) m = sample_msg (i % SP_RAFT_MSG_N_TYPES);
      g_autoptr (GBytes) good = sp_wire_msg_to_bytes (m);
      g_autoptr (GByteArray) a = g_bytes_unref_to_array (g_bytes_ref (good));
      g_autoptr (GBytes) bad = NULL;
      guint at = g_rand_int_range (rand, 0, a->len);

      a->data[at] ^= g_rand_int_range (rand, 1, 256);
      bad = g_byte_array_free_to_bytes (g_steal_pointer (&a));
      if (decode_any (bad))
        decoded++;
      else
        rejected++;
    }
  /* both paths were taken: flips in plain integers decode, others do not */
  ck_assert_uint_gt (decoded, 100);
  ck_assert_uint_gt (rejected, 100);
}
END_TEST

START_TEST (test_frame_header)
{
  guint8 h[4];
  guint32 len = 0;
  g_autoptr (GError) error = NULL;
  const guint8 huge[4] = { 0xff, 0xff, 0xff, 0xff };

  sp_wire_frame_header (0x00a1b2c3, h);
  ck_assert_uint_eq (h[0], 0x00);
  ck_assert_uint_eq (h[1], 0xa1);
  ck_assert_uint_eq (h[2], 0xb2);
  ck_assert_uint_eq (h[3], 0xc3);
  ck_assert (sp_wire_frame_parse_header (h, &len, &error));
  ck_assert_uint_eq (len, 0x00a1b2c3);

  sp_wire_frame_header (SP_WIRE_MAX_FRAME, h);
  ck_assert (sp_wire_frame_parse_header (h, &len, &error));
  ck_assert_uint_eq (len, SP_WIRE_MAX_FRAME);

  sp_wire_frame_header (SP_WIRE_MAX_FRAME + 1, h);
  ck_assert (!sp_wire_frame_parse_header (h, &len, &error));
  ck_assert (g_error_matches (error, SP_WIRE_ERROR, SP_WIRE_ERROR_TOO_LARGE));
  g_clear_error (&error);
  ck_assert (!sp_wire_frame_parse_header (huge, &len, &error));
  ck_assert (g_error_matches (error, SP_WIRE_ERROR, SP_WIRE_ERROR_TOO_LARGE));
}
END_TEST

int
main (void)
{
  Suite *s = suite_create ("wire");
  TCase *round_trip = tcase_create ("round-trip");
  TCase *invalid = tcase_create ("invalid");
  SRunner *sr;
  int failed;

  tcase_add_test (round_trip, test_msg_round_trip);
  tcase_add_test (round_trip, test_transfer_notice);
  tcase_add_test (round_trip, test_msg_empty_append_and_null_snapshot_data);
  tcase_add_test (round_trip, test_entry_round_trip);
  tcase_add_test (round_trip, test_entry_record_conf_data);
  tcase_add_test (round_trip, test_hard_state_round_trip_and_layout);
  tcase_add_test (round_trip, test_snapshot_round_trip);
  tcase_add_test (round_trip, test_unaligned_input);
  tcase_add_test (round_trip, test_msg_layout);
  tcase_add_test (round_trip, test_frame_header);
  suite_add_tcase (s, round_trip);

  tcase_add_test (invalid, test_entry_from_variant_wrong_type);
  tcase_add_test (invalid, test_truncated);
  tcase_add_test (invalid, test_wrong_version);
  tcase_add_test (invalid, test_too_many_nodes);
  tcase_add_test (invalid, test_bad_header);
  tcase_add_test (invalid, test_bad_node_ids);
  tcase_add_test (invalid, test_non_consecutive_entries);
  tcase_add_test (invalid, test_inconsistent_fields);
  tcase_add_test (invalid, test_too_large);
  tcase_add_test (invalid, test_random_garbage);
  tcase_add_test (invalid, test_random_corruption);
  /* the fuzz loops are slow under sanitizers */
  tcase_set_timeout (invalid, 120);
  suite_add_tcase (s, invalid);

  sr = srunner_create (s);
  srunner_run_all (sr, CK_NORMAL);
  failed = srunner_ntests_failed (sr);
  srunner_free (sr);
  return failed == 0 ? 0 : 1;
}
