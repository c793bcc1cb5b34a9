#include "leader-target.h"

#include "systemd-job.h"

#define LEADER_TARGET "sparrow-leader.target"

struct _SpLeaderTargetPlugin
{
  SpPlugin parent_instance;

  SpNode *node;
  GDBusConnection *bus;
  char *unit;
  GFile *marker;
  GCancellable *cancellable;
  gboolean subscribed;
  guint units_stop_ms; /* what leader-only units may take to stop */
  gboolean holder;     /* the node holds, and that long has passed */
  guint grace;         /* the timeout until then */

  gboolean active;    /* the last step that ended left the target started */
  guint pending;      /* pieces of the step in flight, each a marker op and/or a job */
  gboolean starting;  /* what the step in flight does */
  gboolean preempted; /* it was a start, turned into a stop when the lease ended */
  gboolean jobs[2];   /* [TRUE] the start, [FALSE] the stop: asked for, not ended */
  char *last_error;   /* logged once until something succeeds */
};

typedef struct _SpLeaderTargetPlugin SpLeaderTarget;

G_DEFINE_FINAL_TYPE (SpLeaderTargetPlugin, sp_leader_target_plugin, SP_TYPE_PLUGIN)

static void reconcile (SpLeaderTarget *t);

static SpLeaderTarget *
target_ref (SpLeaderTarget *t)
{
  return g_object_ref (t);
}

static void
target_unref (SpLeaderTarget *t)
{
  g_object_unref (t);
}

/* Ends a callback of a call made with target_ref(): FALSE when the plugin
 * stopped meanwhile. */
static gboolean
still_wanted (SpLeaderTarget *t)
{
  if (!g_cancellable_is_cancelled (t->cancellable))
    return TRUE;
  target_unref (t);
  return FALSE;
}

static gboolean
leading (SpLeaderTarget *t)
{
  return t->holder;
}

static gboolean
wanted (SpLeaderTarget *t)
{
  return !sp_plugin_get_released (SP_PLUGIN (t)) && leading (t);
}

/* A planned handover is answered once no job runs: the target is stopped,
 * or stopping it failed (logged) and waiting longer would not help.  Then
 * the units may still run here, and the new leader, elected by transfer,
 * would start them at once: the error gives the handover up. */
static void
check_released (SpLeaderTarget *t)
{
  if (!sp_plugin_get_released (SP_PLUGIN (t)) || t->pending || (t->active && !t->last_error))
    return;
  sp_plugin_released (SP_PLUGIN (t), t->active ? t->last_error : NULL);
}

static void
report_failure (SpLeaderTarget *t, const char *what, const char *why)
{
  g_autofree char *text = g_strdup_printf ("%s %s: %s", what, t->unit, why);

  /* Logged once until it changes: a missing systemd says the same at
   * every role change. */
  sp_plugin_report (SP_PLUGIN (t), SP_PLUGIN_FAILED, text);
  g_free (t->last_error);
  t->last_error = g_steal_pointer (&text);
}

/* The step ends with its last piece.  After a failure the next try waits
 * for the next role or lease change. */
static void
piece_done (SpLeaderTarget *t)
{
  if (--t->pending > 0)
    return;
  if (!t->last_error)
    reconcile (t);
  check_released (t);
}

static void
job_ended (SpLeaderTarget *t, gboolean start, const char *result)
{
  t->jobs[start] = FALSE;
  if (start != t->starting)
    {
      /* A preempted start: "canceled" is the stop's doing, and the stop's
       * own end says what the target is. */
      if (!g_str_equal (result, "done") && !g_str_equal (result, "canceled"))
        report_failure (t, "starting", result);
    }
  else if (!g_str_equal (result, "done"))
    report_failure (t, start ? "starting" : "stopping", result);
  else
    {
      g_clear_pointer (&t->last_error, g_free);
      t->active = start;
      sp_plugin_report (SP_PLUGIN (t), start ? SP_PLUGIN_ACTIVE : SP_PLUGIN_INACTIVE, NULL);
      sp_plugin_details_changed (SP_PLUGIN (t));
      g_message ("%s %s", t->unit,
                 start ? "started: this node runs the leader-only units" : "stopped");
    }
  piece_done (t);
}

