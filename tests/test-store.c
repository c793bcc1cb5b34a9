/* The replicated key/value state machine. */
#include <check.h>
#include <string.h>

#include "store.h"

static void
apply_ok (SpStore *store, GBytes *cmd, guint64 *revision)
{
  g_autoptr (GError) error = NULL;

  ck_assert_ptr_nonnull (cmd);
  ck_assert_msg (sp_store_apply (store, cmd, revision, &error), "%s", error ? error->message : "");
  g_bytes_unref (cmd);
}

START_TEST (test_set_get_revisions)
{
  g_autoptr (SpStore) store = sp_store_new ();
  guint64 rev, key_rev;

  ck_assert_ptr_null (sp_store_get (store, "vip", &key_rev));
  ck_assert_uint_eq (key_rev, 0);
  apply_ok (store, sp_store_cmd_set ("vip", "10.77.0.100", NULL), &rev);
  ck_assert_uint_eq (rev, 1);
  apply_ok (store, sp_store_cmd_set ("other", "x", NULL), &rev);
  apply_ok (store, sp_store_cmd_set ("vip", "10.77.0.101", NULL), &rev);
  ck_assert_uint_eq (rev, 3);
  ck_assert_str_eq (sp_store_get (store, "vip", &key_rev), "10.77.0.101");
  ck_assert_uint_eq (key_rev, 3);
  ck_assert_uint_eq (sp_store_revision (store), 3);
}
END_TEST

START_TEST (test_compare_and_swap)
{
  g_autoptr (SpStore) store = sp_store_new ();
  g_autoptr (GBytes) stale = NULL;
  g_autoptr (GError) error = NULL;
  guint64 rev;

  /* expected 0: create only if absent */
  apply_ok (store, sp_store_cmd_cas ("lock", 0, "alpha", NULL), &rev);
  stale = sp_store_cmd_cas ("lock", 0, "beta", NULL);
  ck_assert (!sp_store_apply (store, stale, NULL, &error));
  ck_assert (g_error_matches (error, SP_STORE_ERROR, SP_STORE_ERROR_CONFLICT));
  ck_assert_ptr_nonnull (strstr (error->message, "lock"));
  ck_assert_str_eq (sp_store_get (store, "lock", NULL), "alpha");
  ck_assert_uint_eq (sp_store_revision (store), rev);

  apply_ok (store, sp_store_cmd_cas ("lock", rev, "beta", NULL), NULL);
  ck_assert_str_eq (sp_store_get (store, "lock", NULL), "beta");
}
END_TEST

START_TEST (test_delete_and_list)
{
  g_autoptr (SpStore) store = sp_store_new ();
  g_autoptr (GBytes) missing = sp_store_cmd_delete ("nope", NULL);
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) keys = NULL;

  apply_ok (store, sp_store_cmd_set ("svc/b", "2", NULL), NULL);
  apply_ok (store, sp_store_cmd_set ("svc/a", "1", NULL), NULL);
  apply_ok (store, sp_store_cmd_set ("other", "3", NULL), NULL);
  apply_ok (store, sp_store_cmd_delete ("svc/b", NULL), NULL);
  ck_assert (!sp_store_apply (store, missing, NULL, &error));
  ck_assert (g_error_matches (error, SP_STORE_ERROR, SP_STORE_ERROR_NOT_FOUND));

  apply_ok (store, sp_store_cmd_set ("svc/c", "4", NULL), NULL);
  keys = sp_store_list (store, "svc/");
  ck_assert_uint_eq (keys->len, 2);
  ck_assert_str_eq (keys->pdata[0], "svc/a");
  ck_assert_str_eq (keys->pdata[1], "svc/c");
}
END_TEST

