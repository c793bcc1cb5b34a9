/* The [timesync] group and the files the timesync plugin writes from it:
 * what an administrator writes, what chronyd is given, and what sparrow
 * reads back from chronyc. */
#include <check.h>
#include <glib/gstdio.h>
#include <string.h>

#include "test-util.h"
#include "timesync-config.h"

#define BASE "[node]\nname = alpha\nlisten = 127.0.0.1:7400\n[tls]\ninsecure = true\n"

static char *tmp_dir;
static char *conf_path;

static void
setup (void)
{
  tmp_dir = g_dir_make_tmp ("sparrow-timesync-XXXXXX", NULL);
  ck_assert_ptr_nonnull (tmp_dir);
  conf_path = g_build_filename (tmp_dir, "sparrow.conf", NULL);
}

static void
teardown (void)
{
  sp_test_remove_tree (tmp_dir);
  g_clear_pointer (&tmp_dir, g_free);
  g_clear_pointer (&conf_path, g_free);
}

/* Reads group (text after BASE); NULL with *message set on an error. */
static SpTimesyncConfig *
read_group (const char *group, char **message)
{
  g_autofree char *text = g_strconcat (BASE, group, NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (SpConfig) config = NULL;
  SpTimesyncConfig *t;

  ck_assert (g_file_set_contents (conf_path, text, -1, NULL));
  config = sp_config_load (conf_path, NULL, &error);
  ck_assert_msg (config != NULL, "%s", error ? error->message : "");
  t = sp_timesync_config_read (config, NULL, &error);
  if (message)
    *message = error ? g_strdup (error->message) : NULL;
  return t;
}

static void
assert_error (const char *group, const char *key, const char *detail)
{
  g_autofree char *message = NULL;
  g_autoptr (SpTimesyncConfig) t = read_group (group, &message);
  g_autofree char *prefix = g_strdup_printf ("%s: [timesync] %s: ", conf_path, key);

  ck_assert_msg (t == NULL && message != NULL, "%s: no error", group);
  ck_assert_msg (g_str_has_prefix (message, prefix), "\"%s\" lacks \"%s\"", message, prefix);
  ck_assert_msg (strstr (message, detail), "\"%s\" lacks \"%s\"", message, detail);
}

START_TEST (test_defaults_and_files)
{
  g_autoptr (SpTimesyncConfig) t = read_group ("[timesync]\nallow = 10.77.0.0/24\n", NULL);
  g_autofree char *conf = NULL;
  g_autofree char *follower = NULL;
  g_autofree char *leader = NULL;

  ck_assert_ptr_nonnull (t);
  ck_assert_uint_eq (t->stratum, 10);
  ck_assert_int_eq (t->minpoll, 0);
  ck_assert_int_eq (t->maxpoll, 4);
  conf = sp_timesync_chrony_conf (t);
  ck_assert_msg (g_str_has_suffix (conf, "\nallow 10.77.0.0/24\nlocal stratum 10 distance 0\n"),
                 "%s", conf);
  follower = sp_timesync_chrony_sources (t, "10.77.0.1");
  ck_assert_msg (
      g_str_has_suffix (follower, "\nserver 10.77.0.1 iburst minpoll 0 maxpoll 4 prefer\n"), "%s",
      follower);
  /* No upstream: the leader has no source of its own, only its local stratum. */
  leader = sp_timesync_chrony_sources (t, NULL);
  ck_assert_ptr_null (strstr (leader, "server"));
  /* At run time: the leader serves its own clock at once, followers not. */
  {
    g_auto (GStrv) on = sp_timesync_chrony_local (t, TRUE);
    g_auto (GStrv) off = sp_timesync_chrony_local (t, FALSE);
    g_autofree char *on_text = g_strjoinv (" ", on);
    g_autofree char *off_text = g_strjoinv (" ", off);

    ck_assert_str_eq (on_text, "local stratum 10 distance 0");
    ck_assert_str_eq (off_text, "local off");
  }
}
END_TEST

START_TEST (test_full_group)
{
  g_autoptr (SpTimesyncConfig) t = read_group (
      "[timesync]\nbackend = chrony\nallow = 10.77.0.0/24;fd77::/64\nlocal-stratum = 8\n"
      "upstream = ntp.example.org;192.0.2.7\nminpoll = -2\nmaxpoll = 2\n",
      NULL);
  g_autofree char *conf = NULL;
  g_autofree char *leader = NULL;
  g_autofree char *follower = NULL;

  ck_assert_ptr_nonnull (t);
  conf = sp_timesync_chrony_conf (t);
  ck_assert_msg (
      g_str_has_suffix (conf, "\nallow 10.77.0.0/24\nallow fd77::/64\nlocal stratum 8\n"), "%s",
      conf);
  leader = sp_timesync_chrony_sources (t, NULL);
  ck_assert_msg (
      g_str_has_suffix (leader, "\nserver ntp.example.org iburst\nserver 192.0.2.7 iburst\n"), "%s",
      leader);
  follower = sp_timesync_chrony_sources (t, "fd77::1");
  ck_assert_msg (
      g_str_has_suffix (follower, "\nserver fd77::1 iburst minpoll -2 maxpoll 2 prefer\n"), "%s",
      follower);
}
END_TEST

START_TEST (test_ntpd)
{
  g_autoptr (SpTimesyncConfig) t = read_group (
      "[timesync]\nbackend = ntpd\nallow = 10.77.0.0/24\nupstream = 192.0.2.7\nminpoll = -2\n",
      NULL);
  g_autofree char *follower = NULL;
  g_autofree char *leader = NULL;
  g_autofree char *source = NULL;
  guint stratum = 0;
  double offset = 0;

  ck_assert_ptr_nonnull (t);
  ck_assert_int_eq (t->backend, SP_TIMESYNC_NTPD);
  /* The admin's file first; ntpd polls every 8 s at the most often. */
  follower = sp_timesync_ntpd_conf (t, "10.77.0.1");
  ck_assert_msg (g_str_has_suffix (follower,
                                   "\nincludefile /etc/ntpsec/ntp.conf\n"
                                   "tos minsane 1 minclock 1\n"
                                   "server 10.77.0.1 iburst minpoll 3 maxpoll 4 prefer\n"),
                 "%s", follower);
  leader = sp_timesync_ntpd_conf (t, NULL);
  ck_assert_msg (g_str_has_suffix (leader, "\nincludefile /etc/ntpsec/ntp.conf\n"
                                           "server 192.0.2.7 iburst\ntos orphan 10 orphanwait 0\n"),
                 "%s", leader);
  ck_assert (sp_timesync_ntpq_parse_peers (
      "     remote           refid      st t when poll reach   delay   offset   jitter\n"
      "=======================================================================\n"
      " 0.debian.pool.ntp.org .POOL.  16 p    -   64    0   0.0000   0.0000   0.0001\n"
      "*10.77.0.11      127.0.0.1       10 u    1    8    3   0.0787   0.0218   0.0104\n",
      &source, &stratum, &offset));
  ck_assert_str_eq (source, "10.77.0.11");
  ck_assert_uint_eq (stratum, 10);
  ck_assert_double_eq_tol (offset, 0.0000218, 1e-12);
}
END_TEST

START_TEST (test_errors)
{
  g_autofree char *message = NULL;

  ck_assert_ptr_null (read_group ("", &message));
  ck_assert_ptr_null (message);
  assert_error ("[timesync]\nlocal-stratum = 10\n", "allow", "expected at least one subnet");
  assert_error ("[timesync]\nallow = 10.77.0.0/33\n", "allow", "\"10.77.0.0/33\": expected");
  assert_error ("[timesync]\nallow = eth0\n", "allow", "expected ADDRESS/PREFIX");
  assert_error ("[timesync]\nallow = 10.77.0.0/24\nbackend = ntp\n", "backend",
                "\"ntp\": expected chrony or ntpd");
  assert_error ("[timesync]\nallow = 10.77.0.0/24\nlocal-stratum = 16\n", "local-stratum", "15");
  assert_error ("[timesync]\nallow = 10.77.0.0/24\nupstream = a.org iburst\n", "upstream",
                "\"a.org iburst\": expected a host name");
  assert_error ("[timesync]\nallow = 10.77.0.0/24\nupstream = -x\n", "upstream", "host name");
  assert_error ("[timesync]\nallow = 10.77.0.0/24\nminpoll = -7\n", "minpoll", "-6..17");
  assert_error ("[timesync]\nallow = 10.77.0.0/24\nminpoll = 5\nmaxpoll = 4\n", "maxpoll",
                "at least minpoll");
}
END_TEST

START_TEST (test_chronyc_sources)
{
  g_autofree char *source = NULL;
  guint stratum = 0;
  double offset = 0;

  ck_assert (!sp_timesync_chrony_parse_sources ("", &source, &stratum, &offset));
  ck_assert (!sp_timesync_chrony_parse_sources ("^,?,10.77.0.250,0,7,0,-,0.0,0.0,0.0\n", &source,
                                                &stratum, &offset));
  ck_assert (sp_timesync_chrony_parse_sources (
      "^,?,10.77.0.250,0,7,0,-,0.0,0.0,0.0\n^,*,10.77.0.11,10,-1,377,0,0.000001983,0.000006197,"
      "0.000022626\n",
      &source, &stratum, &offset));
  ck_assert_str_eq (source, "10.77.0.11");
  ck_assert_uint_eq (stratum, 10);
  ck_assert_double_eq_tol (offset, 0.000006197, 1e-12);
}
END_TEST

START_TEST (test_host_of)
{
  g_autofree char *v4 = sp_timesync_host_of ("10.77.0.1:7400");
  g_autofree char *v6 = sp_timesync_host_of ("[fd77::1]:7400");
  g_autofree char *name = sp_timesync_host_of ("alpha.example.org:7400");

  ck_assert_str_eq (v4, "10.77.0.1");
  ck_assert_str_eq (v6, "fd77::1");
  ck_assert_str_eq (name, "alpha.example.org");
}
END_TEST

/* A leader address crafted to add directives or options (issue 21) is
 * written into no file, whatever let it through before. */
START_TEST (test_crafted_leader_written_nowhere)
{
  g_autoptr (SpTimesyncConfig) t = read_group ("[timesync]\nallow = 10.77.0.0/24\n", NULL);
  const char *const addresses[] = {
    "10.0.0.9\nlogfile /etc/cron.d/x\nrestrict default\nserver 192.0.2.1:7400",
    "1.2.3.4 noselect key 1:7000",
    "10.0.0.9;x:7400",
    "h\xc3\xa9llo:7400",
    "[::1 x]:7400",
    "-g:7400",
    ":7400",
  };

  ck_assert_ptr_nonnull (t);
  for (guint i = 0; i < G_N_ELEMENTS (addresses); i++)
    {
      g_autofree char *host = sp_timesync_host_of (addresses[i]);
      g_autofree char *raw = g_strndup (addresses[i], strrchr (addresses[i], ':') - addresses[i]);
      g_autofree char *chrony = sp_timesync_chrony_sources (t, raw);
      g_autofree char *ntpd = sp_timesync_ntpd_conf (t, raw);

      ck_assert_msg (host == NULL, "%s", host);
      ck_assert_msg (chrony == NULL, "%s", chrony);
      ck_assert_msg (ntpd == NULL, "%s", ntpd);
    }
}
END_TEST

int
main (void)
{
  Suite *s = suite_create ("timesync-config");
  TCase *tc = tcase_create ("timesync");
  SRunner *sr;
  int failed;

  tcase_add_checked_fixture (tc, setup, teardown);
  tcase_add_test (tc, test_defaults_and_files);
  tcase_add_test (tc, test_full_group);
  tcase_add_test (tc, test_ntpd);
  tcase_add_test (tc, test_errors);
  tcase_add_test (tc, test_chronyc_sources);
  tcase_add_test (tc, test_host_of);
  tcase_add_test (tc, test_crafted_leader_written_nowhere);
  suite_add_tcase (s, tc);
  sr = srunner_create (s);
  srunner_run_all (sr, CK_NORMAL);
  failed = srunner_ntests_failed (sr);
  srunner_free (sr);
  return failed == 0 ? 0 : 1;
}
