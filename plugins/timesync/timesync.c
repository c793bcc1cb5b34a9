#include "timesync.h"

#include <string.h>

#include "systemd-job.h"
#include "timesync-config.h"

#define RETRY_S      10
#define TOOL_TIMEOUT 5 /* s: chronyc waits up to 1 s per try itself */
#define FAST_POLL_S  2
#define FAST_POLLS   10
#define SLOW_POLL_S  30
/* What the leader's upstream servers may take to be selected (iburst). */
#define UPSTREAM_GRACE_US (30 * G_USEC_PER_SEC)

struct _SpTimesyncPlugin
{
  SpPlugin parent_instance;

  SpTimesyncConfig *config;
  SpNode *node;
  GDBusConnection *bus;
  GCancellable *cancellable;
  gulong leader_handler;
  gulong address_handler;

  gboolean ready; /* chrony's drop-in is in place and the unit was started */
  gboolean busy;  /* a step (set-up or applying the sources) is in flight */
  char *wanted;   /* the sources file as it should be; NULL until a leader is known */
  char *applying; /* what the step in flight writes */
  char *applied;  /* what chronyd last reloaded */
  char *leader;   /* the source this node follows, "" when it leads */
  gint64 changed_at;
  guint retry;
  guint poll;
  guint fast_polls; /* quick refreshes left after a change */
  gboolean polling;

  char *source; /* what chronyd selected: "" none */
  guint stratum;
  double offset; /* s */
  gboolean synced;
};

typedef struct _SpTimesyncPlugin SpTimesync;

/* What differs between chronyd and ntpd. */
typedef struct
{
  const char *name;
  const char *unit;
  const char *fixed_path; /* what never changes with leadership (chrony only) */
  const char *role_path;  /* what does */
  const char *tool;       /* asks the daemon for its status */
  const char *const *status_args;
  gboolean (*parse) (const char *output, char **source, guint *stratum, double *offset);
} Backend;

static const char *const chronyc_status[] = { "-c", "sources", NULL };
static const char *const ntpq_status[] = { "-p", NULL };

static const Backend backends[] = {
  [SP_TIMESYNC_CHRONY]
  = { "chrony", SP_TIMESYNC_CHRONY_UNIT, SP_TIMESYNC_CHRONY_CONF, SP_TIMESYNC_CHRONY_SOURCES,
      "chronyc", chronyc_status, sp_timesync_chrony_parse_sources },
  [SP_TIMESYNC_NTPD] = { "ntpd", SP_TIMESYNC_NTPD_UNIT, NULL, SP_TIMESYNC_NTPD_CONF, "ntpq",
                         ntpq_status, sp_timesync_ntpq_parse_peers },
};

static const Backend *
backend (SpTimesync *t)
{
  return &backends[t->config->backend];
}

G_DEFINE_FINAL_TYPE (SpTimesyncPlugin, sp_timesync_plugin, SP_TYPE_PLUGIN)

static void setup (SpTimesync *t);
static void reconcile (SpTimesync *t);
static void schedule_poll (SpTimesync *t, guint seconds);

/* Ends a callback of a call that holds a reference: FALSE when the plugin
 * stopped meanwhile. */
static gboolean
still_wanted (SpTimesync *t)
{
  if (!g_cancellable_is_cancelled (t->cancellable))
    return TRUE;
  g_object_unref (t);
  return FALSE;
}

static gboolean
on_retry (gpointer user_data)
{
  SpTimesync *t = user_data;

  t->retry = 0;
  setup (t);
  return G_SOURCE_REMOVE;
}

/* The step failed: said on the bus and in the journal, tried again from
 * the start (the unit may have been stopped or reinstalled meanwhile). */
static void fail (SpTimesync *t, const char *format, ...) G_GNUC_PRINTF (2, 3);

static void
fail (SpTimesync *t, const char *format, ...)
{
  va_list args;
  g_autofree char *text = NULL;

  va_start (args, format);
  text = g_strdup_vprintf (format, args);
  va_end (args);
  sp_plugin_report (SP_PLUGIN (t), SP_PLUGIN_FAILED, text);
  t->busy = FALSE;
  t->ready = FALSE;
  g_clear_pointer (&t->applying, g_free);
  if (!t->retry)
    t->retry = g_timeout_add_seconds (RETRY_S, on_retry, t);
}