START_TEST (test_bad_input)
{
  g_autoptr (SpStore) store = sp_store_new ();
  g_autoptr (GError) error = NULL;
  g_autofree char *big = g_strnfill (SP_STORE_MAX_VALUE + 1, 'x');
  g_autoptr (GBytes) garbage = g_bytes_new_static ("\x01\x02\x03garbage", 10);

  ck_assert_ptr_null (sp_store_cmd_set ("k", big, &error));
  ck_assert_ptr_nonnull (strstr (error->message, "limit"));
  g_clear_error (&error);
  ck_assert_ptr_null (sp_store_cmd_set ("bad\xff", "v", &error));
  ck_assert_ptr_nonnull (strstr (error->message, "UTF-8"));
  g_clear_error (&error);
  ck_assert_ptr_null (sp_store_cmd_set ("", "v", &error));
  g_clear_error (&error);

  ck_assert (!sp_store_apply (store, garbage, NULL, &error));
  ck_assert (g_error_matches (error, SP_STORE_ERROR, SP_STORE_ERROR_INVALID));
  ck_assert_uint_eq (sp_store_revision (store), 0);
}
END_TEST

START_TEST (test_key_rule)
{
  static const char *const bad[] = {
    "",
    "a\x1b[31mb",
    "two\nlines",
    "tab\t",
    "del\x7f",
    "c1\xc2\x85",
    "\xe2\x80\xae"
    "evil",
    "iso\xe2\x81\xa6late",
    "pop\xe2\x81\xa9",
  };
  g_autofree char *too_long = g_strnfill (SP_STORE_MAX_KEY + 1, 'k');
  g_autoptr (GError) error = NULL;

  ck_assert (sp_store_check_key ("svc/vip-1.ä漢 x", NULL));
  ck_assert (sp_store_check_prefix ("", NULL));
  ck_assert (!sp_store_check_key ("", NULL));
  for (gsize i = 0; i < G_N_ELEMENTS (bad); i++)
    {
      g_autoptr (GBytes) set = sp_store_cmd_set (bad[i], "v", NULL);
      g_autoptr (GBytes) del = sp_store_cmd_delete (bad[i], NULL);
      g_autoptr (GBytes) cas = sp_store_cmd_cas (bad[i], 0, "v", NULL);

      ck_assert_msg (!sp_store_check_key (bad[i], NULL), "key %" G_GSIZE_FORMAT, i);
      ck_assert_msg (*bad[i] == '\0' || !sp_store_check_prefix (bad[i], NULL),
                     "prefix %" G_GSIZE_FORMAT, i);
      ck_assert (!set && !del && !cas);
    }
  ck_assert (!sp_store_check_key (too_long, &error));
  ck_assert_ptr_nonnull (strstr (error->message, "limit"));
  g_clear_error (&error);

  /* The echo of a refused key is shown escaped and cut short. */
  {
    g_autofree char *base = g_strnfill (200, 'a');
    g_autofree char *key = g_strconcat (base, "\x1b", NULL);

    ck_assert (!sp_store_check_key (key, &error));
    ck_assert_ptr_nonnull (strstr (error->message, "…"));
    ck_assert_ptr_null (strchr (error->message, '\x1b'));
    ck_assert_uint_lt (strlen (error->message), 200);
    g_clear_error (&error);
    ck_assert (!sp_store_check_key ("a\x1b", &error));
    ck_assert_ptr_nonnull (strstr (error->message, "a\\x1b"));
  }
}
END_TEST

static gboolean
is_n1 (const char *name, gpointer user_data)
{
  return g_str_equal (name, "n1");
}

static void
record (const char *key, const char *value, guint64 revision, gpointer user_data)
{
  g_ptr_array_add (user_data, g_strdup_printf ("%s=%s@%" G_GUINT64_FORMAT, key,
                                               value ? value : "(deleted)", revision));
}

static void
record_member (const char *name, const char *address, gpointer user_data)
{
  g_ptr_array_add (user_data, g_strdup_printf ("%s@%s", name, address));
}

static void
count_member (const char *name, const char *address, guint *n)
{
  (*n)++;
}

