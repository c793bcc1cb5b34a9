/* GVariant formats (little-endian; a version first in every record):
 *   conf      (atat)                 voters, learners
 *   data      may                    Nothing = NULL data, Just [] = empty
 *   entry     (ttymaym(atat))        term, index, type, data (a CONF entry's
 *                                    too: applied with the change), conf
 *                                    (CONF only)
 *   snapshot  (tt(atat)may)          index, term, conf, data
 * Messages (SP_WIRE_VERSION), each led by its header:
 *   header    at                     exactly HEADER_LEN values: version,
 *                                    type, flags (1 reject, 2 force), from,
 *                                    to, term, log_term, index, commit,
 *                                    hint_index, context
 *   message   header                 every type but these two:
 *   append    (atataaya(atat))       header; three values per entry: term,
 *                                    index, kind (KIND_*); one data per
 *                                    entry (empty unless KIND_DATA or
 *                                    KIND_CONF_DATA); the conf of each CONF
 *                                    entry, in order
 *   snapshot  (at(tt(atat)may))      header, snapshot
 * A record's first bytes are its header's first values, whatever the type:
 * bytes 0-7 the version, 8-15 the message type, which says which of the
 * three to read.  In the data directory (SP_WIRE_RECORD_VERSION):
 *   entry       (q(ttymaym(atat)))
 *   hard state  (q(ttt))             term, vote, commit
 *   snapshot    (q(tt(atat)may))
 * The version is read from the first two bytes before anything else, so a
 * record from another version is reported as such even if its layout
 * differs.  Only messages are held to SP_WIRE_MAX_FRAME: storage records
 * (a snapshot especially) are not bounded by the transport.
 *
 * Checking.  GVariant reads any bytes safely: where the framing of
 * untrusted data does not hold, a value reads as empty or zero, never from
 * outside the buffer.  Every field read is then checked here (counts,
 * ranges, entry order, kinds against data and configurations).  Normal
 * form is not asked for: it is about canonical bytes, which nothing here
 * needs (integrity is TCP's or TLS's, and the storage's checksums), and
 * GLib 2.74 checks it byte by byte in byte arrays (some 150 instructions a
 * byte of every value).  The hard state, fixed in size, is the exception:
 * for it, normal form is what says the size is right.
 *
 * Speed.  Every heartbeat and every replicated entry passes through here
 * several times, and in GLib 2.74 each GVariant value costs over a thousand
 * instructions: so integers travel in arrays (a message's fixed fields, an
 * append's entry fields), a heartbeat is its header alone, and values are
 * built and taken apart child by child, because g_variant_new () and
 * g_variant_get () parse their format string on every call and
 * G_VARIANT_TYPE () validates its string on every use.  A message that is
 * its header alone (heartbeats, votes, their answers) does not touch
 * GVariant at all: an `at` is its values' bytes, read and written in place.
 * GLib also rebuilds the layout of a container type whenever the last
 * value of that type is gone: the types are checked once and one value of
 * each record type is kept for the life of the process (see types ()). */
#include "wire.h"

#include <string.h>

#define CONF_TYPE         "(atat)"
#define DATA_TYPE         "may"
#define ENTRY_TYPE        "(ttymaym" CONF_TYPE ")"
#define SNAPSHOT_TYPE     "(tt" CONF_TYPE DATA_TYPE ")"
#define HEADER_RECORD     "at"
#define APPEND_RECORD     "(atataaya" CONF_TYPE ")"
#define SNAPSHOT_MSG      "(at" SNAPSHOT_TYPE ")"
#define ENTRY_RECORD      "(q" ENTRY_TYPE ")"
#define HARD_STATE_RECORD "(q(ttt))"
#define SNAPSHOT_RECORD   "(q" SNAPSHOT_TYPE ")"

/* A message's header, in order. */
enum
{
  MSG_VERSION,
  MSG_TYPE,
  MSG_FLAGS,
  MSG_FROM,
  MSG_TO,
  MSG_TERM,
  MSG_LOG_TERM,
  MSG_INDEX,
  MSG_COMMIT,
  MSG_HINT_INDEX,
  MSG_CONTEXT,
  HEADER_LEN
};

