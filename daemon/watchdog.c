/* The service watchdog's policy; see watchdog.h. */
#include "watchdog.h"

#include "notify.h"

struct _SpWatchdog
{
  guint64 loose;
  guint64 tight;
  guint64 now; /* the interval in force */
  gint64 fed;  /* g_get_monotonic_time () of the last ping */
  SpWatchdogAskFunc ask;
  gpointer user_data;
  guint fallback; /* the loose interval's timer */
  guint release;  /* the releasing pings' timer */
};

static void
feed (SpWatchdog *w)
{
  gint64 now = g_get_monotonic_time ();

  /* A ping per quarter interval is plenty, and each wakes systemd. */
  if (now - w->fed < (gint64)w->now / 4)
    return;
  w->fed = now;
  sp_notify ("WATCHDOG=1");
}

/* Asks what the node needs and sets the interval for it. */
static SpWatchdogNeed
set_interval (SpWatchdog *w)
{
  SpWatchdogNeed need = w->ask (w->user_data);
  guint64 want = need == SP_WATCHDOG_IDLE ? w->loose : w->tight;

  if (want != w->now)
    {
      g_autofree char *usec = g_strdup_printf ("WATCHDOG_USEC=%" G_GUINT64_FORMAT, want);

      w->now = want;
      sp_notify (usec);
      w->fed = 0;
    }
  return need;
}

static gboolean
on_releasing (gpointer user_data)
{
  SpWatchdog *w = user_data;
  SpWatchdogNeed need = set_interval (w);

  feed (w);
  if (need == SP_WATCHDOG_RELEASING)
    return G_SOURCE_CONTINUE;
  w->release = 0;
  return G_SOURCE_REMOVE;
}

static gboolean
on_fallback (gpointer user_data)
{
  SpWatchdog *w = user_data;

  /* A learner or lone follower may sleep for long: the loose interval
   * still needs its pings.  Never enough for the tight one. */
  if (w->now == w->loose)
    feed (w);
  return G_SOURCE_CONTINUE;
}

SpWatchdog *
sp_watchdog_new (guint64 loose_usec, guint64 tight_usec, SpWatchdogAskFunc ask, gpointer user_data)
{
  SpWatchdog *w;

  if (loose_usec == 0)
    return NULL;
  w = g_new0 (SpWatchdog, 1);
  w->loose = w->now = loose_usec;
  w->tight = MIN (tight_usec, loose_usec);
  w->ask = ask;
  w->user_data = user_data;
  w->fallback = g_timeout_add (MAX (1, loose_usec / 2000), on_fallback, w);
  return w;
}

void
sp_watchdog_awake (SpWatchdog *w)
{
  SpWatchdogNeed need = set_interval (w);

  if (need == SP_WATCHDOG_RELEASING && !w->release)
    w->release = g_timeout_add (MAX (1, w->tight / 5000), on_releasing, w);
  else if (need != SP_WATCHDOG_RELEASING)
    g_clear_handle_id (&w->release, g_source_remove);
  feed (w);
}

guint64
sp_watchdog_interval (const SpWatchdog *w)
{
  return w->now;
}

void
sp_watchdog_free (SpWatchdog *w)
{
  if (!w)
    return;
  g_clear_handle_id (&w->fallback, g_source_remove);
  g_clear_handle_id (&w->release, g_source_remove);
  g_free (w);
}