/* What a leader that builds its own entries may commit, bypassing every
 * check of the requests (issue 21): each breaks the rule of names,
 * addresses or keys. */
static const char *const bad_addresses[] = {
  "10.0.0.9\nlogfile /etc/cron.d/x\nrestrict default\nserver 192.0.2.1:7400",
  "1.2.3.4 noselect key 1:7000",
  "10.0.0.9;x:7400",
  "h\xc3\xa9llo:7400",
  "10.0.0.9:7400\n",
  "[::1%eth0]:7400",
  "[::1]:+7400",
  "10.0.0.9",
  "",
};
static const char *const bad_names[] = { "bad name", "n\nx", "n;x", "n\xc3\xa9", "" };
static const char *const bad_keys[] = { "old\nkey",
                                        "a\xe2\x80\xae"
                                        "b",
                                        "", "k;\x01" };

static GBytes *
raw_cmd (guint8 op, const char *key, const char *value, guint64 expected)
{
  g_autoptr (GVariant) v
      = g_variant_ref_sink (g_variant_new ("(qysst)", (guint16)1, op, key, value, expected));

  return g_variant_get_data_as_bytes (v);
}

/* 300 bytes of a host name and a port. */
static char *
long_address (void)
{
  g_autofree char *host = g_strnfill (300, 'a');

  return g_strdup_printf ("%s:7400", host);
}

static void
assert_refused (SpStore *store, GBytes *cmd)
{
  g_autoptr (GError) error = NULL;

  ck_assert (!sp_store_apply (store, cmd, NULL, &error));
  ck_assert_msg (g_error_matches (error, SP_STORE_ERROR, SP_STORE_ERROR_INVALID), "%s",
                 error->message);
  /* the echo is escaped: the log line stays one line */
  ck_assert_ptr_null (strchr (error->message, '\n'));
  g_bytes_unref (cmd);
}

START_TEST (test_crafted_member_records_refused)
{
  g_autoptr (SpStore) store = sp_store_new ();
  g_autoptr (GPtrArray) members = g_ptr_array_new_with_free_func (g_free);
  g_autofree char *long_one = long_address ();
  g_autofree char *long_name = g_strnfill (300, 'n');
  guint64 rev = 0;

  sp_store_set_member_watch (store, record_member, members);
  for (guint move = 0; move < 2; move++)
    {
      for (guint i = 0; i < G_N_ELEMENTS (bad_addresses); i++)
        {
          assert_refused (store, raw_cmd (3, "mallory", bad_addresses[i], move));
          /* a member record advances the revision, applied or not */
          ck_assert_uint_eq (sp_store_revision (store), ++rev);
        }
      assert_refused (store, raw_cmd (3, "mallory", long_one, move));
      rev++;
      for (guint i = 0; i < G_N_ELEMENTS (bad_names); i++, rev++)
        assert_refused (store, raw_cmd (3, bad_names[i], "10.0.0.9:7400", move));
      assert_refused (store, raw_cmd (3, long_name, "10.0.0.9:7400", move));
      rev++;
    }
  ck_assert_uint_eq (sp_store_revision (store), rev);
  ck_assert_ptr_null (sp_store_member_address (store, "mallory"));
  ck_assert_uint_eq (members->len, 0);

  /* Not proposed either, nor read from a configuration change. */
  for (guint i = 0; i < G_N_ELEMENTS (bad_addresses); i++)
    {
      g_autoptr (GBytes) cmd = sp_store_cmd_member ("mallory", bad_addresses[i], NULL);
      g_autoptr (GBytes) raw = raw_cmd (3, "mallory", bad_addresses[i], 0);
      g_autofree char *name = NULL;
      g_autofree char *address = NULL;

      ck_assert_ptr_null (cmd);
      ck_assert (!sp_store_cmd_member_parse (raw, &name, &address));
    }
  apply_ok (store, sp_store_cmd_member ("delta", "[fd77::4]:7404", NULL), NULL);
  ck_assert_str_eq (sp_store_member_address (store, "delta"), "[fd77::4]:7404");
}
END_TEST

