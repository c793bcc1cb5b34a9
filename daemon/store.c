/* Formats (GVariant, version first):
 *   command  (qysst)      version, op, key, value, expected revision
 *                         (member records: 0 for a member being added, 1
 *                         for a member's new address; older versions
 *                         apply both alike)
 *   snapshot (qta(sst)a(ss))  version, revision, (key, value, revision), (name, address)
 */
#include "store.h"

#include <string.h>

#include "address.h"
#include "config.h"
#include "text.h"

#define STORE_VERSION 1
#define CMD_TYPE      "(qysst)"
#define SNAP_TYPE     "(qta(sst)a(ss))"

typedef enum
{
  OP_SET,
  OP_DELETE,
  OP_CAS,
  OP_MEMBER,
} Op;

typedef struct
{
  char *value;
  guint64 revision;
} Item;

struct _SpStore
{
  GHashTable *items;   /* key -> Item */
  GHashTable *members; /* name -> address */
  guint64 revision;
  SpStoreWatch watch;
  gpointer watch_data;
  SpStoreMemberFunc member_watch;
  gpointer member_watch_data;
  SpStoreMemberCheck is_member;
  gpointer is_member_data;
};

/* The command type, checked once; a value of it kept so that GLib keeps
 * its layout built between writes. */
static const GVariantType *
cmd_type (void)
{
  static GVariant *kept;
  static gsize ready = 0;

  if (g_once_init_enter (&ready))
    {
      kept = g_variant_ref_sink (
          g_variant_new_from_data (G_VARIANT_TYPE (CMD_TYPE), NULL, 0, FALSE, NULL, NULL));
      g_once_init_leave (&ready, 1);
    }
  return g_variant_get_type (kept);
}

GQuark
sp_store_error_quark (void)
{
  return g_quark_from_static_string ("sp-store-error-quark");
}

static void
item_free (Item *item)
{
  g_free (item->value);
  g_free (item);
}

static GHashTable *
items_new (void)
{
  return g_hash_table_new_full (g_str_hash, g_str_equal, g_free, (GDestroyNotify)item_free);
}

static GHashTable *
members_new (void)
{
  return g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
}

SpStore *
sp_store_new (void)
{
  SpStore *store = g_new0 (SpStore, 1);

  store->items = items_new ();
  store->members = members_new ();
  return store;
}

void
sp_store_free (SpStore *store)
{
  if (!store)
    return;
  g_hash_table_unref (store->items);
  g_hash_table_unref (store->members);
  g_free (store);
}

void
sp_store_set_watch (SpStore *store, SpStoreWatch watch, gpointer user_data)
{
  store->watch = watch;
  store->watch_data = user_data;
}

void
sp_store_set_member_watch (SpStore *store, SpStoreMemberFunc watch, gpointer user_data)
{
  store->member_watch = watch;
  store->member_watch_data = user_data;
}

void
sp_store_set_member_check (SpStore *store, SpStoreMemberCheck is_member, gpointer user_data)
{
  store->is_member = is_member;
  store->is_member_data = user_data;
}

static gboolean
check_string (const char *what, const char *s, gsize max, gboolean allow_empty, GError **error)
{
  gsize len = s ? strlen (s) : 0;

  if (!s || (!allow_empty && len == 0))
    {
      g_set_error (error, SP_STORE_ERROR, SP_STORE_ERROR_INVALID, "%s must not be empty", what);
      return FALSE;
    }
  if (len > max)
    {
      g_set_error (error, SP_STORE_ERROR, SP_STORE_ERROR_INVALID,
                   "%s is %" G_GSIZE_FORMAT " bytes, the limit is %" G_GSIZE_FORMAT, what, len,
                   max);
      return FALSE;
    }
  if (!g_utf8_validate (s, len, NULL))
    {
      g_set_error (error, SP_STORE_ERROR, SP_STORE_ERROR_INVALID, "%s is not valid UTF-8", what);
      return FALSE;
    }
  return TRUE;
}

static gboolean
check_key (const char *what, const char *key, gboolean allow_empty, GError **error)
{
  if (!check_string (what, key, SP_STORE_MAX_KEY, allow_empty, error))
    return FALSE;
  for (const char *p = key; *p; p = g_utf8_next_char (p))
    if (sp_text_is_unsafe (g_utf8_get_char (p)))
      {
        g_autofree char *echo = sp_text_echo (key);

        g_set_error (error, SP_STORE_ERROR, SP_STORE_ERROR_INVALID,
                     "%s %s has a control or bidi control character (U+%04X), which keys "
                     "may not contain",
                     what, echo, g_utf8_get_char (p));
        return FALSE;
      }
  return TRUE;
}

