/* sparrowd's configuration file: what an administrator writes and what they
 * are told when it is wrong. */
#include <check.h>
#include <glib/gstdio.h>
#include <string.h>

#include "config.h"
#include "test-util.h"

#define NODE     "[node]\nname = alpha\nlisten = 127.0.0.1:7400\n"
#define INSECURE "[tls]\ninsecure = true\n"

static char *tmp_dir;
static char *conf_path;
static char *drop_in_dir;

static void
setup (void)
{
  g_autoptr (GError) error = NULL;

  tmp_dir = g_dir_make_tmp ("sparrow-config-XXXXXX", &error);
  ck_assert_msg (tmp_dir != NULL, "%s", error ? error->message : "");
  conf_path = g_build_filename (tmp_dir, "sparrow.conf", NULL);
  drop_in_dir = g_build_filename (tmp_dir, "sparrow.conf.d", NULL);
}

static void
teardown (void)
{
  sp_test_remove_tree (tmp_dir);
  g_clear_pointer (&tmp_dir, g_free);
  g_clear_pointer (&conf_path, g_free);
  g_clear_pointer (&drop_in_dir, g_free);
}

static void
write_file (const char *path, const char *contents)
{
  g_autoptr (GError) error = NULL;

  ck_assert_msg (g_file_set_contents (path, contents, -1, &error), "%s", error->message);
}

/* Writes sparrow.conf.d/name, returns its path. */
static char *
write_drop_in (const char *name, const char *contents)
{
  char *path = g_build_filename (drop_in_dir, name, NULL);

  g_mkdir_with_parents (drop_in_dir, 0700);
  write_file (path, contents);
  return path;
}

static SpConfig *
load_ok (const char *contents, GPtrArray *warnings)
{
  g_autoptr (GError) error = NULL;
  SpConfig *config;

  write_file (conf_path, contents);
  config = sp_config_load (conf_path, warnings, &error);
  ck_assert_msg (config != NULL, "%s", error ? error->message : "no error set");
  return config;
}

/* Loading fails with code; returns the message. */
static char *
load_error (const char *contents, SpConfigError code)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (SpConfig) config = NULL;

  if (contents)
    write_file (conf_path, contents);
  config = sp_config_load (conf_path, NULL, &error);
  ck_assert_ptr_null (config);
  ck_assert_ptr_nonnull (error);
  ck_assert_msg (g_error_matches (error, SP_CONFIG_ERROR, code), "code %d: %s", error->code,
                 error->message);
  return g_strdup (error->message);
}

static void
assert_has (const char *message, const char *part)
{
  ck_assert_msg (strstr (message, part) != NULL, "\"%s\" lacks \"%s\"", message, part);
}

/* The message names the main file, the group and key, and says more. */
static void
assert_key_error (const char *contents, SpConfigError code, const char *group_key,
                  const char *detail)
{
  g_autofree char *message = load_error (contents, code);
  g_autofree char *prefix = g_strdup_printf ("%s: %s: ", conf_path, group_key);

  ck_assert_msg (g_str_has_prefix (message, prefix), "\"%s\" does not start with \"%s\"", message,
                 prefix);
  assert_has (message, detail);
}

START_TEST (test_defaults)
{
  g_autoptr (GPtrArray) warnings = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (SpConfig) c = load_ok (NODE INSECURE, warnings);

  ck_assert_str_eq (c->path, conf_path);
  ck_assert_str_eq (c->node_name, "alpha");
  ck_assert_str_eq (c->listen_host, "127.0.0.1");
  ck_assert_uint_eq (c->listen_port, 7400);
  ck_assert_str_eq (c->data_dir, SP_CONFIG_DEFAULT_DATA_DIR);
  ck_assert_uint_eq (c->heartbeat_ms, 250);
  ck_assert_uint_eq (c->election_ms, 600);
  ck_assert (!c->join);
  ck_assert_uint_eq (c->snapshot_entries, 10000);
  ck_assert (c->insecure);
  ck_assert_uint_eq (c->initial_members->len, 0);
  ck_assert_ptr_null (sp_config_find_member (c, "alpha"));
  ck_assert_ptr_null (c->tls_ca);
  ck_assert (!c->strict);
  /* alone: a cluster of one */
  ck_assert_uint_eq (warnings->len, 1);
  assert_has (warnings->pdata[0], "[cluster] initial-members: one voter (this node alone) "
                                  "tolerates no failure");
}
END_TEST

