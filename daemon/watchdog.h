/* The service watchdog's policy: which interval sparrowd asks systemd for
 * (WATCHDOG_USEC=) and what pings it (WATCHDOG=1).  systemd kills a
 * sparrowd it was not pinged by within the interval (WatchdogSignal=
 * SIGKILL in the unit), and the unit's clean-up then runs.
 *
 * Loose (the unit's WatchdogSec=) while the node holds nothing.  Tight
 * (leader-watchdog-ms) from the moment it leads until everything it held
 * is released: the leader target's stop confirmed by systemd, its
 * addresses gone from the kernel.  Not merely until it stops leading: an
 * old leader starved of CPU lost its lease long before its loop ran the
 * release, and only the tight interval ends it in time when its fence
 * keeper is dead too (the double fault, see fence.h).
 *
 * Pings: while leading, the node's wake-ups (sp_watchdog_awake), at least
 * one per heartbeat, each after the node published its state, so a leader
 * whose loop stalls is killed.  While releasing, the node may sleep an
 * election timeout or more (no leader to hear): a main-loop timer pings
 * every fifth of the tight interval and asks again whether everything
 * is released; a stalled or starved loop runs no timer.  Loose: the
 * wake-ups, a ping per half interval, and for a node that sleeps long a
 * source due a quarter of the interval after its last wake-up. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef enum
{
  SP_WATCHDOG_IDLE,      /* holds nothing */
  SP_WATCHDOG_LEADING,   /* leader */
  SP_WATCHDOG_RELEASING, /* not leader, but something it held may still be there */
} SpWatchdogNeed;

/* Asked at every wake-up and every releasing ping. */
typedef SpWatchdogNeed (*SpWatchdogAskFunc) (gpointer user_data);

typedef struct _SpWatchdog SpWatchdog;

/* NULL when systemd asked for no watchdog (loose_usec 0).  The tight
 * interval is at most the loose one. */
SpWatchdog *sp_watchdog_new (guint64 loose_usec, guint64 tight_usec, SpWatchdogAskFunc ask,
                             gpointer user_data);
/* The node woke and published its state: asks, adjusts, pings. */
void sp_watchdog_awake (SpWatchdog *w);
/* The interval in force, in microseconds. */
guint64 sp_watchdog_interval (const SpWatchdog *w);
void sp_watchdog_free (SpWatchdog *w);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (SpWatchdog, sp_watchdog_free)

G_END_DECLS
