#include "leader-target.h"

#define SYSTEMD_NAME    "org.freedesktop.systemd1"
#define SYSTEMD_PATH    "/org/freedesktop/systemd1"
#define SYSTEMD_MANAGER "org.freedesktop.systemd1.Manager"

struct _SpLeaderTarget
{
  gint refs; /* one for the owner, one per call in flight */
  SpNode *node;
  GDBusConnection *bus;
  char *unit;
  GFile *marker;
  GCancellable *cancellable;
  gulong role_handler;
  gulong lease_handler;
  guint job_removed;
  gboolean subscribed;

  gboolean released;        /* a planned handover: the target stays stopped */
  gboolean release_pending; /* the node waits for it to be stopped */
  gboolean active;          /* the last job that ended left the target started */
  gboolean busy;            /* a marker write or a job is in flight */
  gboolean starting;        /* what the job in flight does */
  char *job;                /* its object path, once systemd answered */
  GHashTable *ended;        /* jobs whose JobRemoved came before StartUnit's reply */
  char *last_error;         /* logged once until something succeeds */
};

static void reconcile (SpLeaderTarget *t);

static SpLeaderTarget *
target_ref (SpLeaderTarget *t)
{
  t->refs++;
  return t;
}

static void
target_unref (SpLeaderTarget *t)
{
  if (--t->refs > 0)
    return;
  g_object_unref (t->cancellable);
  g_object_unref (t->marker);
  g_object_unref (t->bus);
  g_object_unref (t->node);
  g_hash_table_unref (t->ended);
  g_free (t->job);
  g_free (t->unit);
  g_free (t->last_error);
  g_free (t);
}

/* Ends a callback of a call made with target_ref(): FALSE when the owner
 * freed the target meanwhile. */
static gboolean
still_wanted (SpLeaderTarget *t)
{
  if (!g_cancellable_is_cancelled (t->cancellable))
    return TRUE;
  target_unref (t);
  return FALSE;
}

static gboolean
wanted (SpLeaderTarget *t)
{
  return !t->released && g_str_equal (sp_node_get_role (t->node), "leader")
         && sp_node_get_lease_valid (t->node);
}

/* A planned handover goes on once no job runs: the target is stopped, or
 * stopping it failed (logged) and waiting longer would not help. */
static void
check_released (SpLeaderTarget *t)
{
  if (!t->release_pending || t->busy || (t->active && t->subscribed && !t->last_error))
    return;
  t->release_pending = FALSE;
  sp_node_handover_released (t->node);
}

static void
job_failed (SpLeaderTarget *t, const char *what, const char *why)
{
  g_autofree char *text = g_strdup_printf ("%s %s: %s", what, t->unit, why);

  /* A missing systemd says the same at every role change: once is enough. */
  if (g_strcmp0 (text, t->last_error) != 0)
    g_warning ("%s", text);
  g_free (t->last_error);
  t->last_error = g_steal_pointer (&text);
  t->busy = FALSE;
  check_released (t);
}

static void
job_done (SpLeaderTarget *t, const char *result)
{
  g_clear_pointer (&t->job, g_free);
  t->busy = FALSE;
  if (!g_str_equal (result, "done"))
    {
      job_failed (t, t->starting ? "starting" : "stopping", result);
      return;
    }
  g_clear_pointer (&t->last_error, g_free);
  t->active = t->starting;
  g_message ("%s %s", t->unit,
             t->active ? "started: this node runs the leader-only units" : "stopped");
  reconcile (t);
  check_released (t);
}

static void
on_job_removed (GDBusConnection *bus, const char *sender, const char *path, const char *iface,
                const char *signal, GVariant *params, gpointer user_data)
{
  SpLeaderTarget *t = user_data;
  const char *job, *unit, *result;
  guint32 id;

  g_variant_get (params, "(u&o&s&s)", &id, &job, &unit, &result);
  if (!g_str_equal (unit, t->unit) || !t->busy)
    return;
  if (!t->job)
    {
      g_hash_table_replace (t->ended, g_strdup (job), g_strdup (result));
      return;
    }
  if (g_str_equal (job, t->job))
    job_done (t, result);
}

static void
on_unit_job (GObject *source, GAsyncResult *res, gpointer user_data)
{
  SpLeaderTarget *t = user_data;
  g_autoptr (GError) error = NULL;
  g_autoptr (GVariant) reply
      = g_dbus_connection_call_finish (G_DBUS_CONNECTION (source), res, &error);
  const char *result;

  if (!still_wanted (t))
    return;
  if (!reply)
    {
      g_dbus_error_strip_remote_error (error);
      job_failed (t, t->starting ? "cannot start" : "cannot stop", error->message);
    }
  else
    {
      g_variant_get (reply, "(o)", &t->job);
      result = g_hash_table_lookup (t->ended, t->job);
      if (result)
        {
          g_autofree char *copy = g_strdup (result);

          g_hash_table_remove_all (t->ended);
          job_done (t, copy);
        }
    }
  target_unref (t);
}

