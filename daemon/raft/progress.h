/* The leader's view of one member: how far its log matches, what is in
 * flight to it, and when it was last heard from (check-quorum, lease). */
#pragma once

#include <glib.h>

typedef enum
{
  SP_PROGRESS_PROBE,     /* one append at a time until the match point is found */
  SP_PROGRESS_REPLICATE, /* optimistic pipelining, bounded by the inflight window */
  SP_PROGRESS_SNAPSHOT,  /* an InstallSnapshot is on its way */
} SpProgressState;

typedef struct
{
  guint64 id;
  gboolean voter;
  SpProgressState state;
  guint64 match;
  guint64 next;
  gboolean probe_sent;      /* PROBE: wait for an answer or a heartbeat */
  guint64 pending_snapshot; /* SNAPSHOT: its index */
  guint64 snapshot_sent_at; /* leader tick of the last snapshot sent */
  guint64 last_heard;       /* leader tick of the last message from it */
  guint64 lease_stamp;      /* newest heartbeat stamp it acknowledged */
  /* Ring of the last index of each append in flight. */
  guint64 *inflight;
  guint inflight_cap;
  guint inflight_start;
  guint inflight_count;
} SpProgress;

void sp_progress_init (SpProgress *p, guint64 id, gboolean voter, guint64 next, guint cap);
void sp_progress_clear (SpProgress *p);

void sp_progress_become_probe (SpProgress *p);
void sp_progress_become_replicate (SpProgress *p);
void sp_progress_become_snapshot (SpProgress *p, guint64 index, guint64 now);

/* Whether another append may be sent now. */
gboolean sp_progress_is_paused (const SpProgress *p);
/* Bookkeeping after sending an append whose last entry is last (n entries). */
void sp_progress_sent (SpProgress *p, guint64 last, guint n);
/* A successful answer up to index: returns TRUE if match moved. */
gboolean sp_progress_update (SpProgress *p, guint64 index);
/* A rejection of the append at rejected; hint is where to probe next.
 * Returns FALSE for a stale rejection. */
gboolean sp_progress_reject (SpProgress *p, guint64 rejected, guint64 hint);
