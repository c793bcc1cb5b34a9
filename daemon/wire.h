/* The GVariant codec shared by the transport (messages) and the storage
 * (log entries, hard state, snapshots).  Everything read from a peer or a
 * disk goes through here and is validated before the core sees it.
 *
 * Serialized data is GVariant normal form, little-endian on every host.
 * Each top-level record starts with its version in its first two bytes;
 * an unknown version is an error, not a guess.  Messages (and the
 * transport's hello) are versioned apart from what storage keeps, so the
 * protocol can change without rewriting data directories. */
#pragma once

#include <glib.h>

#include "raft/raft.h"

G_BEGIN_DECLS

#define SP_WIRE_VERSION        2 /* the peer protocol: hello and messages */
#define SP_WIRE_RECORD_VERSION 1 /* storage records: entries, hard state, snapshots */
#define SP_WIRE_MAX_FRAME      (16u * 1024 * 1024) /* bytes, after the length prefix */

#define SP_WIRE_ERROR (sp_wire_error_quark ())
GQuark sp_wire_error_quark (void);

typedef enum
{
  SP_WIRE_ERROR_MALFORMED, /* not the expected type, not normal form, bad field */
  SP_WIRE_ERROR_VERSION,   /* a version this build does not speak */
  SP_WIRE_ERROR_TOO_LARGE,
} SpWireError;

/* Raft messages (transport).  from_bytes validates types, the version,
 * enum ranges, configuration sizes (<= SP_RAFT_MAX_NODES) and entry
 * consistency; the error message says which field is wrong. */
GBytes *sp_wire_msg_to_bytes (const SpRaftMsg *m);
SpRaftMsg *sp_wire_msg_from_bytes (GBytes *bytes, GError **error);

/* Log entries (storage records and message payloads). */
GVariant *sp_wire_entry_to_variant (const SpRaftEntry *e); /* floating */
gboolean sp_wire_entry_from_variant (GVariant *v, SpRaftEntry *out, GError **error);
GBytes *sp_wire_entry_to_bytes (const SpRaftEntry *e);
gboolean sp_wire_entry_from_bytes (GBytes *bytes, SpRaftEntry *out, GError **error);

/* Hard state and snapshots (storage). */
GBytes *sp_wire_hard_state_to_bytes (const SpRaftHardState *hs);
gboolean sp_wire_hard_state_from_bytes (GBytes *bytes, SpRaftHardState *out, GError **error);
GBytes *sp_wire_snapshot_to_bytes (const SpRaftSnapshot *s);
SpRaftSnapshot *sp_wire_snapshot_from_bytes (GBytes *bytes, GError **error);

/* Framing on a stream: 4-byte big-endian length, then the payload. */
void sp_wire_frame_header (guint32 len, guint8 out[4]);
/* Returns the payload length, or FALSE (error set) above SP_WIRE_MAX_FRAME. */
gboolean sp_wire_frame_parse_header (const guint8 in[4], guint32 *len, GError **error);

G_END_DECLS