START_TEST (test_crafted_keys_refused)
{
  g_autoptr (SpStore) store = sp_store_new ();
  g_autoptr (GPtrArray) seen = g_ptr_array_new_with_free_func (g_free);
  g_autofree char *long_key = g_strnfill (SP_STORE_MAX_KEY + 44, 'k');

  sp_store_set_watch (store, record, seen);
  apply_ok (store, sp_store_cmd_set ("k", "v", NULL), NULL);
  for (guint op = 0; op < 3; op++)
    {
      for (guint i = 0; i < G_N_ELEMENTS (bad_keys); i++)
        assert_refused (store, raw_cmd (op, bad_keys[i], "v", 0));
      assert_refused (store, raw_cmd (op, long_key, "v", 0));
    }
  ck_assert_uint_eq (sp_store_revision (store), 1);
  ck_assert_uint_eq (seen->len, 1);
}
END_TEST

/* A snapshot with crafted records: each is left out and said, the rest is
 * restored, on every node alike. */
START_TEST (test_crafted_snapshot_records_left_out)
{
  g_autoptr (SpStore) store = sp_store_new ();
  g_autoptr (GPtrArray) refused = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GVariant) v = NULL;
  g_autoptr (GBytes) snap = NULL;
  g_autofree char *long_one = long_address ();
  g_autofree char *long_key = g_strnfill (300, 'k');
  GVariantBuilder items, members;
  guint n_bad = 0;

  g_variant_builder_init (&items, G_VARIANT_TYPE ("a(sst)"));
  g_variant_builder_add (&items, "(sst)", "good", "v", (guint64)1);
  for (guint i = 0; i < G_N_ELEMENTS (bad_keys); i++, n_bad++)
    g_variant_builder_add (&items, "(sst)", bad_keys[i], "v", (guint64)2);
  g_variant_builder_add (&items, "(sst)", long_key, "v", (guint64)2);
  n_bad++;
  g_variant_builder_init (&members, G_VARIANT_TYPE ("a(ss)"));
  g_variant_builder_add (&members, "(ss)", "delta", "127.0.0.1:7404");
  for (guint i = 0; i < G_N_ELEMENTS (bad_addresses); i++, n_bad++)
    {
      g_autofree char *name = g_strdup_printf ("m%u", i);

      g_variant_builder_add (&members, "(ss)", name, bad_addresses[i]);
    }
  g_variant_builder_add (&members, "(ss)", "long", long_one);
  n_bad++;
  for (guint i = 0; i < G_N_ELEMENTS (bad_names); i++, n_bad++)
    g_variant_builder_add (&members, "(ss)", bad_names[i], "10.0.0.9:7400");
  v = g_variant_ref_sink (
      g_variant_new ("(qta(sst)a(ss))", (guint16)1, (guint64)9, &items, &members));
  snap = g_variant_get_data_as_bytes (v);

  ck_assert (sp_store_restore (store, snap, refused, NULL));
  ck_assert_uint_eq (refused->len, n_bad);
  for (guint i = 0; i < refused->len; i++)
    ck_assert_ptr_null (strchr (refused->pdata[i], '\n'));
  ck_assert_uint_eq (sp_store_revision (store), 9);
  ck_assert_str_eq (sp_store_get (store, "good", NULL), "v");
  ck_assert_str_eq (sp_store_member_address (store, "delta"), "127.0.0.1:7404");
  {
    g_autoptr (GPtrArray) keys = sp_store_list (store, "");
    guint n_members = 0;

    ck_assert_uint_eq (keys->len, 1);
    sp_store_foreach_member (store, (SpStoreMemberFunc)count_member, &n_members);
    ck_assert_uint_eq (n_members, 1);
  }
  /* the same without anyone to tell */
  ck_assert (sp_store_restore (store, snap, NULL, NULL));
  ck_assert_ptr_null (sp_store_member_address (store, "long"));
}
END_TEST

