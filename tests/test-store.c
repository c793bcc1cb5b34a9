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

/* Data written before the key rule: still applied and restored. */
START_TEST (test_old_keys_still_load)
{
  g_autoptr (SpStore) store = sp_store_new ();
  g_autoptr (SpStore) copy = sp_store_new ();
  g_autoptr (GVariant) v = g_variant_ref_sink (
      g_variant_new ("(qysst)", (guint16)1, (guint8)0, "old\nkey", "v", (guint64)0));
  g_autoptr (GBytes) cmd = g_variant_get_data_as_bytes (v);
  g_autoptr (GBytes) snap = NULL;

  ck_assert (sp_store_apply (store, cmd, NULL, NULL));
  ck_assert_str_eq (sp_store_get (store, "old\nkey", NULL), "v");
  snap = sp_store_snapshot (store);
  ck_assert (sp_store_restore (copy, snap, NULL));
  ck_assert_str_eq (sp_store_get (copy, "old\nkey", NULL), "v");
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

  ck_assert (sp_store_restore (c, snap_a, NULL));
  snap_c = sp_store_snapshot (c);
  ck_assert (g_bytes_equal (snap_a, snap_c));
  ck_assert_str_eq (sp_store_get (c, "k3", NULL), sp_store_get (a, "k3", NULL));
  ck_assert_str_eq (sp_store_member_address (c, "delta"), "127.0.0.1:7404");
  ck_assert_uint_eq (sp_store_revision (c), sp_store_revision (a));

  ck_assert (!sp_store_restore (c, bad, &error));
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
  tcase_add_test (tc, test_old_keys_still_load);
  tcase_add_test (tc, test_member_record_for_a_member_is_refused);
  tcase_add_test (tc, test_member_record_parse);
  suite_add_tcase (s, tc);
  sr = srunner_create (s);
  srunner_run_all (sr, CK_NORMAL);
  failed = srunner_ntests_failed (sr);
  srunner_free (sr);
  return failed == 0 ? 0 : 1;
}