#define MSG_REJECT 1
#define MSG_FORCE  2

/* An append's entries: these values for each, then its data and conf. */
enum
{
  ENTRY_TERM,
  ENTRY_INDEX,
  ENTRY_KIND,
  ENTRY_LEN
};

enum
{
  KIND_NOOP, /* NORMAL with NULL data: a leader's no-op */
  KIND_DATA, /* NORMAL with data, possibly empty */
  KIND_CONF,
  KIND_CONF_DATA, /* CONF with data, possibly empty */
  N_KINDS
};

typedef struct
{
  const GVariantType *conf, *entry, *snapshot, *header, *append, *snapshot_msg, *entry_record,
      *hard_state, *snapshot_record;
  GVariant *keep[6]; /* one value per record type: its layout stays built */
} Types;

static const Types *
types (void)
{
  static Types t;
  static gsize ready = 0;

  if (g_once_init_enter (&ready))
    {
      t.conf = G_VARIANT_TYPE (CONF_TYPE);
      t.entry = G_VARIANT_TYPE (ENTRY_TYPE);
      t.snapshot = G_VARIANT_TYPE (SNAPSHOT_TYPE);
      t.header = G_VARIANT_TYPE (HEADER_RECORD);
      t.append = G_VARIANT_TYPE (APPEND_RECORD);
      t.snapshot_msg = G_VARIANT_TYPE (SNAPSHOT_MSG);
      t.entry_record = G_VARIANT_TYPE (ENTRY_RECORD);
      t.hard_state = G_VARIANT_TYPE (HARD_STATE_RECORD);
      t.snapshot_record = G_VARIANT_TYPE (SNAPSHOT_RECORD);
      {
        const GVariantType *kept[] = { t.header,       t.append,     t.snapshot_msg,
                                       t.entry_record, t.hard_state, t.snapshot_record };

        G_STATIC_ASSERT (G_N_ELEMENTS (kept) == G_N_ELEMENTS (t.keep));
        for (guint i = 0; i < G_N_ELEMENTS (kept); i++)
          t.keep[i]
              = g_variant_ref_sink (g_variant_new_from_data (kept[i], NULL, 0, FALSE, NULL, NULL));
      }
      g_once_init_leave (&ready, 1);
    }
  return &t;
}

GQuark
sp_wire_error_quark (void)
{
  return g_quark_from_static_string ("sp-wire-error-quark");
}

/* ---- encoding ----------------------------------------------------------- */

/* Like g_variant_new_fixed_array, without building and looking up the
 * array type each time. */
static GVariant *
ids_to_variant (const guint64 *ids, guint n)
{
  g_autoptr (GBytes) bytes = g_bytes_new (ids, n * sizeof (guint64));

  return g_variant_new_from_bytes (types ()->header, bytes, TRUE);
}

static GVariant *
conf_to_variant (const SpRaftConf *c)
{
  GVariant *ids[] = {
    ids_to_variant (c->voters, c->n_voters),
    ids_to_variant (c->learners, c->n_learners),
  };

  return g_variant_new_tuple (ids, G_N_ELEMENTS (ids));
}

static GVariant *
bytes_to_variant (GBytes *data)
{
  return g_variant_new_from_bytes (G_VARIANT_TYPE_BYTESTRING, data, TRUE);
}

static GVariant *
data_to_variant (GBytes *data)
{
  return g_variant_new_maybe (G_VARIANT_TYPE_BYTESTRING, data ? bytes_to_variant (data) : NULL);
}

static GVariant *
snapshot_to_variant (const SpRaftSnapshot *s)
{
  GVariant *fields[] = {
    g_variant_new_uint64 (s->index),
    g_variant_new_uint64 (s->term),
    conf_to_variant (&s->conf),
    data_to_variant (s->data),
  };

  return g_variant_new_tuple (fields, G_N_ELEMENTS (fields));
}

