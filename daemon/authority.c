#include "authority.h"

#define CHECK_ALLOW_INTERACTION 1
/* Callers remembered per bus connection; past this the cache starts over. */
#define UID_CACHE_MAX 1024
#define UID_CACHE_KEY "sp-authority-uids"

typedef struct
{
  GDBusConnection *bus;
  char *sender;
  char *action;
  gboolean interactive;
} Check;

static void
check_free (Check *c)
{
  g_object_unref (c->bus);
  g_free (c->sender);
  g_free (c->action);
  g_free (c);
}

static void
deny (GTask *task, const char *why)
{
  Check *c = g_task_get_task_data (task);

  g_task_return_new_error (task, G_DBUS_ERROR, G_DBUS_ERROR_ACCESS_DENIED,
                           "not authorized for %s: %s", c->action, why);
}

static void
on_checked (GObject *source, GAsyncResult *res, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  g_autoptr (GError) error = NULL;
  g_autoptr (GVariant) reply
      = g_dbus_connection_call_finish (G_DBUS_CONNECTION (source), res, &error);
  gboolean authorized, challenge;

  if (!reply)
    {
      g_autofree char *why = NULL;

      g_dbus_error_strip_remote_error (error);
      why = g_strdup_printf ("polkit cannot be asked (%s)", error->message);
      deny (task, why);
      return;
    }
  g_variant_get (reply, "((bba{ss}))", &authorized, &challenge, NULL);
  if (authorized)
    g_task_return_boolean (task, TRUE);
  else
    deny (task, challenge ? "authentication is required" : "polkit says no");
}

/* A unique name is never given to another connection while the bus runs,
 * and a connection's user never changes: its uid can be remembered, one
 * cache per bus connection (a new bus may hand out the same names). */
static GHashTable *
uid_cache (GDBusConnection *bus)
{
  GHashTable *cache = g_object_get_data (G_OBJECT (bus), UID_CACHE_KEY);

  if (!cache)
    {
      cache = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
      g_object_set_data_full (G_OBJECT (bus), UID_CACHE_KEY, cache,
                              (GDestroyNotify)g_hash_table_unref);
    }
  return cache;
}

static void
check_uid (GTask *task, guint32 uid)
{
  Check *c = g_task_get_task_data (task);
  GVariantBuilder subject, details;

  if (uid == 0)
    {
      g_task_return_boolean (task, TRUE);
      return;
    }
  g_variant_builder_init (&subject, G_VARIANT_TYPE ("a{sv}"));
  g_variant_builder_add (&subject, "{sv}", "name", g_variant_new_string (c->sender));
  g_variant_builder_init (&details, G_VARIANT_TYPE ("a{ss}"));
  g_dbus_connection_call (
      c->bus, "org.freedesktop.PolicyKit1", "/org/freedesktop/PolicyKit1/Authority",
      "org.freedesktop.PolicyKit1.Authority", "CheckAuthorization",
      g_variant_new ("((sa{sv})sa{ss}us)", "system-bus-name", &subject, c->action, &details,
                     c->interactive ? CHECK_ALLOW_INTERACTION : 0, ""),
      G_VARIANT_TYPE ("((bba{ss}))"), G_DBUS_CALL_FLAGS_NONE,
      /* an interactive check waits for a person */
      c->interactive ? G_MAXINT : -1, NULL, on_checked, g_object_ref (task));
}

static void
on_uid (GObject *source, GAsyncResult *res, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  Check *c = g_task_get_task_data (task);
  g_autoptr (GError) error = NULL;
  g_autoptr (GVariant) reply
      = g_dbus_connection_call_finish (G_DBUS_CONNECTION (source), res, &error);
  GHashTable *cache;
  guint32 uid;

  if (!reply)
    {
      deny (task, error->message);
      return;
    }
  g_variant_get (reply, "(u)", &uid);
  cache = uid_cache (c->bus);
  if (g_hash_table_size (cache) >= UID_CACHE_MAX)
    g_hash_table_remove_all (cache);
  g_hash_table_insert (cache, g_strdup (c->sender), GUINT_TO_POINTER (uid + 1));
  check_uid (task, uid);
}

void
sp_authority_check_async (GDBusMethodInvocation *invocation, const char *action,
                          GAsyncReadyCallback callback, gpointer user_data)
{
  GTask *task = g_task_new (NULL, NULL, callback, user_data);
  GDBusMessage *message = g_dbus_method_invocation_get_message (invocation);
  Check *c = g_new0 (Check, 1);
  guint known;

  c->bus = g_object_ref (g_dbus_method_invocation_get_connection (invocation));
  c->sender = g_strdup (g_dbus_method_invocation_get_sender (invocation));
  c->action = g_strdup (action);
  c->interactive
      = (g_dbus_message_get_flags (message) & G_DBUS_MESSAGE_FLAGS_ALLOW_INTERACTIVE_AUTHORIZATION)
        != 0;
  g_task_set_task_data (task, c, (GDestroyNotify)check_free);
  /* stored as uid + 1: NULL is "not known" */
  known = GPOINTER_TO_UINT (g_hash_table_lookup (uid_cache (c->bus), c->sender));
  if (known)
    {
      check_uid (task, known - 1);
      g_object_unref (task);
      return;
    }
  g_dbus_connection_call (c->bus, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                          "org.freedesktop.DBus", "GetConnectionUnixUser",
                          g_variant_new ("(s)", c->sender), G_VARIANT_TYPE ("(u)"),
                          G_DBUS_CALL_FLAGS_NONE, -1, NULL, on_uid, task);
}

gboolean
sp_authority_known_root (GDBusMethodInvocation *invocation)
{
  GHashTable *cache = uid_cache (g_dbus_method_invocation_get_connection (invocation));

  return GPOINTER_TO_UINT (
             g_hash_table_lookup (cache, g_dbus_method_invocation_get_sender (invocation)))
         == 1;
}

gboolean
sp_authority_check_finish (GAsyncResult *result, GError **error)
{
  return g_task_propagate_boolean (G_TASK (result), error);
}
