/* GVariant formats (little-endian normal form; version first in records):
 *   conf      (atat)                 voters, learners
 *   data      may                    Nothing = NULL data, Just [] = empty
 *   entry     (ttymaym(atat))        term, index, type, data, conf (CONF only)
 *   snapshot  (tt(atat)may)          index, term, conf, data
 * Top-level records:
 *   message     (qyttttttttbba(ttymaym(atat))m(tt(atat)may))
 *               version, type, from, to, term, log_term, index, commit,
 *               hint_index, context, reject, force, entries (APPEND only),
 *               snapshot (SNAPSHOT only)
 *   entry       (q(ttymaym(atat)))
 *   hard state  (q(ttt))             term, vote, commit
 *   snapshot    (q(tt(atat)may))
 * The version is read from the first two bytes before anything else, so a
 * record from another version is reported as such even if its layout
 * differs.  Only messages are held to SP_WIRE_MAX_FRAME: storage records
 * (a snapshot especially) are not bounded by the transport. */
#include "wire.h"

#include <string.h>

#define CONF_TYPE         "(atat)"
#define DATA_TYPE         "may"
#define ENTRY_TYPE        "(ttymaym" CONF_TYPE ")"
#define SNAPSHOT_TYPE     "(tt" CONF_TYPE DATA_TYPE ")"
#define MSG_RECORD        "(qyttttttttbba" ENTRY_TYPE "m" SNAPSHOT_TYPE ")"
#define ENTRY_RECORD      "(q" ENTRY_TYPE ")"
#define HARD_STATE_RECORD "(q(ttt))"
#define SNAPSHOT_RECORD   "(q" SNAPSHOT_TYPE ")"

GQuark
sp_wire_error_quark (void)
{
  return g_quark_from_static_string ("sp-wire-error-quark");
}

/* ---- encoding ----------------------------------------------------------- */

static GVariant *
conf_to_variant (const SpRaftConf *c)
{
  GVariant *ids[] = {
    g_variant_new_fixed_array (G_VARIANT_TYPE_UINT64, c->voters, c->n_voters, sizeof (guint64)),
    g_variant_new_fixed_array (G_VARIANT_TYPE_UINT64, c->learners, c->n_learners, sizeof (guint64)),
  };

  return g_variant_new_tuple (ids, G_N_ELEMENTS (ids));
}

static GVariant *
data_to_variant (GBytes *data)
{
  GVariant *child = data ? g_variant_new_from_bytes (G_VARIANT_TYPE_BYTESTRING, data, TRUE) : NULL;

  return g_variant_new_maybe (G_VARIANT_TYPE_BYTESTRING, child);
}

static GVariant *
snapshot_to_variant (const SpRaftSnapshot *s)
{
  return g_variant_new ("(tt@" CONF_TYPE "@" DATA_TYPE ")", s->index, s->term,
                        conf_to_variant (&s->conf), data_to_variant (s->data));
}