static void
job_answered (SpLeaderTarget *t, gboolean start, GAsyncResult *res)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *result = sp_systemd_job_finish (res, &error);

  if (!still_wanted (t))
    return;
  if (!result)
    {
      t->jobs[start] = FALSE;
      report_failure (t, start ? "cannot start" : "cannot stop", error->message);
      piece_done (t);
    }
  else
    job_ended (t, start, result);
  target_unref (t);
}

static void
on_start_job (GObject *source, GAsyncResult *res, gpointer user_data)
{
  job_answered (user_data, TRUE, res);
}

static void
on_stop_job (GObject *source, GAsyncResult *res, gpointer user_data)
{
  job_answered (user_data, FALSE, res);
}

static void
call_job (SpLeaderTarget *t, gboolean start)
{
  t->jobs[start] = TRUE;
  sp_systemd_job_async (t->bus, start ? "StartUnit" : "StopUnit", t->unit, t->cancellable,
                        start ? on_start_job : on_stop_job, target_ref (t));
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
  if (!still_wanted (t))
    return;
  if (t->preempted)
    piece_done (t); /* its stop was asked for already */
  else
    call_job (t, FALSE);
  target_unref (t);
}

static void
delete_marker (SpLeaderTarget *t)
{
  g_file_delete_async (t->marker, G_PRIORITY_DEFAULT, t->cancellable, on_marker_deleted,
                       target_ref (t));
}

static void
on_marker_written (GObject *source, GAsyncResult *res, gpointer user_data)
{
  SpLeaderTarget *t = user_data;
  g_autoptr (GError) error = NULL;
  gboolean written = g_file_replace_contents_finish (G_FILE (source), res, NULL, &error);

  if (!still_wanted (t))
    return;
  if (t->preempted)
    /* The lease ended during the write: no start, and the marker goes now
     * that the write cannot land after the delete. */
    delete_marker (t);
  else if (written)
    call_job (t, TRUE);
  else
    {
      report_failure (t, "cannot write the marker for", error->message);
      piece_done (t);
    }
  target_unref (t);
}

/* The lease ended while the target starts.  Its start job lasts as long as
 * the units ordered before it take to start, and another node may lead
 * meanwhile: stop now, alongside (StopUnit "replace" cancels that job). */
static void
preempt (SpLeaderTarget *t)
{
  /* Before StartUnit, the marker write is in flight; its callback deletes. */
  gboolean writing = !t->jobs[TRUE];

  t->preempted = TRUE;
  t->starting = FALSE;
  t->active = TRUE; /* until the stop is done: the start may have got through */
  t->pending++;
  call_job (t, FALSE);
  if (!writing)
    {
      t->pending++;
      delete_marker (t);
    }
}

static void
reconcile (SpLeaderTarget *t)
{
  static const char marker_text[] = "leader\n";

  if (t->pending && t->starting && !leading (t))
    preempt (t);
  if (t->pending || !t->subscribed || wanted (t) == t->active)
    return;
  t->pending = 1;
  t->starting = !t->active;
  t->preempted = FALSE;
  if (t->starting)
    g_file_replace_contents_async (t->marker, marker_text, sizeof marker_text - 1, NULL, FALSE,
                                   G_FILE_CREATE_NONE, t->cancellable, on_marker_written,
                                   target_ref (t));
  else
    delete_marker (t);
}

static gboolean
on_grace_over (gpointer user_data)
{
  SpLeaderTarget *t = user_data;

  t->grace = 0;
  t->holder = TRUE;
  reconcile (t);
  return G_SOURCE_REMOVE;
}

/* The previous holder's units may still be stopping: the target starts
 * once they had the time to (units-stop-ms past the node's own fence). */
static void
hold (SpPlugin *plugin, gboolean holder)
{
  SpLeaderTarget *t = SP_LEADER_TARGET_PLUGIN (plugin);
  guint left = holder ? sp_node_fence_left_ms (t->node, t->units_stop_ms) : 0;

  g_clear_handle_id (&t->grace, g_source_remove);
  t->holder = holder && left == 0;
  if (holder && left > 0)
    t->grace = g_timeout_add (left, on_grace_over, t);
  reconcile (t);
}

/* Started, being started, or not yet confirmed stopped by systemd. */
static gboolean
holding (SpPlugin *plugin)
{
  SpLeaderTarget *t = SP_LEADER_TARGET_PLUGIN (plugin);

  return t->active || t->pending > 0;
}

