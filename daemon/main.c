/* sparrowd: wires the parts together and nothing else. */
#include <glib-unix.h>
#include <locale.h>
#include <malloc.h>
#include <stdlib.h>

#include "config.h"
#include "dbus-service.h"
#include "fence.h"
#include "logging.h"
#include "node.h"
#include "notify.h"
#include "plugin.h"
#include "tls-files.h"
#include "watchdog.h"

/* A stop that outlives this is cut short: systemd's stop timeout is longer. */
#define STOP_BOUND_MS 5000

typedef struct
{
  GMainLoop *loop;
  SpNode *node;
  SpDBusService *service;
  SpPlugins *plugins;
  gboolean plugins_started;
  guint bus_owner;
  gboolean listening;
  gboolean on_bus;
  gboolean ready_sent;
  gboolean stopping;
  char *status; /* last STATUS= sent */
  int exit_code;
  SpWatchdog *watchdog; /* NULL without one */
} Daemon;

static void
maybe_ready (Daemon *d)
{
  if (d->listening && d->on_bus && !d->ready_sent)
    {
      d->ready_sent = TRUE;
      sp_notify ("READY=1");
    }
}

static void
on_state_changed (SpNode *node, GParamSpec *pspec, Daemon *d)
{
  const char *role = sp_node_get_role (node);
  const char *leader = sp_node_get_leader (node);
  g_autofree char *term = g_strdup_printf ("%" G_GUINT64_FORMAT, sp_node_get_term (node));
  g_autofree char *status
      = g_strdup_printf ("STATUS=%s, term %s, leader %s", role, term, *leader ? leader : "unknown");

  /* Role and leader often change together: say it once. */
  if (g_strcmp0 (status, d->status) == 0)
    return;
  g_free (d->status);
  d->status = g_strdup (status);
  sp_notify (status);
  g_log_structured (G_LOG_DOMAIN, G_LOG_LEVEL_MESSAGE, "SPARROW_ROLE", role, "SPARROW_TERM", term,
                    "SPARROW_LEADER", leader, "MESSAGE", "%s: %s in term %s, leader %s",
                    sp_node_get_name (node), role, term, *leader ? leader : "unknown");
}

static void
on_bus_acquired (GDBusConnection *connection, const char *name, gpointer user_data)
{
  Daemon *d = user_data;
  g_autoptr (GError) error = NULL;

  if (!sp_dbus_service_export (d->service, connection, &error))
    g_warning ("cannot export %s: %s", SP_DBUS_PATH, error->message);
  if (!d->plugins_started)
    {
      d->plugins_started = TRUE;
      sp_plugins_start (d->plugins, d->node, connection);
    }
}

static void
on_name_acquired (GDBusConnection *connection, const char *name, gpointer user_data)
{
  Daemon *d = user_data;

  d->on_bus = TRUE;
  maybe_ready (d);
}

static void
on_name_lost (GDBusConnection *connection, const char *name, gpointer user_data)
{
  Daemon *d = user_data;

  /* Raft goes on without the bus; only administration is cut off. */
  d->on_bus = FALSE;
  g_warning ("%s: %s on the system bus", name,
             connection ? "lost or not allowed to own the name" : "cannot connect");
}

/* Tight while leading and until every plugin confirmed it let go (see
 * watchdog.h); the plugins start once on the bus. */
static SpWatchdogNeed
on_watchdog_ask (gpointer user_data)
{
  Daemon *d = user_data;

  if (g_str_equal (sp_node_get_role (d->node), "leader"))
    return SP_WATCHDOG_LEADING;
  if (sp_node_get_holder (d->node) || (d->plugins_started && sp_plugins_holding (d->plugins)))
    return SP_WATCHDOG_RELEASING;
  return SP_WATCHDOG_IDLE;
}

static void
on_node_awake (SpNode *node, gpointer user_data)
{
  Daemon *d = user_data;

  sp_watchdog_awake (d->watchdog);
}