/* ---- chronyc and ntpq, as subprocesses never waited for --------------- */

typedef void (*ToolDone) (SpTimesync *t, gboolean ok, const char *out);

typedef struct
{
  SpTimesync *t;
  GSubprocess *proc;
  guint timeout;
  ToolDone done;
} Tool;

static gboolean
on_tool_timeout (gpointer user_data)
{
  Tool *c = user_data;

  c->timeout = 0;
  g_subprocess_force_exit (c->proc);
  return G_SOURCE_REMOVE;
}

static void
on_tool_done (GObject *source, GAsyncResult *res, gpointer user_data)
{
  Tool *c = user_data;
  SpTimesync *t = c->t;
  ToolDone done = c->done;
  g_autoptr (GError) error = NULL;
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;
  gboolean ran = g_subprocess_communicate_utf8_finish (c->proc, res, &out, &err, &error);
  gboolean ok
      = ran && g_subprocess_get_if_exited (c->proc) && g_subprocess_get_exit_status (c->proc) == 0;
  g_autofree char *text = NULL;

  if (c->timeout)
    g_source_remove (c->timeout);
  else
    ok = FALSE;
  if (!ran)
    text = g_strdup (error->message);
  else if (!c->timeout)
    text = g_strdup_printf ("no answer within %d s", TOOL_TIMEOUT);
  else
    text = g_strstrip (g_strdup (ok ? out : err && *err ? err : out));
  g_object_unref (c->proc);
  g_free (c);
  if (!still_wanted (t))
    return;
  done (t, ok, text);
  g_object_unref (t);
}

static void
tool (SpTimesync *t, const char *program, const char *const *args, ToolDone done)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) argv = g_ptr_array_new ();
  Tool *c;
  GSubprocess *proc;

  /* -n: no DNS lookups. */
  g_ptr_array_add (argv, (char *)program);
  g_ptr_array_add (argv, (char *)"-n");
  for (guint i = 0; args[i]; i++)
    g_ptr_array_add (argv, (char *)args[i]);
  g_ptr_array_add (argv, NULL);
  proc
      = g_subprocess_newv ((const char *const *)argv->pdata,
                           G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_PIPE, &error);
  if (!proc)
    {
      done (t, FALSE, error->message);
      return;
    }
  c = g_new0 (Tool, 1);
  c->t = g_object_ref (t);
  c->proc = proc;
  c->done = done;
  c->timeout = g_timeout_add_seconds (TOOL_TIMEOUT, on_tool_timeout, c);
  g_subprocess_communicate_utf8_async (proc, NULL, t->cancellable, on_tool_done, c);
}

/* ---- files chronyd reads --------------------------------------------- */

static void
on_mode_set (GObject *source, GAsyncResult *res, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  GError *error = NULL;

  if (!g_file_set_attributes_finish (G_FILE (source), res, NULL, &error))
    g_task_return_error (task, error);
  else
    g_task_return_boolean (task, TRUE);
}

static void
on_replaced (GObject *source, GAsyncResult *res, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  g_autoptr (GFileInfo) info = g_file_info_new ();
  GError *error = NULL;

  if (!g_file_replace_contents_finish (G_FILE (source), res, NULL, &error))
    {
      g_task_return_error (task, error);
      return;
    }
  /* chronyd reads its sources after it dropped root: readable by all, as
   * the rest of /etc/chrony (sparrowd's umask is 0077). */
  g_file_info_set_attribute_uint32 (info, G_FILE_ATTRIBUTE_UNIX_MODE, 0644);
  g_file_set_attributes_async (G_FILE (source), info, G_FILE_QUERY_INFO_NOFOLLOW_SYMLINKS,
                               G_PRIORITY_DEFAULT, g_task_get_cancellable (task), on_mode_set,
                               g_steal_pointer (&task));
}

typedef struct
{
  GFile *file;
  GBytes *bytes;
} Write;

static void
write_free (Write *w)
{
  g_object_unref (w->file);
  g_bytes_unref (w->bytes);
  g_free (w);
}

