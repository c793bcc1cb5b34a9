/* Durable Raft state under the data directory: hard state, log, snapshot.
 *
 * Files: `snapshot` is replaced atomically (write a temporary, fsync,
 * rename, fsync the directory); `hardstate` holds two checksummed slots,
 * written in place in turn (pwrite, fdatasync), the newer one current;
 * `log` is an append-only sequence of records [u32 length][u32 crc32c]
 * [entry bytes (wire.h)].
 * On open, a record cut short or failing its checksum at the very end is a
 * torn write: the log is cut back to the last whole record and a warning
 * says so; likewise one damaged hard state slot is a torn write, and the
 * other slot (the previous hard state) is used, with a warning.  A bad
 * record followed by good ones, both hard state slots damaged, or a bad
 * snapshot, is corruption: open fails naming the file and the offset.
 *
 * Writes and fsyncs run in one worker thread: everything submitted during a
 * main-loop iteration is written and fsynced as one batch, in order, and
 * each callback is then invoked on the main context that submitted it.  A
 * stalled disk therefore never stops the loop (ticks go on). */
#pragma once

#include <gio/gio.h>

#include "raft/raft.h"

G_BEGIN_DECLS

#define SP_STORAGE_ERROR (sp_storage_error_quark ())
GQuark sp_storage_error_quark (void);

typedef enum
{
  SP_STORAGE_ERROR_IO,
  SP_STORAGE_ERROR_CORRUPT,
} SpStorageError;

typedef struct _SpStorage SpStorage;

/* What open() found; feed it to sp_raft_new() as an SpRaftRestore. */
typedef struct
{
  SpRaftHardState hard_state;
  SpRaftSnapshot *snapshot; /* NULL when none */
  GArray *entries;          /* of SpRaftEntry, following the snapshot */
  gboolean torn_tail_cut;   /* a torn tail was repaired (already logged) */
} SpStorageState;

void sp_storage_state_clear (SpStorageState *state);

/* Creates dir if missing.  Runs synchronously: call before the loop runs. */
SpStorage *sp_storage_open (const char *dir, SpStorageState *state, GError **error);
/* Waits for pending writes, then closes. */
void sp_storage_free (SpStorage *storage);

/* error is NULL on success; it belongs to the storage. */
typedef void (*SpStorageDone) (GError *error, gpointer user_data);

/* One ready's worth of durable state, any part NULL: snapshot (from the
 * leader; replaces the whole log), then entries (replace stored entries from
 * their first index on), then the hard state.  done runs once all of it is
 * on disk (or failed: the node must then stop) — except a hard state that
 * changes only the commit index: that is written but not synced (Raft's
 * commit index is volatile; after a power loss the node may restart with an
 * older one and re-learns it from the leader). */
void sp_storage_persist (SpStorage *storage, const SpRaftSnapshot *snapshot, const GArray *entries,
                         const SpRaftHardState *hard_state, SpStorageDone done, gpointer user_data);

/* A local snapshot at snapshot->index: stored, then log entries up to that
 * index are dropped (the log file is rewritten in the worker). */
void sp_storage_compact (SpStorage *storage, const SpRaftSnapshot *snapshot, SpStorageDone done,
                         gpointer user_data);

/* Bytes in the log file (for compaction decisions and tests). */
guint64 sp_storage_log_size (SpStorage *storage);

/* Batches written so far (tests, benchmark: how well writes coalesce).  A
 * batch costs one fsync of the log and one of the hard state, plus the
 * renames it needs (creating `hardstate` is one); a compaction,
 * or a leader's snapshot contradicting the log, adds one of its own. */
guint sp_storage_sync_count (SpStorage *storage);

/* Tests only: while held, the worker waits before writing its next batch,
 * as behind a stalled disk.  sp_storage_free releases it. */
void sp_storage_hold_writes (SpStorage *storage, gboolean hold);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (SpStorage, sp_storage_free)
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (SpStorageState, sp_storage_state_clear)

G_END_DECLS