static void
on_flushed (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Daemon *d = user_data;
  g_autoptr (GError) error = NULL;

  if (!sp_dbus_service_flush_finish (result, &error))
    g_message ("the bus did not take the last changes: %s", error->message);
  g_main_loop_quit (d->loop);
}

static void
on_stopped (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Daemon *d = user_data;

  sp_node_stop_finish (SP_NODE (source), result, NULL);
  /* What the node published last reaches the bus before the process goes. */
  sp_dbus_service_flush_async (d->service, on_flushed, d);
}

static gboolean
on_stop_bound (gpointer user_data)
{
  Daemon *d = user_data;

  g_warning ("stop took longer than %d ms, exiting anyway", STOP_BOUND_MS);
  g_main_loop_quit (d->loop);
  return G_SOURCE_REMOVE;
}

static void
shut_down (Daemon *d)
{
  if (d->stopping)
    return;
  d->stopping = TRUE;
  sp_notify ("STOPPING=1");
  sp_node_stop_async (d->node, on_stopped, d);
  g_timeout_add (STOP_BOUND_MS, on_stop_bound, d);
}

static gboolean
on_terminate (gpointer user_data)
{
  Daemon *d = user_data;

  if (!d->stopping)
    g_message ("stopping%s", g_str_equal (sp_node_get_role (d->node), "leader")
                                 ? ": handing leadership over first"
                                 : "");
  shut_down (d);
  return G_SOURCE_REMOVE;
}

/* Fail-stop: the node has given up its role and lease (and published
 * that); say why, stop what leadership started, and exit with a failure
 * status so that systemd restarts the service (Restart=on-failure). */
static void
on_failed (SpNode *node, const char *why, Daemon *d)
{
  g_autofree char *status = g_strdup_printf ("STATUS=failed: %s", why);

  d->exit_code = EXIT_FAILURE;
  g_free (d->status);
  d->status = g_strdup (status);
  sp_notify (status);
  g_log_structured (G_LOG_DOMAIN, G_LOG_LEVEL_MESSAGE, "SPARROW_ROLE", "failed", "MESSAGE",
                    "%s failed, exiting with status %d to be restarted: %s",
                    sp_node_get_name (node), EXIT_FAILURE, why);
  shut_down (d);
}

/* What --check-config says: the timings that follow from the file, so an
 * admin sees what a change costs before restarting. */
static void
print_check (SpConfig *config, SpPlugins *plugins, guint n_warnings)
{
  GPtrArray *list = sp_plugins_get (plugins);
  guint fence = sp_fence_ms (config), wait = sp_fence_wait_ms (config);
  guint units = config->fence ? config->units_stop_ms : 0;

  guint voters = MAX (config->initial_members->len, 1);
  guint tolerated = sp_config_failures_tolerated (voters);

  g_print ("%s: configuration is valid (%u warning%s); heartbeat %u ms, election timeout %u ms "
           "(a follower campaigns %u to %u ms after the last heartbeat), leader lease %u ms, "
           "leader watchdog %u ms\n",
           config->path, n_warnings, n_warnings == 1 ? "" : "s", config->heartbeat_ms,
           config->election_ms, config->election_ms, 2 * config->election_ms,
           sp_fence_lease_ms (config), config->leader_watchdog_ms);
  if (config->join)
    g_print ("voters: joins an existing cluster (its members decide)\n");
  else
    g_print ("voters: %u, tolerating %u failure%s\n", voters, tolerated, tolerated == 1 ? "" : "s");
  g_print ("plugins:");
  for (guint i = 0; i < list->len; i++)
    g_print (" %s", sp_plugin_get_name (list->pdata[i]));
  g_print ("%s\n", list->len ? "" : " none (leader-target runs under systemd only)");
  if (config->fence)
    g_print ("fence: a new leader holds addresses %u ms after its voters last heard the old "
             "leader (at most %u ms after its election), the leader target %u ms later "
             "(lease %u ms + fence keeper %u ms, 5 %% drift, one tick)\n",
             fence, wait, units, sp_fence_lease_ms (config), config->keeper_ms);
  else
    g_print ("fence: off ([cluster] fence = false): a new leader holds at once; a stalled old "
             "leader may still hold for up to %u ms after its last heartbeat\n",
             sp_fence_bound_ms (config));
  /* The fault model the figures assume (doc/design.md). */
  g_print ("fault model: the fence covers one fault of the old leader (crash, kill -9, SIGSTOP, "
           "freeze, CPU starvation, partition, or its fence keeper's death while sparrowd "
           "runs); a double fault (keeper dead and sparrowd stalled) is ended by the leader "
           "watchdog, up to %u ms after the last heartbeat\n",
           sp_fence_backstop_ms (config));
  /* Followers campaign a random [election, 2 x election) after the last
   * heartbeat; the fence counts from that heartbeat too. */
  g_print ("expected failover after a crash: %u to %u ms (addresses), %u to %u ms (leader "
           "target)\n",
           MAX (config->election_ms, fence), MAX (2 * config->election_ms, fence),
           MAX (config->election_ms, fence) + units, MAX (2 * config->election_ms, fence) + units);
}