GVariant *
sp_wire_entry_to_variant (const SpRaftEntry *e)
{
  GVariant *fields[] = {
    g_variant_new_uint64 (e->term),
    g_variant_new_uint64 (e->index),
    g_variant_new_byte ((guint8)e->type),
    data_to_variant (e->data),
    g_variant_new_maybe (types ()->conf, e->conf ? conf_to_variant (e->conf) : NULL),
  };

  return g_variant_new_tuple (fields, G_N_ELEMENTS (fields));
}

/* A storage record: the version, then what follows it. */
static GVariant *
record_new (GVariant *body)
{
  GVariant *fields[] = { g_variant_new_uint16 (SP_WIRE_RECORD_VERSION), body };

  return g_variant_new_tuple (fields, G_N_ELEMENTS (fields));
}

/* Sinks v; the result is little-endian whatever the host. */
static GBytes *
record_to_bytes (GVariant *v)
{
  g_autoptr (GVariant) sunk = g_variant_ref_sink (v);
  g_autoptr (GVariant) swapped = NULL;

  if (G_BYTE_ORDER == G_BIG_ENDIAN)
    {
      swapped = g_variant_byteswap (sunk);
      return g_variant_get_data_as_bytes (swapped);
    }
  return g_variant_get_data_as_bytes (sunk);
}

/* The three arrays after an append's header. */
static void
entries_to_variants (const GArray *entries, GVariant **meta, GVariant **datas, GVariant **confs)
{
  guint n = entries ? entries->len : 0;
  g_autofree guint64 *fields = g_new (guint64, MAX (n, 1) * ENTRY_LEN);
  g_autofree GVariant **data = g_new (GVariant *, MAX (n, 1));
  g_autofree GVariant **conf = g_new (GVariant *, MAX (n, 1));
  guint n_conf = 0;

  for (guint i = 0; i < n; i++)
    {
      const SpRaftEntry *e = &g_array_index (entries, SpRaftEntry, i);
      guint64 *f = fields + i * ENTRY_LEN;

      f[ENTRY_TERM] = e->term;
      f[ENTRY_INDEX] = e->index;
      if (e->type == SP_RAFT_ENTRY_CONF)
        f[ENTRY_KIND] = e->data ? KIND_CONF_DATA : KIND_CONF;
      else
        f[ENTRY_KIND] = e->data ? KIND_DATA : KIND_NOOP;
      data[i] = e->data ? bytes_to_variant (e->data)
                        : g_variant_new_fixed_array (G_VARIANT_TYPE_BYTE, NULL, 0, 1);
      if (e->conf && e->type == SP_RAFT_ENTRY_CONF)
        conf[n_conf++] = conf_to_variant (e->conf);
    }
  *meta = ids_to_variant (fields, n * ENTRY_LEN);
  *datas = g_variant_new_array (G_VARIANT_TYPE_BYTESTRING, data, n);
  *confs = g_variant_new_array (types ()->conf, conf, n_conf);
}

GBytes *
sp_wire_msg_to_bytes (const SpRaftMsg *m)
{
  guint64 header[HEADER_LEN] = {
    [MSG_VERSION] = SP_WIRE_VERSION,
    [MSG_TYPE] = m->type,
    [MSG_FLAGS] = (m->reject ? MSG_REJECT : 0) | (m->force ? MSG_FORCE : 0),
    [MSG_FROM] = m->from,
    [MSG_TO] = m->to,
    [MSG_TERM] = m->term,
    [MSG_LOG_TERM] = m->log_term,
    [MSG_INDEX] = m->index,
    [MSG_COMMIT] = m->commit,
    [MSG_HINT_INDEX] = m->hint_index,
    [MSG_CONTEXT] = m->context,
  };
  GVariant *fields[4];

  if (m->type != SP_RAFT_MSG_APPEND && !(m->type == SP_RAFT_MSG_SNAPSHOT && m->snapshot))
    {
      /* Entries or a snapshot where they do not belong stay out; a Snapshot
       * without one is sent as it is, and refused on arrival. */
      guint64 *le = g_new (guint64, HEADER_LEN);

      for (guint i = 0; i < HEADER_LEN; i++)
        le[i] = GUINT64_TO_LE (header[i]);
      return g_bytes_new_take (le, sizeof header);
    }
  fields[0] = ids_to_variant (header, HEADER_LEN);
  if (m->type == SP_RAFT_MSG_APPEND)
    {
      entries_to_variants (m->entries, &fields[1], &fields[2], &fields[3]);
      return record_to_bytes (g_variant_new_tuple (fields, 4));
    }
  fields[1] = snapshot_to_variant (m->snapshot);
  return record_to_bytes (g_variant_new_tuple (fields, 2));
}