static void
on_dir_made (GObject *source, GAsyncResult *res, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  Write *w = g_task_get_task_data (task);
  GError *error = NULL;

  if (!g_file_make_directory_finish (G_FILE (source), res, &error)
      && !g_error_matches (error, G_IO_ERROR, G_IO_ERROR_EXISTS))
    {
      g_task_return_error (task, error);
      return;
    }
  g_clear_error (&error);
  /* REPLACE_DESTINATION: a new file renamed over the path, never written
   * through whatever is there (a symlink planted there is replaced). */
  g_file_replace_contents_bytes_async (
      w->file, w->bytes, NULL, FALSE, G_FILE_CREATE_REPLACE_DESTINATION,
      g_task_get_cancellable (task), on_replaced, g_steal_pointer (&task));
}

static void
write_public_async (const char *path, const char *text, GCancellable *cancellable,
                    GAsyncReadyCallback callback, gpointer user_data)
{
  Write *w = g_new0 (Write, 1);
  g_autoptr (GFile) dir = NULL;
  GTask *task = g_task_new (NULL, cancellable, callback, user_data);

  w->file = g_file_new_for_path (path);
  w->bytes = g_bytes_new (text, strlen (text));
  dir = g_file_get_parent (w->file);
  g_task_set_task_data (task, w, (GDestroyNotify)write_free);
  g_file_make_directory_async (dir, G_PRIORITY_DEFAULT, cancellable, on_dir_made, task);
}

static gboolean
write_public_finish (GAsyncResult *res, GError **error)
{
  return g_task_propagate_boolean (G_TASK (res), error);
}

/* What an admin does when sparrowd may not write the time service's files. */
static const char *
write_hint (const GError *error)
{
  return g_error_matches (error, G_IO_ERROR, G_IO_ERROR_READ_ONLY)
                 || g_error_matches (error, G_IO_ERROR, G_IO_ERROR_PERMISSION_DENIED)
             ? " (enable sparrow.service's timesync drop-in: see sparrow.conf(5), [timesync])"
             : "";
}

/* ---- status ------------------------------------------------------------- */

static gboolean
leading (SpTimesync *t)
{
  return t->leader && !*t->leader;
}

static void
chronyc (SpTimesync *t, const char *const *args, ToolDone done)
{
  tool (t, "chronyc", args, done);
}

static void
on_sources (SpTimesync *t, gboolean ok, const char *out)
{
  g_autofree char *source = NULL;
  guint stratum = 0;
  double offset = 0;
  gboolean synced = ok && backend (t)->parse (out, &source, &stratum, &offset);
  gboolean upstream = t->config->upstream[0] != NULL;

  t->polling = FALSE;
  if (!source)
    source = g_strdup ("");
  if (synced != t->synced || stratum != t->stratum || offset != t->offset
      || g_strcmp0 (source, t->source) != 0)
    {
      g_free (t->source);
      t->source = g_steal_pointer (&source);
      t->stratum = stratum;
      t->offset = offset;
      t->synced = synced;
      sp_plugin_details_changed (SP_PLUGIN (t));
    }
  if (!ok || t->busy || !t->ready)
    return;
  /* The leader's upstream servers had their iburst: say when none made it. */
  if (leading (t) && upstream && !synced
      && g_get_monotonic_time () - t->changed_at > UPSTREAM_GRACE_US)
    {
      g_autofree char *list = g_strjoinv (", ", t->config->upstream);
      g_autofree char *text = g_strdup_printf (
          "no upstream server (%s) is reachable: the cluster is served this node's own clock "
          "at stratum %u",
          list, t->config->stratum);

      sp_plugin_report (SP_PLUGIN (t), SP_PLUGIN_FAILED, text);
    }
  else
    sp_plugin_report (SP_PLUGIN (t), SP_PLUGIN_ACTIVE, NULL);
}

static gboolean
on_poll (gpointer user_data)
{
  SpTimesync *t = user_data;

  t->poll = 0;
  if (t->fast_polls > 0)
    t->fast_polls--;
  schedule_poll (t, t->fast_polls ? FAST_POLL_S : SLOW_POLL_S);
  if (!t->polling)
    {
      t->polling = TRUE;
      tool (t, backend (t)->tool, backend (t)->status_args, on_sources);
    }
  return G_SOURCE_REMOVE;
}

