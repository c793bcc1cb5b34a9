/* The fence: when a new leader may hold what the previous holder held (its
 * addresses, then sparrow-leader.target).  The one home of its arithmetic;
 * the fault model it assumes is written out in doc/design.md.
 *
 * The mechanism: the previous holder's lease ran out at most a lease after
 * the last moment a voter that elected the new leader may have heard it
 * (the heartbeat the lease rests on was sent before that).  At that end,
 * its fence keeper (a process of its own, outside sparrowd's cgroup)
 * removes its addresses, stops the leader target and kills sparrowd,
 * within keeper-ms.  Those times pass on the old leader's clock: × 1.05
 * for drift, plus one tick of phase.  The leader watchdog is no part of
 * the fence: it is the backstop for the double fault (keeper dead and
 * sparrowd stalled), bounded by sp_fence_backstop_ms ().
 *
 * Static figures come from the configuration; an SpFence is one leader's
 * fence at run time, started in the first publication that finds it
 * leader.  Times are microseconds of the caller's clock (CLOCK_BOOTTIME). */
#pragma once

#include <glib.h>

#include "config.h"

G_BEGIN_DECLS

/* systemd arms the service watchdog with its default timer accuracy: it
 * fires up to this late. */
#define SP_FENCE_WATCHDOG_SLACK_MS 250

/* The node's tick: the largest up to 10 ms that both timeouts are whole
 * numbers of.  The leader's lease, counted from the last heartbeat a
 * quorum answered. */
guint sp_fence_tick_ms (const SpConfig *config);
guint sp_fence_lease_ms (const SpConfig *config);

/* How long the previous holder may still hold after the last moment a
 * voter of the new leader heard it, whether [cluster] fence is on or not. */
guint sp_fence_bound_ms (const SpConfig *config);
/* What a new leader waits: sp_fence_bound_ms, 0 with fence = false. */
guint sp_fence_ms (const SpConfig *config);
/* The longest a new leader waits after its election: a voter heard nothing
 * for an election timeout (less a tick of phase) before it voted. */
guint sp_fence_wait_ms (const SpConfig *config);
/* A double fault, the keeper dead and sparrowd stalled: the leader
 * watchdog kills sparrowd within its interval and systemd's slack after
 * the lease, then the unit's clean-up runs.  Counted as the fence is. */
guint sp_fence_backstop_ms (const SpConfig *config);

typedef struct
{
  gint64 from;    /* when its voters last heard another leader, at most */
  gint64 until;   /* when it may hold (perhaps before its election); -1: not leader */
  gboolean waits; /* FALSE: elected by a transfer, or fence = false */
} SpFence;

/* Not leader (any more). */
void sp_fence_clear (SpFence *f);
gboolean sp_fence_started (const SpFence *f);
/* Elected: heard_age_ticks is sp_raft_heard_age (), fence_ms sp_fence_ms ().
 * A transfer elected it (the old leader let go first): it holds at once. */
void sp_fence_start (SpFence *f, gint64 now, guint heard_age_ticks, guint tick_ms, guint fence_ms,
                     gboolean by_transfer);
/* Started and its end has come. */
gboolean sp_fence_over (const SpFence *f, gint64 now);
/* Milliseconds from now until the fence plus extra_ms has passed, rounded
 * up; 0 when it has, when not started, and when it does not wait. */
guint sp_fence_left_ms (const SpFence *f, gint64 now, guint extra_ms);

G_END_DECLS