gboolean
sp_store_check_key (const char *key, GError **error)
{
  return check_key ("key", key, FALSE, error);
}

gboolean
sp_store_check_prefix (const char *prefix, GError **error)
{
  return check_key ("prefix", prefix, TRUE, error);
}

/* Every write builds a command and every node applies it: child by child,
 * without a format string to parse each time (see wire.c). */
static GBytes *
encode (Op op, const char *key, const char *value, guint64 expected)
{
  GVariant *fields[] = {
    g_variant_new_uint16 (STORE_VERSION), g_variant_new_byte ((guint8)op),
    g_variant_new_string (key),           g_variant_new_string (value),
    g_variant_new_uint64 (expected),
  };
  g_autoptr (GVariant) v = g_variant_ref_sink (g_variant_new_tuple (fields, G_N_ELEMENTS (fields)));

  return g_variant_get_data_as_bytes (v);
}

GBytes *
sp_store_cmd_set (const char *key, const char *value, GError **error)
{
  if (!sp_store_check_key (key, error)
      || !check_string ("value", value, SP_STORE_MAX_VALUE, TRUE, error))
    return NULL;
  return encode (OP_SET, key, value, 0);
}

GBytes *
sp_store_cmd_delete (const char *key, GError **error)
{
  if (!sp_store_check_key (key, error))
    return NULL;
  return encode (OP_DELETE, key, "", 0);
}

GBytes *
sp_store_cmd_cas (const char *key, guint64 expected_revision, const char *value, GError **error)
{
  if (!sp_store_check_key (key, error)
      || !check_string ("value", value, SP_STORE_MAX_VALUE, TRUE, error))
    return NULL;
  return encode (OP_CAS, key, value, expected_revision);
}

/* A member record: a name of the configuration's rule, an address of the
 * one address parser.  Checked alike when proposed, applied and restored. */
static gboolean
check_member (const char *name, const char *address, GError **error)
{
  g_autofree char *echo = NULL;

  if (!sp_config_valid_name (name))
    {
      echo = sp_text_echo (name);
      g_set_error (error, SP_STORE_ERROR, SP_STORE_ERROR_INVALID,
                   "member name \"%s\" is not " SP_CONFIG_NAME_RULE, echo);
      return FALSE;
    }
  if (!sp_address_parse (address, NULL, NULL))
    {
      echo = sp_text_echo (address);
      g_set_error (error, SP_STORE_ERROR, SP_STORE_ERROR_INVALID,
                   "address \"%s\" of member %s is not " SP_ADDRESS_EXPECTS, echo, name);
      return FALSE;
    }
  return TRUE;
}

static GBytes *
member_record (const char *name, const char *address, guint64 move, GError **error)
{
  if (!check_member (name, address, error))
    return NULL;
  return encode (OP_MEMBER, name, address, move);
}

GBytes *
sp_store_cmd_member (const char *name, const char *address, GError **error)
{
  return member_record (name, address, 0, error);
}

GBytes *
sp_store_cmd_member_address (const char *name, const char *address, GError **error)
{
  return member_record (name, address, 1, error);
}

/* Untrusted bytes to a GVariant of the given type, or an error. */
static GVariant *
decode (GBytes *bytes, const GVariantType *type, const char *what, GError **error)
{
  g_autoptr (GVariant) v = NULL;
  g_autoptr (GVariant) version_v = NULL;
  guint16 version;

  if (!bytes)
    {
      g_set_error (error, SP_STORE_ERROR, SP_STORE_ERROR_INVALID, "%s is empty", what);
      return NULL;
    }
  v = g_variant_ref_sink (g_variant_new_from_bytes (type, bytes, FALSE));
  if (!g_variant_is_normal_form (v))
    {
      g_set_error (error, SP_STORE_ERROR, SP_STORE_ERROR_INVALID, "%s is malformed", what);
      return NULL;
    }
  version_v = g_variant_get_child_value (v, 0);
  version = g_variant_get_uint16 (version_v);
  if (version != STORE_VERSION)
    {
      g_set_error (error, SP_STORE_ERROR, SP_STORE_ERROR_INVALID, "%s has unknown version %u", what,
                   version);
      return NULL;
    }
  return g_steal_pointer (&v);
}

gboolean
sp_store_cmd_member_parse (GBytes *cmd, char **name, char **address)
{
  g_autoptr (GVariant) v = decode (cmd, cmd_type (), "store command", NULL);
  guint16 version;
  guint8 op;
  const char *key, *value;
  guint64 move;

  if (!v)
    return FALSE;
  g_variant_get (v, "(qy&s&st)", &version, &op, &key, &value, &move);
  if (op != OP_MEMBER || move != 0 || !check_member (key, value, NULL))
    return FALSE;
  *name = g_strdup (key);
  *address = g_strdup (value);
  return TRUE;
}