START_TEST (test_watch)
{
  g_autoptr (SpStore) store = sp_store_new ();
  g_autoptr (GPtrArray) seen = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GPtrArray) members = g_ptr_array_new_with_free_func (g_free);

  sp_store_set_watch (store, record, seen);
  sp_store_set_member_watch (store, record_member, members);
  apply_ok (store, sp_store_cmd_set ("a", "1", NULL), NULL);
  apply_ok (store, sp_store_cmd_delete ("a", NULL), NULL);
  apply_ok (store, sp_store_cmd_member ("delta", "127.0.0.1:7404", NULL), NULL);
  ck_assert_uint_eq (seen->len, 2);
  ck_assert_str_eq (seen->pdata[0], "a=1@1");
  ck_assert_str_eq (seen->pdata[1], "a=(deleted)@2");
  ck_assert_uint_eq (members->len, 1);
  ck_assert_str_eq (members->pdata[0], "delta@127.0.0.1:7404");
  g_ptr_array_set_size (members, 0);
  sp_store_foreach_member (store, record_member, members);
  ck_assert_uint_eq (members->len, 1);
}
END_TEST

START_TEST (test_snapshot_restore)
{
  g_autoptr (SpStore) a = sp_store_new ();
  g_autoptr (SpStore) b = sp_store_new ();
  g_autoptr (SpStore) c = sp_store_new ();
  g_autoptr (GBytes) snap_a = NULL;
  g_autoptr (GBytes) snap_c = NULL;
  g_autoptr (GBytes) bad = g_bytes_new_static ("xx", 2);
  g_autoptr (GError) error = NULL;

  /* Same commands, same state, same bytes: what replicas rely on. */
  for (int i = 0; i < 50; i++)
    {
      g_autofree char *key = g_strdup_printf ("k%d", i % 7);
      g_autofree char *value = g_strdup_printf ("v%d", i);

      apply_ok (a, sp_store_cmd_set (key, value, NULL), NULL);
      apply_ok (b, sp_store_cmd_set (key, value, NULL), NULL);
    }
  apply_ok (a, sp_store_cmd_member ("delta", "127.0.0.1:7404", NULL), NULL);
  apply_ok (b, sp_store_cmd_member ("delta", "127.0.0.1:7404", NULL), NULL);
  snap_a = sp_store_snapshot (a);
  {
    g_autoptr (GBytes) snap_b = sp_store_snapshot (b);

    ck_assert (g_bytes_equal (snap_a, snap_b));
  }

  ck_assert (sp_store_restore (c, snap_a, NULL, NULL));
  snap_c = sp_store_snapshot (c);
  ck_assert (g_bytes_equal (snap_a, snap_c));
  ck_assert_str_eq (sp_store_get (c, "k3", NULL), sp_store_get (a, "k3", NULL));
  ck_assert_str_eq (sp_store_member_address (c, "delta"), "127.0.0.1:7404");
  ck_assert_uint_eq (sp_store_revision (c), sp_store_revision (a));

  ck_assert (!sp_store_restore (c, bad, NULL, &error));
  ck_assert_uint_eq (sp_store_revision (c), sp_store_revision (a));
}
END_TEST

/* A member record for a current member changes no address (issue: a refused
 * AddMember used to move an existing member to the new address). */