START_TEST (test_full_file)
{
  g_autoptr (SpConfig) c = load_ok (
      "# a three-node cluster\n"
      "[node]\n"
      "name = beta\n"
      "listen = 0.0.0.0:7401\n"
      "data-dir = /srv/sparrow\n"
      "[cluster]\n"
      "initial-members = alpha=node-a.example:7400; beta=192.0.2.2:7401;gamma=[2001:db8::3]:7402\n"
      "heartbeat-ms = 100\n"
      "election-ms = 1000\n"
      "join = true\n"
      "[tls]\n"
      "ca = /etc/sparrow/tls/ca.pem\n"
      "cert = /etc/sparrow/tls/node.pem\n"
      "key = /etc/sparrow/tls/node.key\n",
      NULL);
  const SpConfigMember *gamma;

  ck_assert_str_eq (c->data_dir, "/srv/sparrow");
  ck_assert_uint_eq (c->heartbeat_ms, 100);
  ck_assert_uint_eq (c->election_ms, 1000);
  ck_assert (c->join);
  ck_assert (!c->insecure);
  ck_assert_str_eq (c->tls_ca, "/etc/sparrow/tls/ca.pem");
  ck_assert_str_eq (c->tls_cert, "/etc/sparrow/tls/node.pem");
  ck_assert_str_eq (c->tls_key, "/etc/sparrow/tls/node.key");
  ck_assert_uint_eq (c->initial_members->len, 3);
  ck_assert_str_eq (sp_config_find_member (c, "alpha")->host, "node-a.example");
  ck_assert_uint_eq (sp_config_find_member (c, "beta")->port, 7401);
  gamma = sp_config_find_member (c, "gamma");
  ck_assert_ptr_nonnull (gamma);
  ck_assert_str_eq (gamma->host, "2001:db8::3");
  ck_assert_uint_eq (gamma->port, 7402);
  ck_assert_ptr_null (sp_config_find_member (c, "delta"));
}
END_TEST

START_TEST (test_drop_in_overrides)
{
  g_autofree char *a = write_drop_in ("10-timing.conf", "[cluster]\nelection-ms = 600\n");
  g_autofree char *b = write_drop_in ("20-timing.conf", "[cluster]\nelection-ms = 900\n");
  /* not *.conf: never read, or its syntax error would fail the load */
  g_autofree char *backup = write_drop_in ("30-timing.conf.bak", "not a key file\n");
  g_autofree char *hidden = write_drop_in (".40-hidden.conf", "not a key file\n");
  g_autoptr (SpConfig) c
      = load_ok (NODE "[cluster]\nelection-ms = 300\nheartbeat-ms = 60\n" INSECURE, NULL);

  ck_assert_uint_eq (c->election_ms, 900);
  ck_assert_uint_eq (c->heartbeat_ms, 60);
  ck_assert_str_eq (c->node_name, "alpha");
}
END_TEST

START_TEST (test_drop_in_error_names_drop_in)
{
  g_autofree char *ok = write_drop_in ("10-ok.conf", "[cluster]\nelection-ms = 600\n");
  g_autofree char *bad = write_drop_in ("20-bad.conf", "[cluster]\nelection-ms = fast\n");
  g_autofree char *message = load_error (NODE INSECURE, SP_CONFIG_ERROR_INVALID);
  g_autofree char *expected = g_strdup_printf (
      "%s: [cluster] election-ms: expected an integer between 10 and 60000, got \"fast\"", bad);

  ck_assert_str_eq (message, expected);
}
END_TEST

START_TEST (test_required_keys)
{
  assert_key_error ("[node]\nlisten = 127.0.0.1:7400\n" INSECURE, SP_CONFIG_ERROR_MISSING,
                    "[node] name", "missing");
  assert_key_error ("[node]\nname = alpha\n" INSECURE, SP_CONFIG_ERROR_MISSING, "[node] listen",
                    "missing");
}
END_TEST