GBytes *
sp_wire_entry_to_bytes (const SpRaftEntry *e)
{
  return record_to_bytes (record_new (sp_wire_entry_to_variant (e)));
}

GBytes *
sp_wire_hard_state_to_bytes (const SpRaftHardState *hs)
{
  GVariant *fields[] = {
    g_variant_new_uint64 (hs->term),
    g_variant_new_uint64 (hs->vote),
    g_variant_new_uint64 (hs->commit),
  };

  return record_to_bytes (record_new (g_variant_new_tuple (fields, G_N_ELEMENTS (fields))));
}

GBytes *
sp_wire_snapshot_to_bytes (const SpRaftSnapshot *s)
{
  return record_to_bytes (record_new (snapshot_to_variant (s)));
}

/* ---- decoding ----------------------------------------------------------- */

/* Children read without a format string to parse per call. */
static guint64
child_u64 (GVariant *v, gsize i)
{
  g_autoptr (GVariant) c = g_variant_get_child_value (v, i);

  return g_variant_get_uint64 (c);
}

static guint8
child_byte (GVariant *v, gsize i)
{
  g_autoptr (GVariant) c = g_variant_get_child_value (v, i);

  return g_variant_get_byte (c);
}

static const guint64 *
child_ids (GVariant *v, gsize i, GVariant **child, gsize *n)
{
  *child = g_variant_get_child_value (v, i);
  return g_variant_get_fixed_array (*child, n, sizeof (guint64));
}

/* Errors name the field; callers prefix the path to it ("entries[2]."). */
static gboolean malformed (GError **error, const char *format, ...) G_GNUC_PRINTF (2, 3);

static gboolean
malformed (GError **error, const char *format, ...)
{
  g_autofree char *message = NULL;
  va_list args;

  va_start (args, format);
  message = g_strdup_vprintf (format, args);
  va_end (args);
  g_set_error_literal (error, SP_WIRE_ERROR, SP_WIRE_ERROR_MALFORMED, message);
  return FALSE;
}

static gboolean
conf_from_variant (GVariant *v, SpRaftConf *out, GError **error)
{
  g_autoptr (GVariant) voters_v = NULL;
  g_autoptr (GVariant) learners_v = NULL;
  gsize n_voters, n_learners;
  const guint64 *voters = child_ids (v, 0, &voters_v, &n_voters);
  const guint64 *learners = child_ids (v, 1, &learners_v, &n_learners);
  gsize n = n_voters + n_learners;

  memset (out, 0, sizeof *out);
  if (n > SP_RAFT_MAX_NODES)
    return malformed (error,
                      "conf: %" G_GSIZE_FORMAT " voters and %" G_GSIZE_FORMAT
                      " learners, at most %d in all",
                      n_voters, n_learners, SP_RAFT_MAX_NODES);
  for (gsize i = 0; i < n; i++)
    {
      guint64 id = i < n_voters ? voters[i] : learners[i - n_voters];

      /* a zero or repeated id would break quorum counting in the core */
      if (id == SP_RAFT_NONE)
        return malformed (error, "conf: node id 0 is reserved");
      if (sp_raft_conf_is_voter (out, id) || sp_raft_conf_is_learner (out, id))
        return malformed (error, "conf: node %" G_GUINT64_FORMAT " is listed twice", id);
      if (i < n_voters)
        out->voters[out->n_voters++] = id;
      else
        out->learners[out->n_learners++] = id;
    }
  return TRUE;
}