START_TEST (test_member_record_for_a_member_is_refused)
{
  g_autoptr (SpStore) store = sp_store_new ();
  g_autoptr (GPtrArray) members = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GBytes) moved = sp_store_cmd_member ("n1", "127.0.0.1:9", NULL);
  g_autoptr (GError) error = NULL;
  guint64 rev;

  sp_store_set_member_check (store, is_n1, NULL);
  sp_store_set_member_watch (store, record_member, members);
  apply_ok (store, sp_store_cmd_member ("n4", "127.0.0.1:7404", NULL), &rev);
  ck_assert (!sp_store_apply (store, moved, NULL, &error));
  ck_assert (g_error_matches (error, SP_STORE_ERROR, SP_STORE_ERROR_REFUSED));
  ck_assert_ptr_nonnull (strstr (error->message, "n1 is already a member"));
  ck_assert_ptr_null (sp_store_member_address (store, "n1"));
  ck_assert_uint_eq (sp_store_revision (store), rev + 1);
  ck_assert_uint_eq (members->len, 1);
  ck_assert_str_eq (members->pdata[0], "n4@127.0.0.1:7404");

  /* Moving is for members only. */
  g_clear_error (&error);
  apply_ok (store, sp_store_cmd_member_address ("n1", "127.0.0.1:7411", NULL), NULL);
  ck_assert_str_eq (sp_store_member_address (store, "n1"), "127.0.0.1:7411");
  {
    g_autoptr (GBytes) stranger = sp_store_cmd_member_address ("n4", "127.0.0.1:9", NULL);

    ck_assert (!sp_store_apply (store, stranger, NULL, &error));
    ck_assert (g_error_matches (error, SP_STORE_ERROR, SP_STORE_ERROR_REFUSED));
    ck_assert_str_eq (sp_store_member_address (store, "n4"), "127.0.0.1:7404");
  }
}
END_TEST

/* What a node reads from a configuration change to dial its new member
 * before the change is applied: the record of a member being added only. */
START_TEST (test_member_record_parse)
{
  g_autoptr (GBytes) add = sp_store_cmd_member ("n4", "127.0.0.1:7404", NULL);
  g_autoptr (GBytes) move = sp_store_cmd_member_address ("n4", "127.0.0.1:9", NULL);
  g_autoptr (GBytes) set = sp_store_cmd_set ("n4", "127.0.0.1:9", NULL);
  g_autoptr (GBytes) junk = g_bytes_new_static ("junk", 4);
  GBytes *others[] = { move, set, junk, NULL };
  g_autofree char *name = NULL;
  g_autofree char *address = NULL;

  ck_assert (sp_store_cmd_member_parse (add, &name, &address));
  ck_assert_str_eq (name, "n4");
  ck_assert_str_eq (address, "127.0.0.1:7404");
  for (guint i = 0; i < G_N_ELEMENTS (others); i++)
    {
      g_autofree char *n = NULL;
      g_autofree char *a = NULL;

      ck_assert (!sp_store_cmd_member_parse (others[i], &n, &a));
      ck_assert_ptr_null (n);
      ck_assert_ptr_null (a);
    }
}
END_TEST

int
main (void)
{
  Suite *s = suite_create ("store");
  TCase *tc = tcase_create ("kv");
  SRunner *sr;
  int failed;

  tcase_add_test (tc, test_set_get_revisions);
  tcase_add_test (tc, test_compare_and_swap);
  tcase_add_test (tc, test_delete_and_list);
  tcase_add_test (tc, test_bad_input);
  tcase_add_test (tc, test_watch);
  tcase_add_test (tc, test_snapshot_restore);
  tcase_add_test (tc, test_key_rule);
  tcase_add_test (tc, test_crafted_member_records_refused);
  tcase_add_test (tc, test_crafted_keys_refused);
  tcase_add_test (tc, test_crafted_snapshot_records_left_out);
  tcase_add_test (tc, test_member_record_for_a_member_is_refused);
  tcase_add_test (tc, test_member_record_parse);
  suite_add_tcase (s, tc);
  sr = srunner_create (s);
  srunner_run_all (sr, CK_NORMAL);
  failed = srunner_ntests_failed (sr);
  srunner_free (sr);
  return failed == 0 ? 0 : 1;
}