static void
schedule_poll (SpTimesync *t, guint seconds)
{
  g_clear_handle_id (&t->poll, g_source_remove);
  t->poll = g_timeout_add_seconds (seconds, on_poll, t);
}

/* ---- the sources: what changes with leadership ------------------------ */

static void
applied (SpTimesync *t)
{
  g_free (t->applied);
  t->applied = g_steal_pointer (&t->applying);
  t->busy = FALSE;
  t->changed_at = g_get_monotonic_time ();
  sp_plugin_report (SP_PLUGIN (t), SP_PLUGIN_ACTIVE, NULL);
  t->fast_polls = FAST_POLLS;
  schedule_poll (t, FAST_POLL_S);
  reconcile (t);
}

static void
on_local_set (SpTimesync *t, gboolean ok, const char *out)
{
  if (!ok)
    fail (t, "chronyc local: %s", out);
  else
    applied (t);
}

/* The local reference follows the role: the leader serves, followers do
 * not (chronyd changes it at run time too). */
static void
on_reloaded (SpTimesync *t, gboolean ok, const char *out)
{
  g_auto (GStrv) args = NULL;

  if (!ok)
    {
      fail (t, "chronyc reload sources: %s", out);
      return;
    }
  args = sp_timesync_chrony_local (t->config, leading (t));
  chronyc (t, (const char *const *)args, on_local_set);
}

/* A job on the time service's unit ended: FALSE, reported, unless done. */
static gboolean
job_done (SpTimesync *t, GAsyncResult *res, const char *verb)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *result = sp_systemd_job_finish (res, &error);

  if (!result)
    fail (t, "cannot %s %s: %s", verb, backend (t)->unit, error->message);
  else if (!g_str_equal (result, "done"))
    fail (t, "%s %s: %s (see its journal)", verb, backend (t)->unit, result);
  return result && g_str_equal (result, "done");
}

static void
on_ntpd_restarted (GObject *source, GAsyncResult *res, gpointer user_data)
{
  SpTimesync *t = user_data;

  if (!still_wanted (t))
    return;
  if (job_done (t, res, "restart"))
    applied (t);
  g_object_unref (t);
}

static void
on_role_written (GObject *source, GAsyncResult *res, gpointer user_data)
{
  static const char *const args[] = { "reload", "sources", NULL };
  SpTimesync *t = user_data;
  g_autoptr (GError) error = NULL;
  gboolean written = write_public_finish (res, &error);

  if (!still_wanted (t))
    return;
  if (!written)
    fail (t, "cannot write %s: %s%s", backend (t)->role_path, error->message, write_hint (error));
  else if (t->config->backend == SP_TIMESYNC_CHRONY)
    /* chronyd's command socket: no restart, its measurements stay. */
    chronyc (t, args, on_reloaded);
  else
    /* ntpd reads its sources at start only. */
    sp_systemd_job_async (t->bus, "RestartUnit", SP_TIMESYNC_NTPD_UNIT, t->cancellable,
                          on_ntpd_restarted, g_object_ref (t));
  g_object_unref (t);
}

static void
reconcile (SpTimesync *t)
{
  if (!t->ready || t->busy || !t->wanted || g_strcmp0 (t->wanted, t->applied) == 0)
    return;
  t->busy = TRUE;
  t->applying = g_strdup (t->wanted);
  write_public_async (backend (t)->role_path, t->applying, t->cancellable, on_role_written,
                      g_object_ref (t));
}

/* The leader's cluster address, or the upstream servers on the leader.
 * While no leader is known (an election) the last sources stay. */