int
main (int argc, char **argv)
{
  g_autofree char *config_path = NULL;
  gboolean check_config = FALSE;
  gboolean strict = FALSE;
  gboolean version = FALSE;
  GOptionEntry entries[]
      = { { "config", 'c', 0, G_OPTION_ARG_FILENAME, &config_path,
            "Configuration file (default " SP_CONFIG_DEFAULT_PATH ")", "PATH" },
          { "check-config", 0, 0, G_OPTION_ARG_NONE, &check_config,
            "Validate the configuration, print the timings it gives, and exit", NULL },
          { "strict", 0, 0, G_OPTION_ARG_NONE, &strict,
            "Every configuration warning is an error (as [node] strict = true)", NULL },
          { "version", 0, 0, G_OPTION_ARG_NONE, &version, "Print the version and exit", NULL },
          { NULL } };
  g_autoptr (GOptionContext) context = g_option_context_new ("- sparrow cluster node");
  g_autoptr (GPtrArray) warnings = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (SpConfig) config = NULL;
  g_autoptr (SpPlugins) plugins = NULL;
  g_autoptr (GError) error = NULL;
  Daemon d = { 0 };

  /* Before any thread: one malloc arena for all.  Each thread's own
   * (storage, GDBus, GLib's workers) kept pages for the few blocks it ever
   * held, about 270 KiB of an idle node; the threads seldom allocate at
   * once. */
  mallopt (M_ARENA_MAX, 1);
  setlocale (LC_ALL, "");
  sp_logging_init ();
  g_option_context_add_main_entries (context, entries, NULL);
  g_option_context_set_summary (
      context, "Elects a leader among the members of /etc/sparrow/sparrow.conf (Raft over TCP,\n"
               "mutual TLS), publishes it on the system bus as org.sparrow.cluster1 and, on the\n"
               "leader, starts sparrow-leader.target. Drop-ins: sparrow.conf.d/*.conf beside the\n"
               "file. Runs as sparrow.service (Type=notify, with its watchdog).");
  g_option_context_set_description (
      context, "SIGTERM or SIGINT: a leader hands leadership over first, then it stops.\n"
               "Logs go to the journal under systemd, else one line each on stderr\n"
               "(G_MESSAGES_DEBUG=all adds debug messages).\n"
               "\n"
               "Environment: DBUS_SYSTEM_BUS_ADDRESS (the bus), SPARROW_PLUGIN_DIR (plugin\n"
               "modules, default " SP_PLUGIN_DIR "), NOTIFY_SOCKET\n"
               "and WATCHDOG_USEC (set by systemd).\n"
               "\n"
               "Exit status: 0 stopped, or the configuration is valid; 1 invalid configuration\n"
               "(or a warning with --strict), cannot start, or failed while running (systemd\n"
               "restarts it); 2 usage.");
  if (!g_option_context_parse (context, &argc, &argv, &error))
    {
      g_printerr ("sparrowd: %s\n", error->message);
      return 2;
    }
  if (version)
    {
      g_print ("sparrowd %s\n", SPARROW_VERSION);
      return 0;
    }

  config = sp_config_load (config_path ? config_path : SP_CONFIG_DEFAULT_PATH, warnings, &error);
  if (config)
    plugins = sp_plugins_probe (config, warnings, &error);
  strict = strict || (config && config->strict);
  /* A check answers on the terminal; a daemon that goes on logs them. */
  for (guint i = 0; i < warnings->len; i++)
    if (strict || check_config)
      g_printerr ("sparrowd: %s: %s\n", strict ? "error (strict)" : "warning",
                  (char *)warnings->pdata[i]);
    else
      g_warning ("configuration: %s", (char *)warnings->pdata[i]);
  if (!plugins)
    {
      g_printerr ("sparrowd: %s\n", error->message);
      return 1;
    }
  if (strict && warnings->len > 0)
    {
      g_printerr ("sparrowd: %u warning%s, and strict: not valid\n", warnings->len,
                  warnings->len == 1 ? "" : "s");
      return 1;
    }
  if (check_config)
    {
      g_autoptr (GTlsCertificate) certificate = NULL;
      g_autoptr (GTlsDatabase) ca = NULL;
      g_autofree char *tls = NULL;

      /* The files as start-up will load them. */
      if (!config->insecure && !sp_tls_files_load (config, &certificate, &ca, &error))
        {
          g_printerr ("sparrowd: %s\n", error->message);
          return 1;
        }
      tls = certificate ? sp_tls_files_describe (certificate)
                        : g_strdup ("off (insecure = true): plaintext, peers not authenticated");
      print_check (config, plugins, warnings->len);
      g_print ("tls: %s\n", tls);
      return 0;
    }
  if (config->insecure)
    g_warning ("TLS is off (insecure = true): peers are not authenticated and traffic is "
               "plaintext");

  d.node = sp_node_new (config, &error);
  if (!d.node)
    {
      g_printerr ("sparrowd: %s\n", error->message);
      return 1;
    }
  if (!sp_node_start (d.node, &error))
    {
      g_printerr ("sparrowd: cannot listen on %s port %u: %s\n", config->listen_host,
                  config->listen_port, error->message);
      g_object_unref (d.node);
      return 1;
    }
  d.listening = TRUE;
  g_signal_connect (d.node, "notify::role", G_CALLBACK (on_state_changed), &d);
  g_signal_connect (d.node, "notify::leader", G_CALLBACK (on_state_changed), &d);
  g_signal_connect (d.node, "failed", G_CALLBACK (on_failed), &d);

  d.plugins = plugins;
  d.service = sp_dbus_service_new (d.node, sp_plugins_get (plugins));
  d.bus_owner = g_bus_own_name (G_BUS_TYPE_SYSTEM, SP_DBUS_NAME, G_BUS_NAME_OWNER_FLAGS_NONE,
                                on_bus_acquired, on_name_acquired, on_name_lost, &d, NULL);

  d.watchdog = sp_watchdog_new (sp_notify_watchdog_usec (),
                                (guint64)config->leader_watchdog_ms * 1000, on_watchdog_ask, &d);
  if (d.watchdog)
    sp_node_set_wake_func (d.node, on_node_awake, &d);
  g_unix_signal_add (SIGTERM, on_terminate, &d);
  g_unix_signal_add (SIGINT, on_terminate, &d);

  d.loop = g_main_loop_new (NULL, FALSE);
  g_main_loop_run (d.loop);

  g_bus_unown_name (d.bus_owner);
  sp_node_set_wake_func (d.node, NULL, NULL);
  g_clear_pointer (&d.watchdog, sp_watchdog_free);
  /* The service's bindings go before the plugins they bind: a plugin that
   * nothing else holds is finalized with the registry, and its bindings
   * with it. */
  sp_dbus_service_free (d.service);
  g_clear_pointer (&plugins, sp_plugins_free);
  g_object_unref (d.node);
  g_main_loop_unref (d.loop);
  g_free (d.status);
  return d.exit_code;
}
