#include "systemd-job.h"

#define SYSTEMD_NAME    "org.freedesktop.systemd1"
#define SYSTEMD_PATH    "/org/freedesktop/systemd1"
#define SYSTEMD_MANAGER "org.freedesktop.systemd1.Manager"

typedef struct
{
  GDBusConnection *bus;
  char *method;
  char *unit;
  guint job_removed;
  char *path;       /* the job, once the method answered */
  GHashTable *seen; /* JobRemoved of the unit before that: job -> result */
} Job;

/* Once the subscription, which holds the task, is gone. */
static void
job_free (Job *job)
{
  g_object_unref (job->bus);
  g_free (job->method);
  g_free (job->unit);
  g_free (job->path);
  g_hash_table_unref (job->seen);
  g_free (job);
}

static void
finish (GTask *task, const char *result)
{
  Job *job = g_task_get_task_data (task);

  g_dbus_connection_signal_unsubscribe (job->bus, job->job_removed);
  job->job_removed = 0;
  g_task_return_pointer (task, g_strdup (result), g_free);
}

static void
on_job_removed (GDBusConnection *bus, const char *sender, const char *path, const char *iface,
                const char *signal, GVariant *params, gpointer user_data)
{
  GTask *task = user_data;
  Job *job = g_task_get_task_data (task);
  const char *path_, *unit, *result;
  guint32 id;

  g_variant_get (params, "(u&o&s&s)", &id, &path_, &unit, &result);
  if (!g_str_equal (unit, job->unit) || g_task_get_completed (task) || job->job_removed == 0)
    return;
  if (!job->path)
    g_hash_table_replace (job->seen, g_strdup (path_), g_strdup (result));
  else if (g_str_equal (path_, job->path))
    finish (task, result);
}

static void
on_queued (GObject *source, GAsyncResult *res, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  Job *job = g_task_get_task_data (task);
  g_autoptr (GError) error = NULL;
  g_autoptr (GVariant) reply
      = g_dbus_connection_call_finish (G_DBUS_CONNECTION (source), res, &error);
  const char *early;

  if (!reply)
    {
      g_dbus_error_strip_remote_error (error);
      g_dbus_connection_signal_unsubscribe (job->bus, job->job_removed);
      job->job_removed = 0;
      g_task_return_error (task, g_steal_pointer (&error));
      return;
    }
  g_variant_get (reply, "(o)", &job->path);
  early = g_hash_table_lookup (job->seen, job->path);
  if (early)
    finish (task, early);
}

static void
on_subscribed (GObject *source, GAsyncResult *res, gpointer user_data)
{
  GTask *task = user_data;
  Job *job = g_task_get_task_data (task);
  g_autoptr (GVariant) reply
      = g_dbus_connection_call_finish (G_DBUS_CONNECTION (source), res, NULL);

  /* Subscribed already (another plugin) is fine; no systemd shows below. */
  g_dbus_connection_call (job->bus, SYSTEMD_NAME, SYSTEMD_PATH, SYSTEMD_MANAGER, job->method,
                          g_variant_new ("(ss)", job->unit, "replace"), G_VARIANT_TYPE ("(o)"),
                          G_DBUS_CALL_FLAGS_NONE, -1, g_task_get_cancellable (task), on_queued,
                          task);
}

void
sp_systemd_job_async (GDBusConnection *bus, const char *method, const char *unit,
                      GCancellable *cancellable, GAsyncReadyCallback callback, gpointer user_data)
{
  GTask *task = g_task_new (NULL, cancellable, callback, user_data);
  Job *job = g_new0 (Job, 1);

  job->bus = g_object_ref (bus);
  job->method = g_strdup (method);
  job->unit = g_strdup (unit);
  job->seen = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  g_task_set_task_data (task, job, (GDestroyNotify)job_free);
  /* Before the method: its job may end before the reply comes.  The
   * subscription holds the task until it is gone. */
  job->job_removed = g_dbus_connection_signal_subscribe (
      bus, SYSTEMD_NAME, SYSTEMD_MANAGER, "JobRemoved", SYSTEMD_PATH, NULL,
      G_DBUS_SIGNAL_FLAGS_NONE, on_job_removed, g_object_ref (task), g_object_unref);
  g_dbus_connection_call (bus, SYSTEMD_NAME, SYSTEMD_PATH, SYSTEMD_MANAGER, "Subscribe", NULL, NULL,
                          G_DBUS_CALL_FLAGS_NONE, -1, cancellable, on_subscribed, task);
}

char *
sp_systemd_job_finish (GAsyncResult *result, GError **error)
{
  return g_task_propagate_pointer (G_TASK (result), error);
}

static void
on_called (GObject *source, GAsyncResult *res, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  GError *error = NULL;
  g_autoptr (GVariant) reply
      = g_dbus_connection_call_finish (G_DBUS_CONNECTION (source), res, &error);

  if (!reply)
    {
      g_dbus_error_strip_remote_error (error);
      g_task_return_error (task, error);
    }
  else
    g_task_return_boolean (task, TRUE);
}

void
sp_systemd_call_async (GDBusConnection *bus, const char *method, GCancellable *cancellable,
                       GAsyncReadyCallback callback, gpointer user_data)
{
  g_dbus_connection_call (bus, SYSTEMD_NAME, SYSTEMD_PATH, SYSTEMD_MANAGER, method, NULL, NULL,
                          G_DBUS_CALL_FLAGS_NONE, -1, cancellable, on_called,
                          g_task_new (NULL, cancellable, callback, user_data));
}

gboolean
sp_systemd_call_finish (GAsyncResult *result, GError **error)
{
  return g_task_propagate_boolean (G_TASK (result), error);
}