static void
on_leader (SpNode *node, GParamSpec *pspec, gpointer user_data)
{
  SpTimesync *t = user_data;
  const char *leader = sp_node_get_leader (node);
  g_autofree char *host = NULL;

  if (!leader || !*leader)
    return;
  if (g_str_equal (leader, sp_node_get_name (node)))
    host = g_strdup ("");
  else
    {
      host = sp_timesync_host_of (sp_node_get_leader_address (node));
      if (!host || !*host)
        return;
    }
  if (g_strcmp0 (host, t->leader) == 0)
    return;
  g_free (t->leader);
  t->leader = g_steal_pointer (&host);
  g_free (t->wanted);
  t->wanted = t->config->backend == SP_TIMESYNC_CHRONY
                  ? sp_timesync_chrony_sources (t->config, leading (t) ? NULL : t->leader)
                  : sp_timesync_ntpd_conf (t->config, leading (t) ? NULL : t->leader);
  g_message ("timesync: %s%s", leading (t) ? "serving the cluster" : "following ",
             leading (t) ? "" : t->leader);
  sp_plugin_details_changed (SP_PLUGIN (t));
  reconcile (t);
}

/* ---- set-up: the drop-in and the unit --------------------------------- */

/* From now on the role's file is applied (again: a restarted daemon read
 * it itself, but a reload is harmless and tells that it answers). */
static void
set_ready (SpTimesync *t)
{
  t->ready = TRUE;
  t->busy = FALSE;
  g_clear_pointer (&t->applied, g_free);
  reconcile (t);
  if (!t->busy)
    sp_plugin_report (SP_PLUGIN (t), SP_PLUGIN_ACTIVE, NULL);
}

static void
on_unit_job (GObject *source, GAsyncResult *res, gpointer user_data)
{
  SpTimesync *t = user_data;

  if (!still_wanted (t))
    return;
  if (job_done (t, res, "start"))
    set_ready (t);
  g_object_unref (t);
}

/* chronyd is restarted only when what it cannot change at run time
 * changed, and started when it is not running. */
static void
run_unit (SpTimesync *t, gboolean restart)
{
  if (restart)
    g_message ("timesync: %s changed, restarting %s", SP_TIMESYNC_CHRONY_CONF,
               SP_TIMESYNC_CHRONY_UNIT);
  sp_systemd_job_async (t->bus, restart ? "ReloadOrRestartUnit" : "StartUnit",
                        SP_TIMESYNC_CHRONY_UNIT, t->cancellable, on_unit_job, g_object_ref (t));
}

static void
on_fixed_written (GObject *source, GAsyncResult *res, gpointer user_data)
{
  SpTimesync *t = user_data;
  g_autoptr (GError) error = NULL;
  gboolean written = write_public_finish (res, &error);

  if (!still_wanted (t))
    return;
  if (!written)
    fail (t, "cannot write %s (is %s installed?): %s%s", backend (t)->fixed_path, backend (t)->name,
          error->message, write_hint (error));
  else
    run_unit (t, TRUE);
  g_object_unref (t);
}

static void
on_fixed_loaded (GObject *source, GAsyncResult *res, gpointer user_data)
{
  SpTimesync *t = user_data;
  g_autofree char *text = NULL;
  g_autofree char *wanted = NULL;
  gsize len = 0;
  gboolean loaded = g_file_load_contents_finish (G_FILE (source), res, &text, &len, NULL, NULL);

  if (!still_wanted (t))
    return;
  wanted = sp_timesync_chrony_conf (t->config);
  if (!loaded || len != strlen (wanted) || memcmp (text, wanted, len) != 0)
    write_public_async (backend (t)->fixed_path, wanted, t->cancellable, on_fixed_written,
                        g_object_ref (t));
  else
    run_unit (t, FALSE);
  g_object_unref (t);
}

static void
setup (SpTimesync *t)
{
  g_autoptr (GFile) fixed = NULL;

  if (t->busy)
    return;
  /* ntpd: the package's ntpsec.service drop-in has it read the role's
   * file whenever it is there (sparrow-ntpd): nothing to set up. */
  if (!backend (t)->fixed_path)
    {
      set_ready (t);
      return;
    }
  fixed = g_file_new_for_path (backend (t)->fixed_path);
  t->busy = TRUE;
  t->ready = FALSE;
  g_file_load_contents_async (fixed, t->cancellable, on_fixed_loaded, g_object_ref (t));
}

/* ---- the plugin ------------------------------------------------------- */

