/* The service watchdog's policy (daemon/watchdog.c), heard on a real
 * notification socket as systemd hears it. */
#include <check.h>
#include <gio/gio.h>
#include <glib/gstdio.h>
#include <string.h>

#include "watchdog.h"

#define LOOSE 5000000
#define TIGHT 100000

static SpWatchdogNeed need;
static GSocket *sock;
static char *sock_dir, *sock_path;

static SpWatchdogNeed
ask (gpointer user_data)
{
  return need;
}

/* The next notification, or NULL after timeout_ms. */
static char *
next (guint timeout_ms)
{
  gint64 deadline = g_get_monotonic_time () + timeout_ms * 1000;
  char buf[256];

  while (g_get_monotonic_time () < deadline)
    {
      gssize n = g_socket_receive (sock, buf, sizeof buf - 1, NULL, NULL);

      if (n >= 0)
        return g_strndup (buf, n);
      /* Timers of the watchdog run on this thread's default context. */
      g_main_context_iteration (NULL, FALSE);
      g_usleep (1000);
    }
  return NULL;
}

static void
setup (void)
{
  g_autoptr (GSocketAddress) addr = NULL;

  sock_dir = g_dir_make_tmp ("sparrow-watchdog-XXXXXX", NULL);
  sock_path = g_build_filename (sock_dir, "notify", NULL);
  addr = g_unix_socket_address_new (sock_path);

  sock = g_socket_new (G_SOCKET_FAMILY_UNIX, G_SOCKET_TYPE_DATAGRAM, 0, NULL);
  ck_assert (g_socket_bind (sock, addr, FALSE, NULL));
  g_socket_set_blocking (sock, FALSE);
  g_setenv ("NOTIFY_SOCKET", sock_path, TRUE);
}

static void
teardown (void)
{
  g_clear_object (&sock);
  g_unlink (sock_path);
  g_rmdir (sock_dir);
  g_clear_pointer (&sock_path, g_free);
  g_clear_pointer (&sock_dir, g_free);
}

/* Leading, then no longer leading but still holding: tight, pinged from
 * its own timer while the node sleeps; released: loose again. */
START_TEST (test_tight_until_released)
{
  g_autoptr (SpWatchdog) w = NULL;
  guint pings = 0;
  char *m;

  ck_assert_ptr_null (sp_watchdog_new (0, TIGHT, ask, NULL));
  need = SP_WATCHDOG_IDLE;
  w = sp_watchdog_new (LOOSE, TIGHT, ask, NULL);
  ck_assert_uint_eq (sp_watchdog_interval (w), LOOSE);

  need = SP_WATCHDOG_LEADING;
  sp_watchdog_awake (w);
  m = next (5000);
  ck_assert_str_eq (m, "WATCHDOG_USEC=100000");
  g_free (m);
  m = next (5000);
  ck_assert_str_eq (m, "WATCHDOG=1");
  g_free (m);

  /* It stopped leading; the node wakes no more for a while. */
  need = SP_WATCHDOG_RELEASING;
  sp_watchdog_awake (w);
  ck_assert_uint_eq (sp_watchdog_interval (w), TIGHT);
  while (pings < 3)
    {
      m = next (5000);
      ck_assert_msg (m != NULL, "no ping while releasing");
      ck_assert_str_eq (m, "WATCHDOG=1");
      g_free (m);
      pings++;
    }

  /* Released: its timer finds out and loosens. */
  need = SP_WATCHDOG_IDLE;
  while ((m = next (5000)) && g_str_equal (m, "WATCHDOG=1"))
    g_free (m);
  ck_assert_ptr_nonnull (m);
  ck_assert_str_eq (m, "WATCHDOG_USEC=5000000");
  g_free (m);
  ck_assert_uint_eq (sp_watchdog_interval (w), LOOSE);
}
END_TEST

int
main (void)
{
  Suite *s = suite_create ("watchdog");
  TCase *tc = tcase_create ("watchdog");
  SRunner *sr;
  int failed;

  tcase_add_checked_fixture (tc, setup, teardown);
  tcase_add_test (tc, test_tight_until_released);
  tcase_set_timeout (tc, 30);
  suite_add_tcase (s, tc);
  sr = srunner_create (s);
  srunner_run_all (sr, CK_NORMAL);
  failed = srunner_ntests_failed (sr);
  srunner_free (sr);
  return failed ? 1 : 0;
}