static gboolean
conf_dup_from_variant (GVariant *v, SpRaftConf **out, GError **error)
{
  SpRaftConf c;

  if (!conf_from_variant (v, &c, error))
    return FALSE;
  *out = g_rc_box_dup (sizeof c, &c);
  return TRUE;
}

/* copy: detach from the buffer v lives in, so a small entry does not pin a
 * whole received frame. */
static GBytes *
bytes_from_variant (GVariant *v, gboolean copy)
{
  if (copy)
    return g_bytes_new (g_variant_get_data (v), g_variant_get_size (v));
  return g_variant_get_data_as_bytes (v);
}

static GBytes *
data_from_variant (GVariant *maybe, gboolean copy)
{
  g_autoptr (GVariant) child = g_variant_get_maybe (maybe);

  return child ? bytes_from_variant (child, copy) : NULL;
}

static gboolean
entry_from_variant (GVariant *v, SpRaftEntry *out, GError **error)
{
  g_autoptr (GVariant) data = g_variant_get_child_value (v, 3);
  g_autoptr (GVariant) conf = g_variant_get_child_value (v, 4);
  g_autoptr (GVariant) conf_v = g_variant_get_maybe (conf);
  guint8 type = child_byte (v, 2);

  memset (out, 0, sizeof *out);
  out->term = child_u64 (v, 0);
  out->index = child_u64 (v, 1);
  if (type > SP_RAFT_ENTRY_CONF)
    return malformed (error, "type: %u is not an entry type", type);
  if (out->term == 0)
    return malformed (error, "term: 0 is not an entry term");
  if (out->index == 0)
    return malformed (error, "index: 0 is not a log index");
  if (type == SP_RAFT_ENTRY_CONF && !conf_v)
    return malformed (error, "conf: missing from a CONF entry");
  if (type == SP_RAFT_ENTRY_NORMAL && conf_v)
    return malformed (error, "conf: present in a NORMAL entry");
  if (conf_v && !conf_dup_from_variant (conf_v, &out->conf, error))
    return FALSE;
  out->type = type;
  out->data = data_from_variant (data, TRUE);
  return TRUE;
}

static SpRaftSnapshot *
snapshot_from_variant (GVariant *v, GError **error)
{
  g_autoptr (GVariant) conf = g_variant_get_child_value (v, 2);
  g_autoptr (GVariant) data = g_variant_get_child_value (v, 3);
  g_autoptr (SpRaftSnapshot) s = g_new0 (SpRaftSnapshot, 1);

  s->index = child_u64 (v, 0);
  s->term = child_u64 (v, 1);
  if (!conf_from_variant (conf, &s->conf, error))
    return NULL;
  /* the snapshot is most of its buffer: share it */
  s->data = data_from_variant (data, FALSE);
  return g_steal_pointer (&s);
}

/* The version in a record's first two bytes. */
static gboolean
check_version (const guint8 *p, gsize size, guint expected_version, GError **error)
{
  guint version;

  if (size < 2)
    return malformed (error, "version: missing (%" G_GSIZE_FORMAT " bytes)", size);
  version = p[0] | (guint)p[1] << 8;
  if (version != expected_version)
    {
      g_set_error (error, SP_WIRE_ERROR, SP_WIRE_ERROR_VERSION,
                   "version: %u is not supported (this build speaks %u)", version,
                   expected_version);
      return FALSE;
    }
  return TRUE;
}

/* Checks the version of a top-level record and reads it as type. */
static GVariant *
record_from_bytes (GBytes *bytes, const GVariantType *type, guint expected_version, GError **error)
{
  gsize size;
  const guint8 *p = g_bytes_get_data (bytes, &size);
  g_autoptr (GVariant) v = NULL;

  if (!check_version (p, size, expected_version, error))
    return NULL;
  v = g_variant_ref_sink (g_variant_new_from_bytes (type, bytes, FALSE));
  if (G_BYTE_ORDER == G_BIG_ENDIAN)
    {
      GVariant *swapped = g_variant_byteswap (v);

      g_variant_unref (v);
      v = swapped;
    }
  return g_steal_pointer (&v);
}