static void
call_job (SpLeaderTarget *t)
{
  g_hash_table_remove_all (t->ended);
  g_dbus_connection_call (t->bus, SYSTEMD_NAME, SYSTEMD_PATH, SYSTEMD_MANAGER,
                          t->starting ? "StartUnit" : "StopUnit",
                          g_variant_new ("(ss)", t->unit, "replace"), G_VARIANT_TYPE ("(o)"),
                          G_DBUS_CALL_FLAGS_NONE, -1, t->cancellable, on_unit_job, target_ref (t));
}

static void
on_marker_written (GObject *source, GAsyncResult *res, gpointer user_data)
{
  SpLeaderTarget *t = user_data;
  g_autoptr (GError) error = NULL;

  if (!g_file_replace_contents_finish (G_FILE (source), res, NULL, &error))
    {
      if (still_wanted (t))
        {
          job_failed (t, "cannot write the marker for", error->message);
          target_unref (t);
        }
      return;
    }
  if (still_wanted (t))
    {
      call_job (t);
      target_unref (t);
    }
}

static void
on_marker_deleted (GObject *source, GAsyncResult *res, gpointer user_data)
{
  SpLeaderTarget *t = user_data;
  g_autoptr (GError) error = NULL;

  if (!g_file_delete_finish (G_FILE (source), res, &error)
      && !g_error_matches (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND)
      && !g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    /* The condition is only checked at start: stopping goes on. */
    g_warning ("cannot remove %s: %s", g_file_peek_path (t->marker), error->message);
  if (still_wanted (t))
    {
      call_job (t);
      target_unref (t);
    }
}

static void
reconcile (SpLeaderTarget *t)
{
  static const char marker_text[] = "leader\n";

  if (t->busy || !t->subscribed || wanted (t) == t->active)
    return;
  t->busy = TRUE;
  t->starting = !t->active;
  if (t->starting)
    g_file_replace_contents_async (t->marker, marker_text, sizeof marker_text - 1, NULL, FALSE,
                                   G_FILE_CREATE_NONE, t->cancellable, on_marker_written,
                                   target_ref (t));
  else
    g_file_delete_async (t->marker, G_PRIORITY_DEFAULT, t->cancellable, on_marker_deleted,
                         target_ref (t));
}

static void
on_state (SpNode *node, GParamSpec *pspec, gpointer user_data)
{
  reconcile (user_data);
}

static void
on_release (SpNode *node, gpointer user_data)
{
  SpLeaderTarget *t = user_data;

  t->released = TRUE;
  t->release_pending = TRUE;
  g_clear_pointer (&t->last_error, g_free);
  reconcile (t);
  check_released (t);
}

static void
on_resume (SpNode *node, gpointer user_data)
{
  SpLeaderTarget *t = user_data;

  t->released = FALSE;
  t->release_pending = FALSE;
  reconcile (t);
}

static void
on_subscribed (GObject *source, GAsyncResult *res, gpointer user_data)
{
  SpLeaderTarget *t = user_data;
  g_autoptr (GError) error = NULL;
  g_autoptr (GVariant) reply
      = g_dbus_connection_call_finish (G_DBUS_CONNECTION (source), res, &error);

  if (!still_wanted (t))
    return;
  if (!reply)
    {
      g_dbus_error_strip_remote_error (error);
      g_warning ("systemd is not reachable on the system bus, %s will not follow leadership: %s",
                 t->unit, error->message);
    }
  else
    {
      t->subscribed = TRUE;
      reconcile (t);
    }
  target_unref (t);
}

SpLeaderTarget *
sp_leader_target_new (SpNode *node, GDBusConnection *bus, const char *unit, const char *marker)
{
  SpLeaderTarget *t = g_new0 (SpLeaderTarget, 1);

  t->refs = 1;
  t->node = g_object_ref (node);
  t->bus = g_object_ref (bus);
  t->unit = g_strdup (unit);
  t->marker = g_file_new_for_path (marker);
  t->cancellable = g_cancellable_new ();
  t->ended = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  t->job_removed = g_dbus_connection_signal_subscribe (
      bus, SYSTEMD_NAME, SYSTEMD_MANAGER, "JobRemoved", SYSTEMD_PATH, NULL,
      G_DBUS_SIGNAL_FLAGS_NONE, on_job_removed, t, NULL);
  t->role_handler = g_signal_connect (node, "notify::role", G_CALLBACK (on_state), t);
  t->lease_handler = g_signal_connect (node, "notify::lease-valid", G_CALLBACK (on_state), t);
  sp_node_set_handover (node, on_release, on_resume, t);
  g_dbus_connection_call (bus, SYSTEMD_NAME, SYSTEMD_PATH, SYSTEMD_MANAGER, "Subscribe", NULL, NULL,
                          G_DBUS_CALL_FLAGS_NONE, -1, t->cancellable, on_subscribed,
                          target_ref (t));
  return t;
}

void
sp_leader_target_free (SpLeaderTarget *t)
{
  if (!t)
    return;
  g_cancellable_cancel (t->cancellable);
  sp_node_set_handover (t->node, NULL, NULL, NULL);
  if (t->release_pending)
    sp_node_handover_released (t->node);
  g_clear_signal_handler (&t->role_handler, t->node);
  g_clear_signal_handler (&t->lease_handler, t->node);
  g_dbus_connection_signal_unsubscribe (t->bus, t->job_removed);
  target_unref (t);
}
