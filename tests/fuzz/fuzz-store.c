/* Store apply and restore (daemon/store.c) on hostile commands and
 * snapshots, as a follower applies what a leader replicated.  The input is
 * records [op u8][length u16 LE][bytes]: an even op applies the bytes as a
 * committed command, an odd one restores them as a snapshot.  Afterwards the
 * store's snapshot must restore, into a new store, to the same snapshot:
 * applying is deterministic, and what a node applied it can hand on. */
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

#include "address.h"
#include "config.h"
#include "store.h"

/* What reaches a watch passed the rules a proposer applies: the key rule,
 * member names and addresses (a plugin may write them into a file). */

/* The same answer for a name every time, as the applied configuration gives. */
static gboolean
is_member (const char *name, gpointer user_data)
{
  return g_str_hash (name) % 2 == 0;
}

static void
on_change (const char *key, const char *value, guint64 revision, gpointer user_data)
{
  if (!sp_store_check_key (key, NULL) || (value && !g_utf8_validate (value, -1, NULL)))
    abort ();
}

static void
on_member (const char *name, const char *address, gpointer user_data)
{
  if (!sp_config_valid_name (name) || !sp_address_parse (address, NULL, NULL))
    abort ();
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  g_autoptr (SpStore) store = sp_store_new ();
  g_autoptr (SpStore) copy = sp_store_new ();
  g_autoptr (GBytes) snap = NULL;
  g_autoptr (GBytes) snap2 = NULL;
  g_autoptr (GPtrArray) keys = NULL;
  g_autoptr (GPtrArray) refused = NULL;
  size_t at = 0;

  sp_fuzz_init ();
  sp_store_set_member_check (store, is_member, NULL);
  sp_store_set_watch (store, on_change, NULL);
  sp_store_set_member_watch (store, on_member, NULL);
  while (at + 3 <= size)
    {
      guint8 op = data[at];
      size_t len = MIN ((size_t)(data[at + 1] | data[at + 2] << 8), size - at - 3);
      g_autoptr (GBytes) bytes = g_bytes_new (data + at + 3, len);
      guint64 before = sp_store_revision (store), revision = 0;
      g_autoptr (GError) error = NULL;

      at += 3 + len;
      if (op % 2 == 0)
        {
          if (sp_store_apply (store, bytes, &revision, &error) && revision < before)
            abort ();
        }
      else if (!sp_store_restore (store, bytes, NULL, &error)
               && sp_store_revision (store) != before)
        abort ();
    }

  keys = sp_store_list (store, "");
  for (guint i = 0; i < keys->len; i++)
    if (!sp_store_get (store, keys->pdata[i], NULL))
      abort ();
  /* What a node applied it hands on whole: nothing of it is refused. */
  snap = sp_store_snapshot (store);
  refused = g_ptr_array_new_with_free_func (g_free);
  if (!sp_store_restore (copy, snap, refused, NULL) || refused->len > 0)
    abort ();
  snap2 = sp_store_snapshot (copy);
  if (!g_bytes_equal (snap, snap2) || sp_store_revision (copy) != sp_store_revision (store))
    abort ();
  return 0;
}
