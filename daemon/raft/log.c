#include "log.h"

void
sp_log_init (SpLog *log)
{
  log->snapshot = g_new0 (SpRaftSnapshot, 1);
  log->snapshot_unstable = FALSE;
  log->entries = sp_raft_entries_new (64);
  log->committed = 0;
  log->applied = 0;
  log->unstable_from = 1;
}

void
sp_log_clear (SpLog *log)
{
  g_clear_pointer (&log->snapshot, sp_raft_snapshot_free);
  g_clear_pointer (&log->entries, g_array_unref);
}

guint64
sp_log_first_index (const SpLog *log)
{
  return log->snapshot->index + 1;
}

guint64
sp_log_last_index (const SpLog *log)
{
  return log->snapshot->index + log->entries->len;
}

guint64
sp_log_term (const SpLog *log, guint64 index)
{
  if (index == log->snapshot->index)
    return log->snapshot->term;
  if (index < log->snapshot->index || index > sp_log_last_index (log))
    return 0;
  return g_array_index (log->entries, SpRaftEntry, index - log->snapshot->index - 1).term;
}

guint64
sp_log_last_term (const SpLog *log)
{
  return sp_log_term (log, sp_log_last_index (log));
}

gboolean
sp_log_match_term (const SpLog *log, guint64 index, guint64 term)
{
  if (index < log->snapshot->index || index > sp_log_last_index (log))
    return FALSE;
  return sp_log_term (log, index) == term;
}

const SpRaftEntry *
sp_log_entry (const SpLog *log, guint64 index)
{
  if (index <= log->snapshot->index || index > sp_log_last_index (log))
    return NULL;
  return &g_array_index (log->entries, SpRaftEntry, index - log->snapshot->index - 1);
}

gboolean
sp_log_is_up_to_date (const SpLog *log, guint64 last_index, guint64 last_term)
{
  guint64 my_term = sp_log_last_term (log);

  return last_term > my_term || (last_term == my_term && last_index >= sp_log_last_index (log));
}

void
sp_log_append (SpLog *log, const SpRaftEntry *src, guint n)
{
  for (guint i = 0; i < n; i++)
    {
      SpRaftEntry e;

      g_assert (src[i].index == sp_log_last_index (log) + 1);
      sp_raft_entry_copy (&e, &src[i]);
      g_array_append_val (log->entries, e);
    }
}

static void
truncate_from (SpLog *log, guint64 index)
{
  /* Committed entries are never replaced: that would be a safety bug. */
  g_assert (index > log->committed);
  g_array_set_size (log->entries, index - log->snapshot->index - 1);
  if (log->unstable_from > index)
    log->unstable_from = index;
}

gboolean
sp_log_maybe_append (SpLog *log, guint64 prev_index, guint64 prev_term, const GArray *entries,
                     guint64 *last_new)
{
  guint n = entries ? entries->len : 0;
  guint skip = 0;

  if (!sp_log_match_term (log, prev_index, prev_term))
    {
      /* Below our snapshot everything is committed and matches. */
      if (prev_index >= log->snapshot->index)
        return FALSE;
    }

  for (; skip < n; skip++)
    {
      const SpRaftEntry *e = &g_array_index (entries, SpRaftEntry, skip);

      if (e->index <= log->snapshot->index)
        continue;
      if (e->index > sp_log_last_index (log))
        break;
      if (sp_log_term (log, e->index) != e->term)
        {
          truncate_from (log, e->index);
          break;
        }
    }
  if (skip < n)
    sp_log_append (log, &g_array_index (entries, SpRaftEntry, skip), n - skip);

  *last_new = prev_index + n;
  return TRUE;
}

guint64
sp_log_find_conflict_by_term (const SpLog *log, guint64 index, guint64 term)
{
  index = MIN (index, sp_log_last_index (log));
  while (index > log->snapshot->index && sp_log_term (log, index) > term)
    index--;
  return index;
}

GArray *
sp_log_slice (const SpLog *log, guint64 lo, guint max)
{
  guint64 last = sp_log_last_index (log);
  GArray *out;

  g_assert (lo > log->snapshot->index);
  out = sp_raft_entries_new (lo <= last ? MIN (max, last - lo + 1) : 0);
  for (guint64 i = lo; i <= last && out->len < max; i++)
    {
      SpRaftEntry e;

      sp_raft_entry_copy (&e, sp_log_entry (log, i));
      g_array_append_val (out, e);
    }
  return out;
}

void
sp_log_commit_to (SpLog *log, guint64 index)
{
  index = MIN (index, sp_log_last_index (log));
  if (index > log->committed)
    log->committed = index;
}

void
sp_log_restore (SpLog *log, const SpRaftSnapshot *snap)
{
  sp_raft_snapshot_free (log->snapshot);
  log->snapshot = sp_raft_snapshot_copy (snap);
  log->snapshot_unstable = TRUE;
  g_array_set_size (log->entries, 0);
  log->committed = snap->index;
  log->applied = snap->index;
  log->unstable_from = snap->index + 1;
}

void
sp_log_compact (SpLog *log, guint64 index, const SpRaftConf *conf, GBytes *data)
{
  guint64 term = sp_log_term (log, index);
  guint64 drop = index - log->snapshot->index;

  g_assert (index > log->snapshot->index && index <= log->applied);
  g_array_remove_range (log->entries, 0, drop);
  g_clear_pointer (&log->snapshot->data, g_bytes_unref);
  log->snapshot->index = index;
  log->snapshot->term = term;
  log->snapshot->conf = *conf;
  log->snapshot->data = data ? g_bytes_ref (data) : NULL;
  if (log->unstable_from <= index)
    log->unstable_from = index + 1;
}