static gboolean
msg_entries_from_variant (GVariant *v, SpRaftMsg *m, GError **error)
{
  g_autoptr (GVariant) meta_v = NULL;
  g_autoptr (GVariant) datas = g_variant_get_child_value (v, 2);
  g_autoptr (GVariant) confs = g_variant_get_child_value (v, 3);
  gsize n_fields, n = g_variant_n_children (datas), n_confs = g_variant_n_children (confs);
  const guint64 *fields = child_ids (v, 1, &meta_v, &n_fields);
  gsize conf_at = 0;

  if (n_fields != n * ENTRY_LEN)
    return malformed (error,
                      "entries: %" G_GSIZE_FORMAT " values for %" G_GSIZE_FORMAT
                      " entries, expected %d each",
                      n_fields, n, ENTRY_LEN);
  m->entries = sp_raft_entries_new ((guint)n);
  for (gsize i = 0; i < n; i++)
    {
      const guint64 *f = fields + i * ENTRY_LEN;
      g_autoptr (GVariant) data = g_variant_get_child_value (datas, i);
      SpRaftEntry e = { .term = f[ENTRY_TERM], .index = f[ENTRY_INDEX] };

      if (f[ENTRY_KIND] >= N_KINDS)
        return malformed (error, "entries[%" G_GSIZE_FORMAT "].kind: %" G_GUINT64_FORMAT, i,
                          f[ENTRY_KIND]);
      if (e.term == 0)
        return malformed (error, "entries[%" G_GSIZE_FORMAT "].term: 0 is not an entry term", i);
      /* 0 first: an index after G_MAXUINT64 would wrap around to it */
      if (e.index == 0 || e.index != m->index + 1 + i)
        return malformed (error,
                          "entries[%" G_GSIZE_FORMAT "].index: %" G_GUINT64_FORMAT
                          " does not follow %" G_GUINT64_FORMAT,
                          i, e.index, m->index + i);
      if ((f[ENTRY_KIND] == KIND_NOOP || f[ENTRY_KIND] == KIND_CONF)
          && g_variant_get_size (data) > 0)
        return malformed (error, "entries[%" G_GSIZE_FORMAT "].data: present in a %s entry", i,
                          f[ENTRY_KIND] == KIND_CONF ? "CONF" : "no-op");
      if (f[ENTRY_KIND] == KIND_CONF || f[ENTRY_KIND] == KIND_CONF_DATA)
        {
          g_autoptr (GVariant) conf = NULL;

          if (conf_at == n_confs)
            return malformed (error, "entries[%" G_GSIZE_FORMAT "].conf: missing", i);
          conf = g_variant_get_child_value (confs, conf_at++);
          e.type = SP_RAFT_ENTRY_CONF;
          if (!conf_dup_from_variant (conf, &e.conf, error))
            {
              g_prefix_error (error, "entries[%" G_GSIZE_FORMAT "].", i);
              return FALSE;
            }
        }
      if (f[ENTRY_KIND] == KIND_DATA || f[ENTRY_KIND] == KIND_CONF_DATA)
        e.data = bytes_from_variant (data, TRUE);
      g_array_append_val (m->entries, e);
    }
  if (conf_at != n_confs)
    return malformed (error,
                      "entries: %" G_GSIZE_FORMAT " confs for %" G_GSIZE_FORMAT " CONF entries",
                      n_confs, conf_at);
  return TRUE;
}

/* n values in host order */
static gboolean
msg_header_from_values (const guint64 *header, gsize n, SpRaftMsg *m, GError **error)
{
  /* the first bytes said so, but the whole value must say it too */
  if (n != HEADER_LEN || header[MSG_VERSION] != SP_WIRE_VERSION)
    return malformed (error, "header: %" G_GSIZE_FORMAT " values, expected %d", n, HEADER_LEN);
  if (header[MSG_FLAGS] & ~(guint64)(MSG_REJECT | MSG_FORCE))
    return malformed (error, "flags: %" G_GUINT64_FORMAT " has unknown bits", header[MSG_FLAGS]);
  m->type = header[MSG_TYPE];
  m->reject = (header[MSG_FLAGS] & MSG_REJECT) != 0;
  m->force = (header[MSG_FLAGS] & MSG_FORCE) != 0;
  m->from = header[MSG_FROM];
  m->to = header[MSG_TO];
  m->term = header[MSG_TERM];
  m->log_term = header[MSG_LOG_TERM];
  m->index = header[MSG_INDEX];
  m->commit = header[MSG_COMMIT];
  m->hint_index = header[MSG_HINT_INDEX];
  m->context = header[MSG_CONTEXT];
  return TRUE;
}

