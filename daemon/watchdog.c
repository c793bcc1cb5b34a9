/* The service watchdog's policy; see watchdog.h. */
#include "watchdog.h"

#include "notify.h"

struct _SpWatchdog
{
  guint64 loose;
  guint64 tight;
  guint64 now;  /* the interval in force */
  gint64 fed;   /* g_get_monotonic_time () of the last ping */
  gint64 awake; /* ... and of the node's last wake-up */
  SpWatchdogAskFunc ask;
  gpointer user_data;
  GSource *fallback; /* the loose interval's pings for a node that sleeps */
  guint release;     /* the releasing pings' timer */
};

typedef struct
{
  GSource source;
  SpWatchdog *w;
} FallbackSource;

static void
feed (SpWatchdog *w)
{
  gint64 now = g_get_monotonic_time ();
  /* Each ping wakes systemd: one per half of the loose interval (the
   * fallback keeps the gap under three quarters), a quarter of the tight
   * one, where a late ping would cost the fence. */
  gint64 every = (gint64)w->now / (w->now == w->loose ? 2 : 4);

  if (now - w->fed < every)
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

/* A learner or lone follower may sleep for long: the loose interval still
 * needs its pings (never enough for the tight one).  Due a quarter of the
 * loose interval after the node's last wake-up, computed before each poll,
 * so a node that wakes anyway (every heartbeat) never wakes for it, and
 * moving it costs no system call. */
static gint64
fallback_due (const SpWatchdog *w)
{
  return w->awake + (gint64)w->loose / 4;
}

static gboolean
fallback_prepare (GSource *source, gint *timeout)
{
  gint64 left = fallback_due (((FallbackSource *)source)->w) - g_get_monotonic_time ();

  *timeout = left <= 0 ? 0 : (gint)MIN ((left + 999) / 1000, G_MAXINT);
  return left <= 0;
}

static gboolean
fallback_check (GSource *source)
{
  return fallback_due (((FallbackSource *)source)->w) <= g_get_monotonic_time ();
}

static gboolean
fallback_dispatch (GSource *source, GSourceFunc callback, gpointer user_data)
{
  SpWatchdog *w = ((FallbackSource *)source)->w;

  w->awake = g_get_monotonic_time ();
  if (w->now == w->loose)
    feed (w);
  return G_SOURCE_CONTINUE;
}

static GSourceFuncs fallback_funcs
    = { fallback_prepare, fallback_check, fallback_dispatch, NULL, NULL, NULL };

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
  w->awake = g_get_monotonic_time ();
  w->fallback = g_source_new (&fallback_funcs, sizeof (FallbackSource));
  ((FallbackSource *)w->fallback)->w = w;
  g_source_set_static_name (w->fallback, "watchdog fallback");
  g_source_attach (w->fallback, NULL);
  return w;
}

void
sp_watchdog_awake (SpWatchdog *w)
{
  SpWatchdogNeed need = set_interval (w);

  w->awake = g_get_monotonic_time ();
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
  g_source_destroy (w->fallback);
  g_source_unref (w->fallback);
  g_clear_handle_id (&w->release, g_source_remove);
  g_free (w);
}