static void
notify (SpStore *store, const char *key, const char *value)
{
  if (store->watch)
    store->watch (key, value, store->revision, store->watch_data);
}

static gboolean
apply_member (SpStore *store, const char *name, const char *address, gboolean move,
              guint64 *revision, GError **error)
{
  /* Every member record advances the revision, refused or not, as it did
   * before records could be refused: the same log gives the same
   * revisions to every version. */
  store->revision++;
  if (!check_member (name, address, error))
    return FALSE;
  if (store->is_member && store->is_member (name, store->is_member_data) != move)
    {
      g_set_error (error, SP_STORE_ERROR, SP_STORE_ERROR_REFUSED,
                   move ? "%s is not a member; no address is recorded"
                        : "%s is already a member; its address stays as it is",
                   name);
      return FALSE;
    }
  g_hash_table_insert (store->members, g_strdup (name), g_strdup (address));
  if (store->member_watch)
    store->member_watch (name, address, store->member_watch_data);
  if (revision)
    *revision = store->revision;
  return TRUE;
}

gboolean
sp_store_apply (SpStore *store, GBytes *cmd, guint64 *revision, GError **error)
{
  g_autoptr (GVariant) v = decode (cmd, cmd_type (), "store command", error);
  g_autoptr (GVariant) op_v = NULL;
  g_autoptr (GVariant) key_v = NULL;
  g_autoptr (GVariant) value_v = NULL;
  g_autoptr (GVariant) expected_v = NULL;
  const char *key, *value;
  guint64 expected;
  guint8 op;
  Item *item;

  if (!v)
    return FALSE;
  op_v = g_variant_get_child_value (v, 1);
  key_v = g_variant_get_child_value (v, 2);
  value_v = g_variant_get_child_value (v, 3);
  expected_v = g_variant_get_child_value (v, 4);
  op = g_variant_get_byte (op_v);
  key = g_variant_get_string (key_v, NULL);
  value = g_variant_get_string (value_v, NULL);
  expected = g_variant_get_uint64 (expected_v);
  if (op == OP_MEMBER)
    return apply_member (store, key, value, expected == 1, revision, error);
  if (!sp_store_check_key (key, error)
      || !check_string ("value", value, SP_STORE_MAX_VALUE, TRUE, error))
    return FALSE;
  item = g_hash_table_lookup (store->items, key);

  switch (op)
    {
      case OP_CAS:
        if ((item ? item->revision : 0) != expected)
          {
            g_autofree char *echo = sp_text_echo (key);

            g_set_error (error, SP_STORE_ERROR, SP_STORE_ERROR_CONFLICT,
                         "%s is at revision %" G_GUINT64_FORMAT ", not %" G_GUINT64_FORMAT, echo,
                         item ? item->revision : 0, expected);
            return FALSE;
          }
        G_GNUC_FALLTHROUGH;
      case OP_SET:
        if (!item)
          {
            item = g_new0 (Item, 1);
            g_hash_table_insert (store->items, g_strdup (key), item);
          }
        g_free (item->value);
        item->value = g_strdup (value);
        item->revision = ++store->revision;
        notify (store, key, value);
        break;
      case OP_DELETE:
        if (!item)
          {
            g_autofree char *echo = sp_text_echo (key);

            g_set_error (error, SP_STORE_ERROR, SP_STORE_ERROR_NOT_FOUND, "%s does not exist",
                         echo);
            return FALSE;
          }
        g_hash_table_remove (store->items, key);
        store->revision++;
        notify (store, key, NULL);
        break;
      default:
        g_set_error (error, SP_STORE_ERROR, SP_STORE_ERROR_INVALID,
                     "store command has unknown operation %u", op);
        return FALSE;
    }
  if (revision)
    *revision = store->revision;
  return TRUE;
}

guint64
sp_store_revision (const SpStore *store)
{
  return store->revision;
}

const char *
sp_store_get (const SpStore *store, const char *key, guint64 *revision)
{
  Item *item = g_hash_table_lookup (store->items, key);

  if (revision)
    *revision = item ? item->revision : 0;
  return item ? item->value : NULL;
}

static int
cmp_str (gconstpointer a, gconstpointer b)
{
  return strcmp (*(char *const *)a, *(char *const *)b);
}