/* A message that is its header alone: the `at` read in place, without the
 * GVariant machinery (most messages are heartbeats and their answers). */
static gboolean
msg_header_from_bytes (const guint8 *p, gsize size, SpRaftMsg *m, GError **error)
{
  guint64 header[HEADER_LEN];

  if (size % sizeof (guint64) != 0)
    return malformed (error, "header: %" G_GSIZE_FORMAT " bytes, not whole values", size);
  if (size != sizeof header)
    return malformed (error, "header: %" G_GSIZE_FORMAT " values, expected %d",
                      size / sizeof (guint64), HEADER_LEN);
  memcpy (header, p, sizeof header);
  for (guint i = 0; i < HEADER_LEN; i++)
    header[i] = GUINT64_FROM_LE (header[i]);
  return msg_header_from_values (header, HEADER_LEN, m, error);
}

SpRaftMsg *
sp_wire_msg_from_bytes (GBytes *bytes, GError **error)
{
  const Types *t = types ();
  g_autoptr (SpRaftMsg) m = g_new0 (SpRaftMsg, 1);
  g_autoptr (GVariant) v = NULL;
  g_autoptr (GVariant) header = NULL;
  g_autoptr (GVariant) body = NULL;
  gsize size, n;
  const guint8 *p = g_bytes_get_data (bytes, &size);
  guint64 msg_type = G_MAXUINT64;
  gboolean header_only;
  const guint64 *values;

  if (size > SP_WIRE_MAX_FRAME)
    {
      g_set_error (error, SP_WIRE_ERROR, SP_WIRE_ERROR_TOO_LARGE,
                   "raft message: %" G_GSIZE_FORMAT " bytes, at most %u", size, SP_WIRE_MAX_FRAME);
      return NULL;
    }
  /* The type is the header's second value (see the top of the file): it
   * says how to read the record, read once.  The version comes first. */
  if (size >= 2 * sizeof (guint64))
    {
      memcpy (&msg_type, p + sizeof (guint64), sizeof msg_type);
      msg_type = GUINT64_FROM_LE (msg_type);
    }
  header_only = msg_type != SP_RAFT_MSG_APPEND && msg_type != SP_RAFT_MSG_SNAPSHOT;
  if (header_only ? !check_version (p, size, SP_WIRE_VERSION, error)
                  : !(v = record_from_bytes (
                          bytes, msg_type == SP_RAFT_MSG_APPEND ? t->append : t->snapshot_msg,
                          SP_WIRE_VERSION, error)))
    {
      g_prefix_error (error, "raft message: ");
      return NULL;
    }
  if (size < 2 * sizeof (guint64))
    {
      malformed (error, "raft message: header: %" G_GSIZE_FORMAT " bytes", size);
      return NULL;
    }
  if (msg_type >= SP_RAFT_MSG_N_TYPES)
    {
      malformed (error, "raft message: type: %" G_GUINT64_FORMAT " is not a message type",
                 msg_type);
      return NULL;
    }
  if (header_only)
    {
      if (!msg_header_from_bytes (p, size, m, error))
        {
          g_prefix_error (error, "raft message: ");
          return NULL;
        }
      return g_steal_pointer (&m);
    }
  header = g_variant_get_child_value (v, 0);
  values = g_variant_get_fixed_array (header, &n, sizeof (guint64));
  if (!msg_header_from_values (values, n, m, error)
      || (m->type == SP_RAFT_MSG_APPEND && !msg_entries_from_variant (v, m, error)))
    {
      g_prefix_error (error, "raft message: ");
      return NULL;
    }
  if (m->type == SP_RAFT_MSG_SNAPSHOT)
    {
      body = g_variant_get_child_value (v, 1);
      if (g_variant_get_size (body) == 0)
        {
          malformed (error, "raft message: snapshot: missing");
          return NULL;
        }
      if (!(m->snapshot = snapshot_from_variant (body, error)))
        {
          g_prefix_error (error, "raft message: snapshot.");
          return NULL;
        }
    }
  return g_steal_pointer (&m);
}

