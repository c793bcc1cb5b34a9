/* The fence arithmetic; see fence.h for the mechanism it counts on. */
#include "fence.h"

#include "raft/raft.h"

guint
sp_fence_tick_ms (const SpConfig *config)
{
  guint a = config->heartbeat_ms, b = config->election_ms;

  while (b)
    {
      guint r = a % b;

      a = b;
      b = r;
    }
  /* Fine enough for the lease and election jitter, few enough ticks to
   * catch up with after a sleep. */
  for (guint t = MIN (a, 10); t > 1; t--)
    if (a % t == 0)
      return t;
  return 1;
}

guint
sp_fence_lease_ms (const SpConfig *config)
{
  guint t = sp_fence_tick_ms (config);

  return sp_raft_default_lease_ticks (config->election_ms / t) * t;
}

/* What ends the previous holder once its lease ran out, however its
 * sparrowd fares: the fence keeper's timer and address removal. */
static guint
reaction_ms (const SpConfig *config)
{
  return config->keeper_ms;
}

/* A span of the old leader's clock seen from another: 5 % drift, a tick
 * of phase. */
static guint
on_other_clock (const SpConfig *config, guint ms)
{
  return ms * 21 / 20 + sp_fence_tick_ms (config);
}

guint
sp_fence_bound_ms (const SpConfig *config)
{
  return on_other_clock (config, sp_fence_lease_ms (config) + reaction_ms (config));
}

guint
sp_fence_ms (const SpConfig *config)
{
  return config->fence ? sp_fence_bound_ms (config) : 0;
}

guint
sp_fence_wait_ms (const SpConfig *config)
{
  guint fence = sp_fence_ms (config), t = sp_fence_tick_ms (config);

  return fence > config->election_ms - t ? fence - (config->election_ms - t) : 0;
}

guint
sp_fence_backstop_ms (const SpConfig *config)
{
  return on_other_clock (config, sp_fence_lease_ms (config) + config->leader_watchdog_ms
                                     + SP_FENCE_WATCHDOG_SLACK_MS + config->cleanup_ms);
}

void
sp_fence_clear (SpFence *f)
{
  *f = (SpFence){ -1, -1, FALSE };
}

gboolean
sp_fence_started (const SpFence *f)
{
  return f->until >= 0;
}

void
sp_fence_start (SpFence *f, gint64 now, guint heard_age_ticks, guint tick_ms, guint fence_ms,
                gboolean by_transfer)
{
  f->from = now - (gint64)heard_age_ticks * tick_ms * 1000;
  f->waits = !by_transfer && fence_ms > 0;
  /* 0 at the earliest: -1 means not started. */
  f->until = MAX (0, f->waits ? f->from + (gint64)fence_ms * 1000 : now);
}

gboolean
sp_fence_over (const SpFence *f, gint64 now)
{
  return sp_fence_started (f) && now >= f->until;
}

guint
sp_fence_left_ms (const SpFence *f, gint64 now, guint extra_ms)
{
  gint64 end;

  if (!sp_fence_started (f) || !f->waits)
    return 0;
  end = f->until + (gint64)extra_ms * 1000;
  return end <= now ? 0 : (guint)((end - now + 999) / 1000);
}