GPtrArray *
sp_store_list (const SpStore *store, const char *prefix)
{
  GPtrArray *keys = g_ptr_array_new_with_free_func (g_free);
  GHashTableIter iter;
  gpointer key;

  g_hash_table_iter_init (&iter, store->items);
  while (g_hash_table_iter_next (&iter, &key, NULL))
    if (g_str_has_prefix (key, prefix))
      g_ptr_array_add (keys, g_strdup (key));
  g_ptr_array_sort (keys, cmp_str);
  return keys;
}

const char *
sp_store_member_address (const SpStore *store, const char *name)
{
  return g_hash_table_lookup (store->members, name);
}

void
sp_store_foreach_member (const SpStore *store, SpStoreMemberFunc func, gpointer user_data)
{
  GHashTableIter iter;
  gpointer name, address;

  g_hash_table_iter_init (&iter, store->members);
  while (g_hash_table_iter_next (&iter, &name, &address))
    func (name, address, user_data);
}

GBytes *
sp_store_snapshot (const SpStore *store)
{
  g_autoptr (GPtrArray) keys = sp_store_list (store, "");
  g_autoptr (GVariant) v = NULL;
  GVariantBuilder items, members;
  GHashTableIter iter;
  gpointer name, address;

  /* Sorted, so equal states give equal bytes on every node. */
  g_variant_builder_init (&items, G_VARIANT_TYPE ("a(sst)"));
  for (guint i = 0; i < keys->len; i++)
    {
      Item *item = g_hash_table_lookup (store->items, keys->pdata[i]);

      g_variant_builder_add (&items, "(sst)", keys->pdata[i], item->value, item->revision);
    }
  g_variant_builder_init (&members, G_VARIANT_TYPE ("a(ss)"));
  {
    g_autoptr (GPtrArray) names = g_ptr_array_new ();

    g_hash_table_iter_init (&iter, store->members);
    while (g_hash_table_iter_next (&iter, &name, &address))
      g_ptr_array_add (names, name);
    g_ptr_array_sort (names, cmp_str);
    for (guint i = 0; i < names->len; i++)
      g_variant_builder_add (&members, "(ss)", names->pdata[i],
                             g_hash_table_lookup (store->members, names->pdata[i]));
  }
  v = g_variant_ref_sink (
      g_variant_new (SNAP_TYPE, (guint16)STORE_VERSION, store->revision, &items, &members));
  return g_variant_get_data_as_bytes (v);
}

/* A record of a snapshot the rules refuse: said once, then left out. */
static void
refuse_record (GPtrArray *refused, GError *error)
{
  if (refused)
    g_ptr_array_add (refused, g_strdup (error->message));
  g_error_free (error);
}

gboolean
sp_store_restore (SpStore *store, GBytes *snapshot, GPtrArray *refused, GError **error)
{
  g_autoptr (GVariant) v = decode (snapshot, G_VARIANT_TYPE (SNAP_TYPE), "store snapshot", error);
  g_autoptr (GHashTable) items = items_new ();
  g_autoptr (GHashTable) members = members_new ();
  g_autoptr (GVariantIter) item_iter = NULL;
  g_autoptr (GVariantIter) member_iter = NULL;
  const char *key, *value;
  guint64 revision, item_revision;
  guint16 version;

  if (!v)
    return FALSE;
  g_variant_get (v, SNAP_TYPE, &version, &revision, &item_iter, &member_iter);
  while (g_variant_iter_next (item_iter, "(&s&st)", &key, &value, &item_revision))
    {
      GError *bad = NULL;
      Item *item;

      if (!sp_store_check_key (key, &bad)
          || !check_string ("value", value, SP_STORE_MAX_VALUE, TRUE, &bad))
        {
          refuse_record (refused, bad);
          continue;
        }
      if (item_revision > revision || g_hash_table_contains (items, key))
        {
          g_autofree char *echo = sp_text_echo (key);

          if (error && !*error)
            g_set_error (error, SP_STORE_ERROR, SP_STORE_ERROR_INVALID,
                         "store snapshot: bad record for key %s", echo);
          return FALSE;
        }
      item = g_new0 (Item, 1);
      item->value = g_strdup (value);
      item->revision = item_revision;
      g_hash_table_insert (items, g_strdup (key), item);
    }
  while (g_variant_iter_next (member_iter, "(&s&s)", &key, &value))
    {
      GError *bad = NULL;

      if (check_member (key, value, &bad))
        g_hash_table_insert (members, g_strdup (key), g_strdup (value));
      else
        refuse_record (refused, bad);
    }

  g_hash_table_unref (store->items);
  store->items = g_steal_pointer (&items);
  g_hash_table_unref (store->members);
  store->members = g_steal_pointer (&members);
  store->revision = revision;
  return TRUE;
}