START_TEST (test_invalid_values)
{
  const struct
  {
    const char *contents;
    const char *group_key;
    const char *detail;
  } cases[] = {
    { "[node]\nname = al pha\nlisten = 127.0.0.1:7400\n" INSECURE, "[node] name",
      "got \"al pha\"" },
    { "[node]\nname = \nlisten = 127.0.0.1:7400\n" INSECURE, "[node] name", "expected 1 to 63" },
    { "[node]\nname = "
      "a123456789012345678901234567890123456789012345678901234567890123\n"
      "listen = 127.0.0.1:7400\n" INSECURE,
      "[node] name", "expected 1 to 63" },
    { "[node]\nname = alpha\nlisten = 127.0.0.1\n" INSECURE, "[node] listen",
      "expected host:port" },
    { "[node]\nname = alpha\nlisten = 127.0.0.1:0\n" INSECURE, "[node] listen",
      "between 1 and 65535" },
    { "[node]\nname = alpha\nlisten = 127.0.0.1:65536\n" INSECURE, "[node] listen",
      "got \"127.0.0.1:65536\"" },
    { "[node]\nname = alpha\nlisten = ::1:7400\n" INSECURE, "[node] listen", "[address]:port" },
    { NODE "data-dir = var/lib/sparrow\n" INSECURE, "[node] data-dir",
      "expected an absolute path" },
    { NODE "[cluster]\nheartbeat-ms = 0\n" INSECURE, "[cluster] heartbeat-ms",
      "expected an integer between 1 and 20000, got \"0\"" },
    { NODE "[cluster]\nelection-ms = -5\n" INSECURE, "[cluster] election-ms", "got \"-5\"" },
    { NODE "[cluster]\njoin = maybe\n" INSECURE, "[cluster] join",
      "expected true or false, got \"maybe\"" },
    { NODE "[cluster]\nsnapshot-entries = 5\n" INSECURE, "[cluster] snapshot-entries",
      "got \"5\"" },
    { NODE "[tls]\ninsecure = yes\n", "[tls] insecure", "expected true or false" },
    { NODE "[tls]\nca = ca.pem\ncert = /c\nkey = /k\n", "[tls] ca", "absolute path" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    assert_key_error (cases[i].contents, SP_CONFIG_ERROR_INVALID, cases[i].group_key,
                      cases[i].detail);
}
END_TEST

START_TEST (test_election_versus_heartbeat)
{
  g_autoptr (SpConfig) c = NULL;

  assert_key_error (NODE "[cluster]\nheartbeat-ms = 100\nelection-ms = 150\n" INSECURE,
                    SP_CONFIG_ERROR_INVALID, "[cluster] election-ms", "heartbeat-ms (100)");
  /* only the heartbeat was set: it is the key to blame */
  assert_key_error (NODE "[cluster]\nheartbeat-ms = 400\n" INSECURE, SP_CONFIG_ERROR_INVALID,
                    "[cluster] heartbeat-ms", "election-ms (600)");
  c = load_ok (NODE "[cluster]\nheartbeat-ms = 100\nelection-ms = 200\n" INSECURE, NULL);
  ck_assert_uint_eq (c->election_ms, 200);
}
END_TEST

START_TEST (test_syntax_error)
{
  g_autofree char *message
      = load_error ("[node]\nname = alpha\nlisten 127.0.0.1:7400\n", SP_CONFIG_ERROR_PARSE);
  g_autofree char *where = g_strdup_printf ("%s:3: ", conf_path);

  ck_assert_msg (g_str_has_prefix (message, where), "\"%s\" does not start with \"%s\"", message,
                 where);
  /* GLib's own description quotes the line */
  assert_has (message, "listen 127.0.0.1:7400");
}
END_TEST

START_TEST (test_missing_main_file)
{
  g_autofree char *a = write_drop_in ("10-a.conf", NODE INSECURE);
  g_autofree char *message = load_error (NULL, SP_CONFIG_ERROR_MISSING);

  assert_has (message, conf_path);
}
END_TEST

START_TEST (test_ipv6_listen)
{
  g_autoptr (SpConfig) c = load_ok ("[node]\nname = alpha\nlisten = [::1]:7400\n" INSECURE, NULL);
  g_autoptr (SpConfig) full
      = load_ok ("[node]\nname = alpha\nlisten = [2001:db8::1]:65535\n" INSECURE, NULL);

  ck_assert_str_eq (c->listen_host, "::1");
  ck_assert_uint_eq (c->listen_port, 7400);
  ck_assert_str_eq (full->listen_host, "2001:db8::1");
  ck_assert_uint_eq (full->listen_port, 65535);
  assert_key_error ("[node]\nname = alpha\nlisten = [::1]\n" INSECURE, SP_CONFIG_ERROR_INVALID,
                    "[node] listen", "got \"[::1]\"");
  assert_key_error ("[node]\nname = alpha\nlisten = [node-a]:7400\n" INSECURE,
                    SP_CONFIG_ERROR_INVALID, "[node] listen", "got \"[node-a]:7400\"");
}
END_TEST

START_TEST (test_unknown_keys_warn)
{
  g_autoptr (GPtrArray) warnings = g_ptr_array_new_with_free_func (g_free);
  g_autofree char *drop_in = write_drop_in ("50-extra.conf", "[cluster]\nelection_ms = 900\n");
  g_autoptr (SpConfig) c = load_ok (NODE "nmae = beta\n[tsl]\nca = /ca.pem\n" INSECURE, warnings);
  const char *w0, *w1, *w2;

  /* Groups that are not the core's wait for the plugins (the third
   * warning: one voter). */
  ck_assert_uint_eq (warnings->len, 3);
  sp_config_warn_unclaimed (c, warnings);
  ck_assert_str_eq (c->node_name, "alpha");
  ck_assert_uint_eq (c->election_ms, 600);
  ck_assert_uint_eq (warnings->len, 4);
  w0 = warnings->pdata[0];
  w1 = warnings->pdata[1];
  w2 = warnings->pdata[3];
  ck_assert (g_str_has_prefix (w0, conf_path));
  assert_has (w0, "[node] nmae: unknown key, ignored (did you mean name?)");
  ck_assert (g_str_has_prefix (w1, drop_in));
  assert_has (w1, "[cluster] election_ms: unknown key, ignored (did you mean election-ms?)");
  ck_assert (g_str_has_prefix (w2, conf_path));
  assert_has (w2, "[tsl]");
  assert_has (w2, "ca");
}
END_TEST

START_TEST (test_plugin_groups)
{
  static const char *const keys[] = { "addresses", "count", NULL };
  g_autoptr (GPtrArray) warnings = g_ptr_array_new_with_free_func (g_free);
  g_autofree char *drop_in
      = write_drop_in ("60-vip.conf", "[vip]\ncount = many\ncuont = 3\n[other]\nx = 1\n");
  g_autoptr (SpConfig) c = load_ok (NODE INSECURE "[vip]\naddresses = a;b ; c\n", warnings);
  g_auto (GStrv) addresses = NULL;
  g_autoptr (GError) error = NULL;
  guint count = 7;

  ck_assert (sp_config_has_group (c, "vip"));
  ck_assert (!sp_config_has_group (c, "vpi"));
  g_ptr_array_set_size (warnings, 0); /* one voter */
  sp_config_claim (c, "vip", keys, warnings);
  ck_assert_uint_eq (warnings->len, 1);
  ck_assert (g_str_has_prefix (warnings->pdata[0], drop_in));
  assert_has (warnings->pdata[0], "[vip] cuont: unknown key, ignored (did you mean count?)");
  sp_config_warn_unclaimed (c, warnings);
  ck_assert_uint_eq (warnings->len, 2);
  assert_has (warnings->pdata[1], "[other]: unknown group");

  ck_assert (sp_config_get_strv (c, "vip", "addresses", &addresses, &error));
  ck_assert_uint_eq (g_strv_length (addresses), 3);
  ck_assert_str_eq (addresses[2], "c");
  /* absent: left alone */
  ck_assert (sp_config_get_uint (c, "vip", "interval", 0, 10, &count, &error));
  ck_assert_uint_eq (count, 7);
  /* the error names the drop-in that set it */
  ck_assert (!sp_config_get_uint (c, "vip", "count", 0, 10, &count, &error));
  ck_assert (g_str_has_prefix (error->message, drop_in));
  assert_has (error->message, "[vip] count: expected an integer between 0 and 10");
  g_clear_error (&error);
  ck_assert (
      !sp_config_error (c, &error, SP_CONFIG_ERROR_INVALID, "vip", "addresses", "no %s", "good"));
  ck_assert (g_str_has_prefix (error->message, conf_path));
  assert_has (error->message, "[vip] addresses: no good");
}
END_TEST

START_TEST (test_fence_keys)
{
  g_autoptr (SpConfig) c = load_ok (NODE INSECURE, NULL);
  g_autoptr (SpConfig) off = load_ok (NODE "[cluster]\nfence = false\n" INSECURE, NULL);

  ck_assert (c->fence);
  ck_assert_uint_eq (c->leader_watchdog_ms, 250 + 200);
  ck_assert (!off->fence);
  ck_assert_uint_eq (c->keeper_ms, 20);
  assert_key_error (NODE "[cluster]\nkeeper-ms = 0\n" INSECURE, SP_CONFIG_ERROR_INVALID,
                    "[cluster] keeper-ms", "between 1 and 1000");
  assert_key_error (NODE "[cluster]\nkeeper-ms = 1001\n" INSECURE, SP_CONFIG_ERROR_INVALID,
                    "[cluster] keeper-ms", "between 1 and 1000");
  assert_key_error (NODE "[cluster]\nleader-watchdog-ms = 250\n" INSECURE, SP_CONFIG_ERROR_INVALID,
                    "[cluster] leader-watchdog-ms", "expected more than heartbeat-ms (250)");
}
END_TEST

START_TEST (test_tls_required)
{
  assert_key_error (NODE, SP_CONFIG_ERROR_MISSING, "[tls] ca", "or set insecure = true");
  assert_key_error (NODE "[tls]\nca = /ca.pem\nkey = /node.key\n", SP_CONFIG_ERROR_MISSING,
                    "[tls] cert", "or set insecure = true");
  assert_key_error (NODE "[tls]\nca = /ca.pem\ncert = /node.pem\ninsecure = false\n",
                    SP_CONFIG_ERROR_MISSING, "[tls] key", "or set insecure = true");
}
END_TEST

/* Revoked certificates: SHA-256 fingerprints, with colons or bare. */
START_TEST (test_tls_revoked)
{
  g_autoptr (SpConfig) c
      = load_ok (NODE INSECURE "revoked = AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:"
                               "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89;"
                               "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
                 NULL);

  ck_assert_uint_eq (g_strv_length (c->tls_revoked), 2);
  assert_key_error (NODE INSECURE "revoked = abcd\n", SP_CONFIG_ERROR_INVALID, "[tls] revoked",
                    "\"abcd\" is not a SHA-256 fingerprint");
  assert_key_error (NODE INSECURE
                    "revoked = "
                    "00112233445566778899aabbccddeeff00112233445566778899aabbccddeefg\n",
                    SP_CONFIG_ERROR_INVALID, "[tls] revoked", "not a SHA-256 fingerprint");
}
END_TEST

START_TEST (test_bad_initial_members)
{
  const struct
  {
    const char *members;
    const char *detail;
  } cases[] = {
    { "alpha=127.0.0.1:7400;beta", "got \"beta\"" },
    { "alpha=127.0.0.1:7400;;beta=127.0.0.1:7401", "got \"\"" },
    { "alpha=127.0.0.1:7400;b eta=127.0.0.1:7401", "got \"b eta\"" },
    { "alpha=127.0.0.1:7400;beta=127.0.0.1", "\"beta=127.0.0.1\"" },
    { "alpha=127.0.0.1:7400;beta=127.0.0.1:99999", "got \"127.0.0.1:99999\"" },
    { "alpha=127.0.0.1:7400;alpha=127.0.0.1:7401", "\"alpha\" is listed twice" },
    { "alpha=127.0.0.1:7400;beta=127.0.0.1:7400", "\"alpha\" and \"beta\" have the same address" },
    { "alpha=[::1]:7400;beta=[::1]:7400", "same address" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autofree char *contents
          = g_strdup_printf (NODE "[cluster]\ninitial-members = %s\n" INSECURE, cases[i].members);

      assert_key_error (contents, SP_CONFIG_ERROR_INVALID, "[cluster] initial-members",
                        cases[i].detail);
    }
}
END_TEST

START_TEST (test_node_not_in_members)
{
  assert_key_error (
      NODE "[cluster]\ninitial-members = beta=127.0.0.1:7401;gamma=127.0.0.1:7402\n" INSECURE,
      SP_CONFIG_ERROR_INVALID, "[cluster] initial-members",
      "[node] name = \"alpha\") is not among the members");
}
END_TEST

int
main (void)
{
  Suite *s = suite_create ("config");
  TCase *tc = tcase_create ("load");
  SRunner *sr;
  int failed;

  tcase_add_checked_fixture (tc, setup, teardown);
  tcase_add_test (tc, test_defaults);
  tcase_add_test (tc, test_full_file);
  tcase_add_test (tc, test_drop_in_overrides);
  tcase_add_test (tc, test_drop_in_error_names_drop_in);
  tcase_add_test (tc, test_required_keys);
  tcase_add_test (tc, test_invalid_values);
  tcase_add_test (tc, test_election_versus_heartbeat);
  tcase_add_test (tc, test_syntax_error);
  tcase_add_test (tc, test_missing_main_file);
  tcase_add_test (tc, test_ipv6_listen);
  tcase_add_test (tc, test_unknown_keys_warn);
  tcase_add_test (tc, test_plugin_groups);
  tcase_add_test (tc, test_fence_keys);
  tcase_add_test (tc, test_tls_required);
  tcase_add_test (tc, test_tls_revoked);
  tcase_add_test (tc, test_bad_initial_members);
  tcase_add_test (tc, test_node_not_in_members);
  suite_add_tcase (s, tc);

  sr = srunner_create (s);
  srunner_run_all (sr, CK_NORMAL);
  failed = srunner_ntests_failed (sr);
  srunner_free (sr);
  return failed == 0 ? 0 : 1;
}