static void
release (SpPlugin *plugin)
{
  SpLeaderTarget *t = SP_LEADER_TARGET_PLUGIN (plugin);

  g_clear_pointer (&t->last_error, g_free);
  reconcile (t);
  check_released (t);
}

static void
resume (SpPlugin *plugin)
{
  reconcile (SP_LEADER_TARGET_PLUGIN (plugin));
}

static void
on_subscribed (GObject *source, GAsyncResult *res, gpointer user_data)
{
  SpLeaderTarget *t = user_data;
  g_autoptr (GError) error = NULL;
  gboolean subscribed = sp_systemd_call_finish (res, &error);

  if (!still_wanted (t))
    return;
  if (!subscribed)
    {
      g_autofree char *text
          = g_strdup_printf ("systemd is not reachable on the system bus, %s will not follow "
                             "leadership: %s",
                             t->unit, error->message);

      sp_plugin_report (SP_PLUGIN (t), SP_PLUGIN_FAILED, text);
    }
  else
    {
      t->subscribed = TRUE;
      reconcile (t);
    }
  target_unref (t);
}

/* Runs under systemd only: the target and its marker are systemd's. */
static gboolean
probe (SpPlugin *plugin, SpConfig *config, GPtrArray *warnings, GError **error)
{
  SpLeaderTarget *t = SP_LEADER_TARGET_PLUGIN (plugin);
  const char *runtime = g_getenv ("RUNTIME_DIRECTORY");
  g_autofree char *marker = NULL;

  if (!g_getenv ("INVOCATION_ID"))
    return FALSE;
  /* The marker lives in the runtime directory systemd removes at every
   * stop. */
  marker = g_build_filename (runtime ? runtime : "/run/sparrow", "leader", NULL);
  t->marker = g_file_new_for_path (marker);
  t->units_stop_ms = config->fence ? config->units_stop_ms : 0;
  return TRUE;
}

static void
start (SpPlugin *plugin)
{
  SpLeaderTarget *t = SP_LEADER_TARGET_PLUGIN (plugin);

  t->node = sp_plugin_get_node (plugin);
  t->bus = sp_plugin_get_bus (plugin);
  sp_systemd_call_async (t->bus, "Subscribe", t->cancellable, on_subscribed, target_ref (t));
}

/* What systemd does with the target when the service stops (BindsTo=) is
 * enough: only stop following. */
static void
stop (SpPlugin *plugin)
{
  SpLeaderTarget *t = SP_LEADER_TARGET_PLUGIN (plugin);

  g_cancellable_cancel (t->cancellable);
  g_clear_handle_id (&t->grace, g_source_remove);
  sp_plugin_released (plugin, NULL);
}

static GVariant *
details (SpPlugin *plugin)
{
  SpLeaderTarget *t = SP_LEADER_TARGET_PLUGIN (plugin);
  GVariantBuilder b;

  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add (&b, "{sv}", "unit", g_variant_new_string (t->unit));
  g_variant_builder_add (&b, "{sv}", "active", g_variant_new_boolean (t->active));
  g_variant_builder_add (&b, "{sv}", "units-stop-ms", g_variant_new_uint32 (t->units_stop_ms));
  return g_variant_builder_end (&b);
}

static void
sp_leader_target_plugin_finalize (GObject *object)
{
  SpLeaderTarget *t = SP_LEADER_TARGET_PLUGIN (object);

  g_object_unref (t->cancellable);
  g_clear_object (&t->marker);
  g_free (t->unit);
  g_free (t->last_error);
  G_OBJECT_CLASS (sp_leader_target_plugin_parent_class)->finalize (object);
}

static void
sp_leader_target_plugin_class_init (SpLeaderTargetPluginClass *klass)
{
  SpPluginClass *plugin_class = SP_PLUGIN_CLASS (klass);

  G_OBJECT_CLASS (klass)->finalize = sp_leader_target_plugin_finalize;
  plugin_class->probe = probe;
  plugin_class->start = start;
  plugin_class->hold = hold;
  plugin_class->release = release;
  plugin_class->resume = resume;
  plugin_class->stop = stop;
  plugin_class->details = details;
  plugin_class->holding = holding;
}

static void
sp_leader_target_plugin_init (SpLeaderTarget *t)
{
  t->unit = g_strdup (LEADER_TARGET);
  t->cancellable = g_cancellable_new ();
}