GVariant *
sp_wire_entry_to_variant (const SpRaftEntry *e)
{
  GVariant *conf = e->conf ? conf_to_variant (e->conf) : NULL;

  return g_variant_new ("(tty@" DATA_TYPE "@m" CONF_TYPE ")", e->term, e->index, (guint8)e->type,
                        data_to_variant (e->data),
                        g_variant_new_maybe (G_VARIANT_TYPE (CONF_TYPE), conf));
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

GBytes *
sp_wire_msg_to_bytes (const SpRaftMsg *m)
{
  g_auto (GVariantBuilder) entries = G_VARIANT_BUILDER_INIT (G_VARIANT_TYPE ("a" ENTRY_TYPE));
  GVariant *snapshot = m->snapshot ? snapshot_to_variant (m->snapshot) : NULL;

  for (guint i = 0; m->entries && i < m->entries->len; i++)
    g_variant_builder_add_value (
        &entries, sp_wire_entry_to_variant (&g_array_index (m->entries, SpRaftEntry, i)));
  return record_to_bytes (g_variant_new (
      "(qyttttttttbb@a" ENTRY_TYPE "@m" SNAPSHOT_TYPE ")", (guint16)SP_WIRE_VERSION,
      (guint8)m->type, m->from, m->to, m->term, m->log_term, m->index, m->commit, m->hint_index,
      m->context, m->reject, m->force, g_variant_builder_end (&entries),
      g_variant_new_maybe (G_VARIANT_TYPE (SNAPSHOT_TYPE), snapshot)));
}

GBytes *
sp_wire_entry_to_bytes (const SpRaftEntry *e)
{
  return record_to_bytes (
      g_variant_new ("(q@" ENTRY_TYPE ")", (guint16)SP_WIRE_VERSION, sp_wire_entry_to_variant (e)));
}

GBytes *
sp_wire_hard_state_to_bytes (const SpRaftHardState *hs)
{
  return record_to_bytes (
      g_variant_new (HARD_STATE_RECORD, (guint16)SP_WIRE_VERSION, hs->term, hs->vote, hs->commit));
}

GBytes *
sp_wire_snapshot_to_bytes (const SpRaftSnapshot *s)
{
  return record_to_bytes (
      g_variant_new ("(q@" SNAPSHOT_TYPE ")", (guint16)SP_WIRE_VERSION, snapshot_to_variant (s)));
}

/* ---- decoding ----------------------------------------------------------- */

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
  g_autoptr (GVariant) voters_v = g_variant_get_child_value (v, 0);
  g_autoptr (GVariant) learners_v = g_variant_get_child_value (v, 1);
  gsize n_voters, n_learners;
  const guint64 *voters = g_variant_get_fixed_array (voters_v, &n_voters, sizeof (guint64));
  const guint64 *learners = g_variant_get_fixed_array (learners_v, &n_learners, sizeof (guint64));
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

/* copy: detach from the buffer v lives in, so a small entry does not pin a
 * whole received frame. */
static GBytes *
data_from_variant (GVariant *maybe, gboolean copy)
{
  g_autoptr (GVariant) child = g_variant_get_maybe (maybe);

  if (!child)
    return NULL;
  if (copy)
    return g_bytes_new (g_variant_get_data (child), g_variant_get_size (child));
  return g_variant_get_data_as_bytes (child);
}

static gboolean
entry_from_variant (GVariant *v, SpRaftEntry *out, GError **error)
{
  g_autoptr (GVariant) data = NULL;
  g_autoptr (GVariant) conf = NULL;
  g_autoptr (GVariant) conf_v = NULL;
  guint8 type;

  memset (out, 0, sizeof *out);
  g_variant_get (v, "(tty@" DATA_TYPE "@m" CONF_TYPE ")", &out->term, &out->index, &type, &data,
                 &conf);
  conf_v = g_variant_get_maybe (conf);
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
  if (type == SP_RAFT_ENTRY_CONF && g_variant_n_children (data) > 0)
    return malformed (error, "data: present in a CONF entry");

  if (conf_v)
    {
      SpRaftConf c;

      if (!conf_from_variant (conf_v, &c, error))
        return FALSE;
      out->conf = g_rc_box_dup (sizeof c, &c);
    }
  out->type = type;
  out->data = data_from_variant (data, TRUE);
  return TRUE;
}

static SpRaftSnapshot *
snapshot_from_variant (GVariant *v, GError **error)
{
  g_autoptr (GVariant) conf = NULL;
  g_autoptr (GVariant) data = NULL;
  g_autoptr (SpRaftSnapshot) s = g_new0 (SpRaftSnapshot, 1);

  g_variant_get (v, "(tt@" CONF_TYPE "@" DATA_TYPE ")", &s->index, &s->term, &conf, &data);
  if (!conf_from_variant (conf, &s->conf, error))
    return NULL;
  /* the snapshot is most of its buffer: share it */
  s->data = data_from_variant (data, FALSE);
  return g_steal_pointer (&s);
}

/* Checks the version, the type and normal form of a top-level record. */
static GVariant *
record_from_bytes (GBytes *bytes, const char *type, GError **error)
{
  gsize size;
  const guint8 *p = g_bytes_get_data (bytes, &size);
  g_autoptr (GBytes) padded = NULL;
  g_autoptr (GVariant) v = NULL;
  guint8 *copy;
  guint version;

  if (size < 2)
    {
      malformed (error, "version: missing (%" G_GSIZE_FORMAT " bytes)", size);
      return NULL;
    }
  version = p[0] | (guint)p[1] << 8;
  if (version != SP_WIRE_VERSION)
    {
      g_set_error (error, SP_WIRE_ERROR, SP_WIRE_ERROR_VERSION,
                   "version: %u is not supported (this build speaks %u)", version, SP_WIRE_VERSION);
      return NULL;
    }
  /* GLib's normal-form check reads one byte past a tuple cut short in its
   * padding (gvs_tuple_is_normal: offset > size, not >=): give it a copy
   * with a readable zero byte after the end. */
  copy = g_malloc (size + 1);
  memcpy (copy, p, size);
  copy[size] = 0;
  padded = g_bytes_new_with_free_func (copy, size, g_free, copy);
  v = g_variant_ref_sink (g_variant_new_from_bytes (G_VARIANT_TYPE (type), padded, FALSE));
  if (!g_variant_is_normal_form (v))
    {
      malformed (error, "%" G_GSIZE_FORMAT " bytes are not a normal-form %s", size, type);
      return NULL;
    }
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
  gsize n = g_variant_n_children (v);

  if (m->type != SP_RAFT_MSG_APPEND)
    {
      if (n > 0)
        return malformed (error, "entries: present in a %s message",
                          sp_raft_msg_type_to_string (m->type));
      return TRUE;
    }
  m->entries = sp_raft_entries_new ((guint)n);
  for (gsize i = 0; i < n; i++)
    {
      g_autoptr (GVariant) child = g_variant_get_child_value (v, i);
      guint64 prev = i == 0 ? m->index : g_array_index (m->entries, SpRaftEntry, i - 1).index;
      SpRaftEntry e;

      if (!entry_from_variant (child, &e, error))
        {
          g_prefix_error (error, "entries[%" G_GSIZE_FORMAT "].", i);
          return FALSE;
        }
      /* e.index is never 0, so a wrapping prev + 1 cannot match */
      if (e.index != prev + 1)
        {
          sp_raft_entry_clear (&e);
          return malformed (error,
                            "entries[%" G_GSIZE_FORMAT "].index: %" G_GUINT64_FORMAT
                            " does not follow %" G_GUINT64_FORMAT,
                            i, e.index, prev);
        }
      g_array_append_val (m->entries, e);
    }
  return TRUE;
}

SpRaftMsg *
sp_wire_msg_from_bytes (GBytes *bytes, GError **error)
{
  g_autoptr (SpRaftMsg) m = g_new0 (SpRaftMsg, 1);
  g_autoptr (GVariant) v = NULL;
  g_autoptr (GVariant) entries = NULL;
  g_autoptr (GVariant) snapshot = NULL;
  g_autoptr (GVariant) snapshot_v = NULL;
  guint8 type;

  if (g_bytes_get_size (bytes) > SP_WIRE_MAX_FRAME)
    {
      g_set_error (error, SP_WIRE_ERROR, SP_WIRE_ERROR_TOO_LARGE,
                   "raft message: %" G_GSIZE_FORMAT " bytes, at most %u", g_bytes_get_size (bytes),
                   SP_WIRE_MAX_FRAME);
      return NULL;
    }
  v = record_from_bytes (bytes, MSG_RECORD, error);
  if (!v)
    {
      g_prefix_error (error, "raft message: ");
      return NULL;
    }
  g_variant_get (v, "(qyttttttttbb@a" ENTRY_TYPE "@m" SNAPSHOT_TYPE ")", NULL, &type, &m->from,
                 &m->to, &m->term, &m->log_term, &m->index, &m->commit, &m->hint_index, &m->context,
                 &m->reject, &m->force, &entries, &snapshot);
  snapshot_v = g_variant_get_maybe (snapshot);
  if (type >= SP_RAFT_MSG_N_TYPES)
    {
      malformed (error, "raft message: type: %u is not a message type", type);
      return NULL;
    }
  m->type = type;
  if (!msg_entries_from_variant (entries, m, error))
    {
      g_prefix_error (error, "raft message: ");
      return NULL;
    }
  if ((m->type == SP_RAFT_MSG_SNAPSHOT) != (snapshot_v != NULL))
    {
      malformed (error, "raft message: snapshot: %s a %s message",
                 snapshot_v ? "present in" : "missing from", sp_raft_msg_type_to_string (m->type));
      return NULL;
    }
  if (snapshot_v && !(m->snapshot = snapshot_from_variant (snapshot_v, error)))
    {
      g_prefix_error (error, "raft message: snapshot.");
      return NULL;
    }
  return g_steal_pointer (&m);
}

gboolean
sp_wire_entry_from_variant (GVariant *v, SpRaftEntry *out, GError **error)
{
  if (!g_variant_is_of_type (v, G_VARIANT_TYPE (ENTRY_TYPE)))
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
  g_autoptr (GVariant) v = record_from_bytes (bytes, ENTRY_RECORD, error);
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
  g_autoptr (GVariant) v = record_from_bytes (bytes, HARD_STATE_RECORD, error);

  if (!v)
    {
      g_prefix_error (error, "hard state: ");
      return FALSE;
    }
  g_variant_get (v, HARD_STATE_RECORD, NULL, &out->term, &out->vote, &out->commit);
  return TRUE;
}

SpRaftSnapshot *
sp_wire_snapshot_from_bytes (GBytes *bytes, GError **error)
{
  g_autoptr (GVariant) v = record_from_bytes (bytes, SNAPSHOT_RECORD, error);
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