static gboolean
probe (SpPlugin *plugin, SpConfig *config, GPtrArray *warnings, GError **error)
{
  SpTimesync *t = SP_TIMESYNC_PLUGIN (plugin);

  t->config = sp_timesync_config_read (config, warnings, error);
  if (!t->config)
    return FALSE;
  /* The time service is a systemd service: nothing to drive without
   * systemd (the group was still checked, for --check-config). */
  return g_getenv ("INVOCATION_ID") != NULL;
}

static void
start (SpPlugin *plugin)
{
  SpTimesync *t = SP_TIMESYNC_PLUGIN (plugin);

  t->node = sp_plugin_get_node (plugin);
  t->bus = sp_plugin_get_bus (plugin);
  t->leader_handler = g_signal_connect (t->node, "notify::leader", G_CALLBACK (on_leader), t);
  t->address_handler
      = g_signal_connect (t->node, "notify::leader-address", G_CALLBACK (on_leader), t);
  on_leader (t->node, NULL, t);
  setup (t);
  schedule_poll (t, SLOW_POLL_S);
}

/* It follows the leader, holder or not: a time source is no exclusive
 * resource, and a new leader serves as soon as it is known. */
static void
hold (SpPlugin *plugin, gboolean holder)
{
}

static void
release (SpPlugin *plugin)
{
  sp_plugin_released (plugin, NULL);
}

static void
resume (SpPlugin *plugin)
{
}

/* sparrow-timesync-cleanup (the unit's ExecStopPost) gives chronyd back
 * its admin's configuration: here, only stop following. */
static void
stop (SpPlugin *plugin)
{
  SpTimesync *t = SP_TIMESYNC_PLUGIN (plugin);

  g_cancellable_cancel (t->cancellable);
  g_clear_handle_id (&t->retry, g_source_remove);
  g_clear_handle_id (&t->poll, g_source_remove);
  if (t->node)
    {
      g_clear_signal_handler (&t->leader_handler, t->node);
      g_clear_signal_handler (&t->address_handler, t->node);
    }
  sp_plugin_released (plugin, NULL);
}

static GVariant *
details (SpPlugin *plugin)
{
  SpTimesync *t = SP_TIMESYNC_PLUGIN (plugin);
  GVariantBuilder b;

  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add (&b, "{sv}", "backend", g_variant_new_string (backend (t)->name));
  g_variant_builder_add (&b, "{sv}", "role",
                         g_variant_new_string (!t->leader    ? ""
                                               : leading (t) ? "leader"
                                                             : "follower"));
  g_variant_builder_add (&b, "{sv}", "following",
                         g_variant_new_string (t->leader ? t->leader : ""));
  g_variant_builder_add (&b, "{sv}", "source", g_variant_new_string (t->source ? t->source : ""));
  g_variant_builder_add (&b, "{sv}", "offset", g_variant_new_double (t->offset));
  g_variant_builder_add (&b, "{sv}", "stratum", g_variant_new_uint32 (t->stratum));
  g_variant_builder_add (&b, "{sv}", "synchronised", g_variant_new_boolean (t->synced));
  return g_variant_builder_end (&b);
}

static void
sp_timesync_plugin_finalize (GObject *object)
{
  SpTimesync *t = SP_TIMESYNC_PLUGIN (object);

  g_object_unref (t->cancellable);
  sp_timesync_config_free (t->config);
  g_free (t->wanted);
  g_free (t->applying);
  g_free (t->applied);
  g_free (t->leader);
  g_free (t->source);
  G_OBJECT_CLASS (sp_timesync_plugin_parent_class)->finalize (object);
}

static void
sp_timesync_plugin_class_init (SpTimesyncPluginClass *klass)
{
  SpPluginClass *plugin_class = SP_PLUGIN_CLASS (klass);

  G_OBJECT_CLASS (klass)->finalize = sp_timesync_plugin_finalize;
  plugin_class->probe = probe;
  plugin_class->start = start;
  plugin_class->hold = hold;
  plugin_class->release = release;
  plugin_class->resume = resume;
  plugin_class->stop = stop;
  plugin_class->details = details;
}

static void
sp_timesync_plugin_init (SpTimesync *t)
{
  t->cancellable = g_cancellable_new ();
}
