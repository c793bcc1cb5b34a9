#include "progress.h"

void
sp_progress_init (SpProgress *p, guint64 id, gboolean voter, guint64 next, guint cap)
{
  *p = (SpProgress){ .id = id, .voter = voter, .state = SP_PROGRESS_PROBE, .next = next };
  p->inflight_cap = cap;
  p->inflight = g_new0 (guint64, cap);
}

void
sp_progress_clear (SpProgress *p)
{
  g_clear_pointer (&p->inflight, g_free);
}

static void
reset_state (SpProgress *p, SpProgressState state)
{
  p->state = state;
  p->probe_sent = FALSE;
  p->pending_snapshot = 0;
  p->inflight_start = 0;
  p->inflight_count = 0;
}

void
sp_progress_become_probe (SpProgress *p)
{
  /* Coming back from a snapshot, resume right after it. */
  guint64 from = p->state == SP_PROGRESS_SNAPSHOT ? MAX (p->match, p->pending_snapshot) : p->match;

  reset_state (p, SP_PROGRESS_PROBE);
  p->next = from + 1;
}

void
sp_progress_become_replicate (SpProgress *p)
{
  reset_state (p, SP_PROGRESS_REPLICATE);
  p->next = p->match + 1;
}

void
sp_progress_become_snapshot (SpProgress *p, guint64 index, guint64 now)
{
  reset_state (p, SP_PROGRESS_SNAPSHOT);
  p->pending_snapshot = index;
  p->snapshot_sent_at = now;
}

gboolean
sp_progress_is_paused (const SpProgress *p)
{
  switch (p->state)
    {
      case SP_PROGRESS_PROBE:
        return p->probe_sent;
      case SP_PROGRESS_REPLICATE:
        return p->inflight_count >= p->inflight_cap;
      case SP_PROGRESS_SNAPSHOT:
      default:
        return TRUE;
    }
}

void
sp_progress_sent (SpProgress *p, guint64 last, guint n)
{
  if (p->state == SP_PROGRESS_REPLICATE)
    {
      if (n == 0)
        return;
      p->next = last + 1;
      p->inflight[(p->inflight_start + p->inflight_count) % p->inflight_cap] = last;
      p->inflight_count++;
    }
  else if (p->state == SP_PROGRESS_PROBE)
    {
      p->probe_sent = TRUE;
    }
}

static void
free_inflight_to (SpProgress *p, guint64 index)
{
  while (p->inflight_count > 0 && p->inflight[p->inflight_start] <= index)
    {
      p->inflight_start = (p->inflight_start + 1) % p->inflight_cap;
      p->inflight_count--;
    }
}

gboolean
sp_progress_update (SpProgress *p, guint64 index)
{
  gboolean moved = FALSE;

  if (index > p->match)
    {
      p->match = index;
      moved = TRUE;
    }
  p->next = MAX (p->next, index + 1);
  p->probe_sent = FALSE;
  free_inflight_to (p, index);
  return moved;
}

gboolean
sp_progress_reject (SpProgress *p, guint64 rejected, guint64 hint)
{
  if (p->state == SP_PROGRESS_REPLICATE)
    {
      /* Only a rejection of something after the match point is news. */
      if (rejected <= p->match)
        return FALSE;
      sp_progress_become_probe (p);
      p->next = MAX (MIN (rejected, hint + 1), p->match + 1);
      return TRUE;
    }
  /* PROBE: only the answer to the probe (prev = next - 1) counts. */
  if (p->next == 0 || rejected != p->next - 1)
    return FALSE;
  p->next = MAX (MIN (rejected, hint + 1), p->match + 1);
  p->probe_sent = FALSE;
  return TRUE;
}