gboolean
sp_wire_entry_from_variant (GVariant *v, SpRaftEntry *out, GError **error)
{
  if (!g_variant_is_of_type (v, types ()->entry))
    {
      memset (out, 0, sizeof *out);
      return malformed (error, "log entry: type %s, expected %s", g_variant_get_type_string (v),
                        ENTRY_TYPE);
    }
  if (!entry_from_variant (v, out, error))
    {
      g_prefix_error (error, "log entry: ");
      return FALSE;
    }
  return TRUE;
}

gboolean
sp_wire_entry_from_bytes (GBytes *bytes, SpRaftEntry *out, GError **error)
{
  g_autoptr (GVariant) v
      = record_from_bytes (bytes, types ()->entry_record, SP_WIRE_RECORD_VERSION, error);
  g_autoptr (GVariant) entry = NULL;

  memset (out, 0, sizeof *out);
  if (!v)
    {
      g_prefix_error (error, "log entry: ");
      return FALSE;
    }
  entry = g_variant_get_child_value (v, 1);
  if (!entry_from_variant (entry, out, error))
    {
      g_prefix_error (error, "log entry: ");
      return FALSE;
    }
  return TRUE;
}

gboolean
sp_wire_hard_state_from_bytes (GBytes *bytes, SpRaftHardState *out, GError **error)
{
  g_autoptr (GVariant) v
      = record_from_bytes (bytes, types ()->hard_state, SP_WIRE_RECORD_VERSION, error);
  g_autoptr (GVariant) body = NULL;

  if (!v)
    {
      g_prefix_error (error, "hard state: ");
      return FALSE;
    }
  /* fixed in size: a record of another size would read as zeros */
  if (!g_variant_is_normal_form (v))
    return malformed (error, "hard state: %" G_GSIZE_FORMAT " bytes are not a (q(ttt))",
                      g_bytes_get_size (bytes));
  body = g_variant_get_child_value (v, 1);
  out->term = child_u64 (body, 0);
  out->vote = child_u64 (body, 1);
  out->commit = child_u64 (body, 2);
  return TRUE;
}

SpRaftSnapshot *
sp_wire_snapshot_from_bytes (GBytes *bytes, GError **error)
{
  g_autoptr (GVariant) v
      = record_from_bytes (bytes, types ()->snapshot_record, SP_WIRE_RECORD_VERSION, error);
  g_autoptr (GVariant) body = NULL;
  SpRaftSnapshot *s;

  if (!v)
    {
      g_prefix_error (error, "snapshot: ");
      return NULL;
    }
  body = g_variant_get_child_value (v, 1);
  s = snapshot_from_variant (body, error);
  if (!s)
    g_prefix_error (error, "snapshot: ");
  return s;
}

/* ---- framing ------------------------------------------------------------ */

void
sp_wire_frame_header (guint32 len, guint8 out[4])
{
  guint32 be = GUINT32_TO_BE (len);

  memcpy (out, &be, sizeof be);
}

gboolean
sp_wire_frame_parse_header (const guint8 in[4], guint32 *len, GError **error)
{
  guint32 be, n;

  memcpy (&be, in, sizeof be);
  n = GUINT32_FROM_BE (be);
  if (n > SP_WIRE_MAX_FRAME)
    {
      g_set_error (error, SP_WIRE_ERROR, SP_WIRE_ERROR_TOO_LARGE, "frame: %u bytes, at most %u", n,
                   SP_WIRE_MAX_FRAME);
      return FALSE;
    }
  *len = n;
  return TRUE;
}
