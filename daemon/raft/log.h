/* The in-memory Raft log of one core: a snapshot followed by entries.
 *
 * Index bookkeeping: entries hold (snapshot index, last]; committed and
 * applied are cursors into them.  unstable_from is the first index not yet
 * handed to the application for persisting (entries before it are durable
 * once the ready that carried them was advanced). */
#pragma once

#include "raft.h"

typedef struct
{
  SpRaftSnapshot *snapshot; /* never NULL: index 0 when there is none */
  gboolean snapshot_unstable;
  GArray *entries; /* of SpRaftEntry, entries[i].index = snapshot->index + 1 + i */
  guint64 committed;
  guint64 applied;
  guint64 unstable_from;
} SpLog;

void sp_log_init (SpLog *log);
void sp_log_clear (SpLog *log);

guint64 sp_log_first_index (const SpLog *log); /* snapshot index + 1 */
guint64 sp_log_last_index (const SpLog *log);
guint64 sp_log_last_term (const SpLog *log);
/* Term of index, or 0 when index is compacted (below the snapshot) or beyond
 * the log; the snapshot's own index reports the snapshot term. */
guint64 sp_log_term (const SpLog *log, guint64 index);
gboolean sp_log_match_term (const SpLog *log, guint64 index, guint64 term);
const SpRaftEntry *sp_log_entry (const SpLog *log, guint64 index);
gboolean sp_log_is_up_to_date (const SpLog *log, guint64 last_index, guint64 last_term);

/* Appends src entries at the end (their index must follow last). */
void sp_log_append (SpLog *log, const SpRaftEntry *src, guint n);
/* Follower side of AppendEntries: returns FALSE when (prev_index,
 * prev_term) does not match; otherwise drops any conflicting suffix,
 * appends what is new and sets *last_new to prev_index + n. */
gboolean sp_log_maybe_append (SpLog *log, guint64 prev_index, guint64 prev_term,
                              const GArray *entries, guint64 *last_new);
/* Largest index <= index whose term is <= term (fast back-off hint); stops
 * at the snapshot index. */
guint64 sp_log_find_conflict_by_term (const SpLog *log, guint64 index, guint64 term);
/* Copies up to max entries from lo on into a new array. */
GArray *sp_log_slice (const SpLog *log, guint64 lo, guint max);

void sp_log_commit_to (SpLog *log, guint64 index);
/* Replaces everything with a snapshot received from the leader. */
void sp_log_restore (SpLog *log, const SpRaftSnapshot *snap);
/* Local compaction: snapshot at index <= applied, drop entries <= index. */
void sp_log_compact (SpLog *log, guint64 index, const SpRaftConf *conf, GBytes *data);
