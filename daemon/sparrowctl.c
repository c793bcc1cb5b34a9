/* sparrowctl: the admin's command.  Talks only D-Bus, to the sparrowd on
 * this host's system bus ($DBUS_SYSTEM_BUS_ADDRESS is honoured).
 *
 * Exit codes: 0 done; 1 failed; 2 usage; 3 not the leader or no quorum
 * (retry, on the leader); 4 key not found; 5 compare-and-swap conflict;
 * 6 sparrowd not reachable on the bus. */
#include <gio/gio.h>
#include <glib-unix.h>
#include <json-glib/json-glib.h>
#include <locale.h>
#include <stdio.h>

#include "text.h"

#define BUS_NAME      "org.sparrow.cluster1"
#define OBJECT_PATH   "/org/sparrow/cluster1"
#define MANAGER_IFACE "org.sparrow.cluster1.Manager"
#define PLUGIN_IFACE  "org.sparrow.cluster1.Plugin"
#define STORE_IFACE   "org.sparrow.cluster1.Store"

enum
{
  EXIT_OK = 0,
  EXIT_FAILED = 1,
  EXIT_USAGE = 2,
  EXIT_NOT_LEADER = 3,
  EXIT_NOT_FOUND = 4,
  EXIT_CONFLICT = 5,
  EXIT_UNREACHABLE = 6,
};

static gboolean opt_json;
static gboolean opt_stale;
static gboolean opt_learner;

static GDBusConnection *bus;

static char *
quote (const char *s)
{
  g_autoptr (JsonNode) node = json_node_init_string (json_node_alloc (), s);

  return json_to_string (node, FALSE);
}

static int
fail (GError *error)
{
  g_autofree char *remote = g_dbus_error_get_remote_error (error);
  int code = EXIT_FAILED;

  g_dbus_error_strip_remote_error (error);
  if (remote
      && (g_str_equal (remote, "org.freedesktop.DBus.Error.ServiceUnknown")
          || g_str_equal (remote, "org.freedesktop.DBus.Error.NameHasNoOwner")))
    {
      g_free (error->message);
      error->message
          = g_strdup ("sparrowd is not running (nobody owns " BUS_NAME " on the system bus)");
    }
  else if (remote && g_str_equal (remote, "org.freedesktop.DBus.Error.AccessDenied"))
    {
      g_autofree char *why = error->message;

      error->message = g_strdup_printf ("not allowed: %s", why);
    }
  if (!remote)
    code = EXIT_FAILED;
  else if (g_str_equal (remote, "org.sparrow.cluster1.Error.NotLeader")
           || g_str_equal (remote, "org.sparrow.cluster1.Error.NoQuorum")
           || g_str_equal (remote, "org.sparrow.cluster1.Error.Busy"))
    code = EXIT_NOT_LEADER;
  else if (g_str_equal (remote, "org.sparrow.cluster1.Error.NotFound"))
    code = EXIT_NOT_FOUND;
  else if (g_str_equal (remote, "org.sparrow.cluster1.Error.Conflict"))
    code = EXIT_CONFLICT;
  else if (g_str_equal (remote, "org.freedesktop.DBus.Error.ServiceUnknown")
           || g_str_equal (remote, "org.freedesktop.DBus.Error.NameHasNoOwner"))
    code = EXIT_UNREACHABLE;
  if (opt_json)
    {
      g_autofree char *message = quote (error->message);

      g_print ("{\"error\": \"%s\", \"message\": %s}\n", remote ? remote : "failed", message);
    }
  else
    g_printerr ("sparrowctl: %s\n", error->message);
  g_error_free (error);
  return code;
}

static GVariant *
call_at (const char *path, const char *iface, const char *method, GVariant *args,
         const char *reply_type, GError **error)
{
  return g_dbus_connection_call_sync (
      bus, BUS_NAME, path, iface, method, args, reply_type ? G_VARIANT_TYPE (reply_type) : NULL,
      G_DBUS_CALL_FLAGS_NO_AUTO_START | G_DBUS_CALL_FLAGS_ALLOW_INTERACTIVE_AUTHORIZATION, 30000,
      NULL, error);
}

static GVariant *
call (const char *iface, const char *method, GVariant *args, const char *reply_type, GError **error)
{
  return call_at (OBJECT_PATH, iface, method, args, reply_type, error);
}

/* The properties (a{sv}) of iface on the object at path. */
static GVariant *
get_all (const char *path, const char *iface, GError **error)
{
  g_autoptr (GVariant) reply = call_at (path, "org.freedesktop.DBus.Properties", "GetAll",
                                        g_variant_new ("(s)", iface), "(a{sv})", error);

  return reply ? g_variant_get_child_value (reply, 0) : NULL;
}

/* pretty: indented; else one line (watch: one change per line). */
static void
print_json (JsonBuilder *builder, gboolean pretty)
{
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  g_autoptr (JsonNode) root = json_builder_get_root (builder);
  g_autofree char *text = NULL;

  json_generator_set_root (gen, root);
  json_generator_set_pretty (gen, pretty);
  text = json_generator_to_data (gen, NULL);
  g_print ("%s\n", text);
}

/* ---- status ------------------------------------------------------------- */

/* Each plugin's properties (a{sv}), in the Manager's order; a plugin that
 * cannot be read is left out with a warning (status still answers). */
static GPtrArray *
get_plugins (GVariant *manager_props)
{
  GPtrArray *plugins = g_ptr_array_new_with_free_func ((GDestroyNotify)g_variant_unref);
  g_autofree const char **paths = NULL;
  g_autoptr (GVariant) list
      = g_variant_lookup_value (manager_props, "Plugins", G_VARIANT_TYPE ("ao"));

  if (!list)
    return plugins;
  paths = g_variant_get_objv (list, NULL);
  for (guint i = 0; paths[i]; i++)
    {
      g_autoptr (GError) error = NULL;
      GVariant *props = get_all (paths[i], PLUGIN_IFACE, &error);

      if (!props)
        g_printerr ("sparrowctl: %s: %s\n", paths[i], error->message);
      else
        g_ptr_array_add (plugins, props);
    }
  return plugins;
}

static void
plugin_fields (GVariant *props, const char **name, const char **state, const char **last_error)
{
  *name = *state = *last_error = "";
  g_variant_lookup (props, "Name", "&s", name);
  g_variant_lookup (props, "State", "&s", state);
  g_variant_lookup (props, "LastError", "&s", last_error);
}

/* The timesync plugin's view of the node's clock, under the plugin table. */
static void
print_timesync (GPtrArray *plugins)
{
  for (guint i = 0; i < plugins->len; i++)
    {
      g_autoptr (GVariant) d = NULL;
      const char *name = "", *backend = "", *role = "", *source = "";
      double offset = 0;
      guint32 stratum = 0;
      gboolean synced = FALSE;

      g_variant_lookup (plugins->pdata[i], "Name", "&s", &name);
      if (!g_str_equal (name, "timesync"))
        continue;
      d = g_variant_lookup_value (plugins->pdata[i], "Details", G_VARIANT_TYPE_VARDICT);
      if (!d)
        return;
      g_variant_lookup (d, "backend", "&s", &backend);
      g_variant_lookup (d, "role", "&s", &role);
      g_variant_lookup (d, "source", "&s", &source);
      g_variant_lookup (d, "offset", "d", &offset);
      g_variant_lookup (d, "stratum", "u", &stratum);
      g_variant_lookup (d, "synchronised", "b", &synced);
      g_print ("\nTIME (%s, %s): ", backend, *role ? role : "no leader yet");
      if (synced)
        g_print ("synchronised to %s, stratum %u, offset %+.3f ms\n", source, stratum,
                 offset * 1000);
      else
        g_print ("not synchronised\n");
      return;
    }
}

static int
cmd_status (gboolean leader_only)
{
  g_autoptr (GVariant) props = NULL;
  g_autoptr (GVariant) members = NULL;
  g_autoptr (GPtrArray) plugins = NULL;
  GError *error = NULL;
  const char *name = "", *role = "", *leader = "", *leader_address = "", *keeper = "";
  const char *p_name, *p_state, *p_error;
  guint64 term = 0, commit = 0, refused = 0;
  gboolean lease = FALSE, holder = FALSE;

  props = get_all (OBJECT_PATH, MANAGER_IFACE, &error);
  if (!props)
    return fail (error);
  g_variant_lookup (props, "NodeName", "&s", &name);
  g_variant_lookup (props, "Role", "&s", &role);
  g_variant_lookup (props, "Term", "t", &term);
  g_variant_lookup (props, "Leader", "&s", &leader);
  g_variant_lookup (props, "LeaderAddress", "&s", &leader_address);
  g_variant_lookup (props, "CommitIndex", "t", &commit);
  g_variant_lookup (props, "LeaseValid", "b", &lease);
  g_variant_lookup (props, "Holder", "b", &holder);
  g_variant_lookup (props, "FenceKeeper", "&s", &keeper);
  g_variant_lookup (props, "RefusedEntries", "t", &refused);
  members = g_variant_lookup_value (props, "Members", G_VARIANT_TYPE ("a(ssbbt)"));

  if (leader_only)
    {
      if (opt_json)
        {
          g_autoptr (JsonBuilder) b = json_builder_new ();

          json_builder_begin_object (b);
          json_builder_set_member_name (b, "leader");
          json_builder_add_string_value (b, leader);
          json_builder_set_member_name (b, "address");
          json_builder_add_string_value (b, leader_address);
          json_builder_set_member_name (b, "term");
          json_builder_add_int_value (b, (gint64)term);
          json_builder_end_object (b);
          print_json (b, TRUE);
        }
      else if (*leader)
        {
          g_print ("%s %s\n", leader, leader_address);
        }
      else
        {
          g_printerr ("sparrowctl: no leader known to %s (term %" G_GUINT64_FORMAT ")\n", name,
                      term);
        }
      return *leader ? EXIT_OK : EXIT_NOT_LEADER;
    }
  plugins = get_plugins (props);

  if (opt_json)
    {
      g_autoptr (JsonBuilder) b = json_builder_new ();
      GVariantIter iter;
      const char *m_name, *m_address;
      gboolean voter, reachable;
      guint64 match;

      json_builder_begin_object (b);
      json_builder_set_member_name (b, "node");
      json_builder_add_string_value (b, name);
      json_builder_set_member_name (b, "role");
      json_builder_add_string_value (b, role);
      json_builder_set_member_name (b, "term");
      json_builder_add_int_value (b, (gint64)term);
      json_builder_set_member_name (b, "leader");
      json_builder_add_string_value (b, leader);
      json_builder_set_member_name (b, "leader_address");
      json_builder_add_string_value (b, leader_address);
      json_builder_set_member_name (b, "commit_index");
      json_builder_add_int_value (b, (gint64)commit);
      json_builder_set_member_name (b, "lease_valid");
      json_builder_add_boolean_value (b, lease);
      json_builder_set_member_name (b, "holder");
      json_builder_add_boolean_value (b, holder);
      json_builder_set_member_name (b, "fence_keeper");
      json_builder_add_string_value (b, keeper);
      json_builder_set_member_name (b, "refused_entries");
      json_builder_add_int_value (b, (gint64)refused);
      json_builder_set_member_name (b, "plugins");
      json_builder_begin_array (b);
      for (guint i = 0; i < plugins->len; i++)
        {
          g_autoptr (GVariant) details
              = g_variant_lookup_value (plugins->pdata[i], "Details", G_VARIANT_TYPE_VARDICT);

          plugin_fields (plugins->pdata[i], &p_name, &p_state, &p_error);
          json_builder_begin_object (b);
          json_builder_set_member_name (b, "name");
          json_builder_add_string_value (b, p_name);
          json_builder_set_member_name (b, "state");
          json_builder_add_string_value (b, p_state);
          json_builder_set_member_name (b, "last_error");
          json_builder_add_string_value (b, p_error);
          json_builder_set_member_name (b, "details");
          json_builder_add_value (b, details ? json_gvariant_serialize (details)
                                             : json_node_new (JSON_NODE_NULL));
          json_builder_end_object (b);
        }
      json_builder_end_array (b);
      json_builder_set_member_name (b, "members");
      json_builder_begin_array (b);
      if (members)
        {
          g_variant_iter_init (&iter, members);
          while (g_variant_iter_next (&iter, "(&s&sbbt)", &m_name, &m_address, &voter, &reachable,
                                      &match))
            {
              json_builder_begin_object (b);
              json_builder_set_member_name (b, "name");
              json_builder_add_string_value (b, m_name);
              json_builder_set_member_name (b, "address");
              json_builder_add_string_value (b, m_address);
              json_builder_set_member_name (b, "voter");
              json_builder_add_boolean_value (b, voter);
              json_builder_set_member_name (b, "reachable");
              json_builder_add_boolean_value (b, reachable);
              json_builder_set_member_name (b, "leader");
              json_builder_add_boolean_value (b, g_str_equal (m_name, leader));
              json_builder_set_member_name (b, "match_index");
              json_builder_add_int_value (b, (gint64)match);
              json_builder_end_object (b);
            }
        }
      json_builder_end_array (b);
      json_builder_end_object (b);
      print_json (b, TRUE);
      return EXIT_OK;
    }

  g_print ("Node:    %s (%s, term %" G_GUINT64_FORMAT ", commit index %" G_GUINT64_FORMAT "%s)\n",
           name, role, term, commit,
           !g_str_equal (role, "leader") ? ""
           : !lease                      ? ", NO LEASE"
           : holder                      ? ", lease valid, holder"
                                         : ", lease valid, fencing");
  g_print ("Leader:  %s%s%s\n", *leader ? leader : "(none known)", *leader ? " at " : "",
           leader_address);
  /* Said when it keeps this node from holding, or may. */
  if (*keeper
      && !g_strv_contains ((const char *const[]){ "armed", "arming", "ready", "off", NULL },
                           keeper))
    g_print ("Fence:   NOT IN PLACE, holds nothing: %s\n", keeper);
  /* Only a buggy or hostile leader makes this happen: said only then. */
  if (refused > 0)
    g_print ("REFUSED: %" G_GUINT64_FORMAT
             " committed entries broke the rules and were not applied (see the log)\n",
             refused);
  g_print ("\n");
  g_print ("%-16s %-28s %-9s %-8s %-10s %s\n", "MEMBER", "ADDRESS", "ROLE", "VOTER", "REACHABLE",
           "MATCH");
  if (members)
    {
      GVariantIter iter;
      const char *m_name, *m_address;
      gboolean voter, reachable;
      guint64 match;

      g_variant_iter_init (&iter, members);
      while (
          g_variant_iter_next (&iter, "(&s&sbbt)", &m_name, &m_address, &voter, &reachable, &match))
        {
          g_autofree char *match_s = g_strdup_printf ("%" G_GUINT64_FORMAT, match);

          g_print ("%-16s %-28s %-9s %-8s %-10s %s\n", m_name, m_address,
                   g_str_equal (m_name, leader) ? "leader"
                   : voter                      ? "follower"
                                                : "learner",
                   voter ? "yes" : "no", reachable ? "yes" : "no",
                   g_str_equal (role, "leader") ? match_s : "-");
        }
    }
  if (plugins->len > 0)
    g_print ("\n%-16s %-9s %s\n", "PLUGIN", "STATE", "LAST ERROR");
  for (guint i = 0; i < plugins->len; i++)
    {
      plugin_fields (plugins->pdata[i], &p_name, &p_state, &p_error);
      g_print ("%-16s %-9s %s\n", p_name, p_state, p_error);
    }
  print_timesync (plugins);
  return EXIT_OK;
}

/* ---- store -------------------------------------------------------------- */

static int
print_revision (GVariant *reply, const char *what, const char *key)
{
  guint64 revision;

  g_variant_get (reply, "(t)", &revision);
  if (opt_json)
    {
      g_autofree char *quoted = quote (key);

      g_print ("{\"key\": %s, \"revision\": %" G_GUINT64_FORMAT "}\n", quoted, revision);
    }
  else
    g_print ("%s %s (revision %" G_GUINT64_FORMAT ")\n", what, key, revision);
  return EXIT_OK;
}

static int
cmd_get (const char *key)
{
  g_autoptr (GVariant) reply = NULL;
  GError *error = NULL;
  const char *value;
  guint64 revision;

  reply = call (STORE_IFACE, "Get", g_variant_new ("(sb)", key, opt_stale), "(st)", &error);
  if (!reply)
    return fail (error);
  g_variant_get (reply, "(&st)", &value, &revision);
  if (opt_json)
    {
      g_autoptr (JsonBuilder) b = json_builder_new ();

      json_builder_begin_object (b);
      json_builder_set_member_name (b, "key");
      json_builder_add_string_value (b, key);
      json_builder_set_member_name (b, "value");
      json_builder_add_string_value (b, value);
      json_builder_set_member_name (b, "revision");
      json_builder_add_int_value (b, (gint64)revision);
      json_builder_end_object (b);
      print_json (b, TRUE);
    }
  else
    {
      g_print ("%s\n", value);
    }
  return EXIT_OK;
}

static int
cmd_write (const char *method, GVariant *args, const char *what, const char *key)
{
  g_autoptr (GVariant) reply = NULL;
  GError *error = NULL;

  reply = call (STORE_IFACE, method, args, "(t)", &error);
  if (!reply)
    return fail (error);
  return print_revision (reply, what, key);
}

static int
cmd_ls (const char *prefix)
{
  g_autoptr (GVariant) reply = NULL;
  g_autoptr (GVariantIter) iter = NULL;
  g_autoptr (JsonBuilder) b = json_builder_new ();
  GError *error = NULL;
  const char *key, *value;
  guint64 revision;

  reply = call (STORE_IFACE, "List", g_variant_new ("(sb)", prefix, opt_stale), "(a(sst))", &error);
  if (!reply)
    return fail (error);
  g_variant_get (reply, "(a(sst))", &iter);
  json_builder_begin_array (b);
  while (g_variant_iter_next (iter, "(&s&st)", &key, &value, &revision))
    {
      if (!opt_json)
        {
          g_autofree char *shown = sp_text_escape (value);

          g_print ("%s=%s\n", key, shown);
          continue;
        }
      json_builder_begin_object (b);
      json_builder_set_member_name (b, "key");
      json_builder_add_string_value (b, key);
      json_builder_set_member_name (b, "value");
      json_builder_add_string_value (b, value);
      json_builder_set_member_name (b, "revision");
      json_builder_add_int_value (b, (gint64)revision);
      json_builder_end_object (b);
    }
  json_builder_end_array (b);
  if (opt_json)
    print_json (b, TRUE);
  return EXIT_OK;
}

static void
print_change (const char *key, const char *value, gboolean deleted, guint64 revision)
{
  if (opt_json)
    {
      g_autoptr (JsonBuilder) b = json_builder_new ();

      json_builder_begin_object (b);
      json_builder_set_member_name (b, "key");
      json_builder_add_string_value (b, key);
      json_builder_set_member_name (b, "value");
      if (deleted)
        json_builder_add_null_value (b);
      else
        json_builder_add_string_value (b, value);
      json_builder_set_member_name (b, "revision");
      json_builder_add_int_value (b, (gint64)revision);
      json_builder_end_object (b);
      print_json (b, FALSE);
    }
  else if (deleted)
    {
      g_print ("%" G_GUINT64_FORMAT " deleted %s\n", revision, key);
    }
  else
    {
      g_autofree char *shown = sp_text_escape (value);

      g_print ("%" G_GUINT64_FORMAT " set %s=%s\n", revision, key, shown);
    }
}

/* One signal carries every change of a batch the node applied. */
static void
on_changed (GDBusConnection *connection, const char *sender, const char *path, const char *iface,
            const char *signal, GVariant *params, gpointer user_data)
{
  const char *prefix = user_data;
  g_autoptr (GVariantIter) changes = NULL;
  const char *key, *value;
  gboolean deleted;
  guint64 revision;

  if (!g_variant_is_of_type (params, G_VARIANT_TYPE ("(a(ssbt))")))
    return;
  g_variant_get (params, "(a(ssbt))", &changes);
  while (g_variant_iter_next (changes, "(&s&sbt)", &key, &value, &deleted, &revision))
    if (g_str_has_prefix (key, prefix))
      print_change (key, value, deleted, revision);
  /* One line per change, even into a pipe. */
  fflush (stdout);
}

static gboolean
on_interrupt (gpointer loop)
{
  g_main_loop_quit (loop);
  return G_SOURCE_REMOVE;
}

/* Says on stderr when sparrowd goes and comes: stdout is the changes. */
static void
on_name_appeared (GDBusConnection *connection, const char *name, const char *owner,
                  gpointer user_data)
{
  gboolean *waited = user_data;

  if (*waited)
    g_printerr ("sparrowctl: sparrowd is there, following it\n");
  *waited = FALSE;
}

static void
on_name_vanished (GDBusConnection *connection, const char *name, gpointer user_data)
{
  gboolean *waited = user_data;

  if (!*waited)
    g_printerr ("sparrowctl: sparrowd is not running; waiting for it…\n");
  *waited = TRUE;
}

/* The subscription names the well-known name: the bus routes the signals
 * of whoever owns it, so a restarted sparrowd is followed without
 * resubscribing, and the watcher never starts one. */
static int
cmd_watch (const char *prefix)
{
  g_autoptr (GMainLoop) loop = g_main_loop_new (NULL, FALSE);
  gboolean waited = FALSE;
  guint watcher;

  g_dbus_connection_signal_subscribe (bus, BUS_NAME, STORE_IFACE, "Changed", OBJECT_PATH, NULL,
                                      G_DBUS_SIGNAL_FLAGS_NONE, on_changed, (gpointer)prefix, NULL);
  watcher = g_bus_watch_name_on_connection (bus, BUS_NAME, G_BUS_NAME_WATCHER_FLAGS_NONE,
                                            on_name_appeared, on_name_vanished, &waited, NULL);
  g_unix_signal_add (SIGINT, on_interrupt, loop);
  g_unix_signal_add (SIGTERM, on_interrupt, loop);
  g_main_loop_run (loop);
  g_bus_unwatch_name (watcher);
  return EXIT_OK;
}

/* ---- administration ----------------------------------------------------- */

static int
cmd_admin (const char *method, GVariant *args, const char *done)
{
  g_autoptr (GVariant) reply = NULL;
  GError *error = NULL;

  reply = call (MANAGER_IFACE, method, args, NULL, &error);
  if (!reply)
    return fail (error);
  if (opt_json)
    g_print ("{\"done\": true}\n");
  else
    g_print ("%s\n", done);
  return EXIT_OK;
}

/* ---- command line ------------------------------------------------------- */

typedef struct
{
  const char *words;  /* one or two words */
  const char *params; /* in brackets when optional */
  int (*run) (char **args);
} Command;

static int
run_status (char **args)
{
  return cmd_status (FALSE);
}

static int
run_leader (char **args)
{
  return cmd_status (TRUE);
}

static int
run_get (char **args)
{
  return cmd_get (args[0]);
}

static int
run_set (char **args)
{
  return cmd_write ("Set", g_variant_new ("(ss)", args[0], args[1]), "set", args[0]);
}

static int
run_del (char **args)
{
  return cmd_write ("Delete", g_variant_new ("(s)", args[0]), "deleted", args[0]);
}

static int
run_cas (char **args)
{
  /* checked before connecting */
  guint64 revision = g_ascii_strtoull (args[1], NULL, 10);

  return cmd_write ("CompareAndSwap", g_variant_new ("(sts)", args[0], revision, args[2]), "set",
                    args[0]);
}

static int
run_ls (char **args)
{
  return cmd_ls (args[0] ? args[0] : "");
}

static int
run_watch (char **args)
{
  return cmd_watch (args[0] ? args[0] : "");
}

static int
run_transfer (char **args)
{
  return cmd_admin ("TransferLeadership", g_variant_new ("(s)", args[0] ? args[0] : ""),
                    "leadership handed over");
}

static int
run_add (char **args)
{
  return cmd_admin ("AddMember", g_variant_new ("(ssb)", args[0], args[1], !opt_learner),
                    opt_learner ? "learner added" : "member added");
}

static int
run_remove (char **args)
{
  return cmd_admin ("RemoveMember", g_variant_new ("(s)", args[0]), "member removed");
}

static int
run_promote (char **args)
{
  return cmd_admin ("PromoteMember", g_variant_new ("(s)", args[0]), "member promoted");
}

static int
run_set_address (char **args)
{
  return cmd_admin ("SetMemberAddress", g_variant_new ("(ss)", args[0], args[1]), "address set");
}

static const Command commands[] = {
  { "status", "", run_status },
  { "leader", "", run_leader },
  { "get", "KEY", run_get },
  { "set", "KEY VALUE", run_set },
  { "del", "KEY", run_del },
  { "cas", "KEY REVISION VALUE", run_cas },
  { "ls", "[PREFIX]", run_ls },
  { "watch", "[PREFIX]", run_watch },
  { "transfer", "[NODE]", run_transfer },
  { "members add", "NAME HOST:PORT", run_add },
  { "members remove", "NAME", run_remove },
  { "members promote", "NAME", run_promote },
  { "members set-address", "NAME HOST:PORT", run_set_address },
};

static int usage_error (const char *format, ...) G_GNUC_PRINTF (1, 2);

/* One line saying what is wrong, one saying where the rest is. */
static int
usage_error (const char *format, ...)
{
  g_autofree char *what = NULL;
  va_list args;

  va_start (args, format);
  what = g_strdup_vprintf (format, args);
  va_end (args);
  g_printerr ("sparrowctl: %s\nsee sparrowctl --help\n", what);
  return EXIT_USAGE;
}

/* The command argv (after the options) names, with its arguments checked,
 * or NULL after a usage error; *args points at the arguments. */
static const Command *
parse_command (int argc, char **argv, char ***args, int *status)
{
  const Command *command = NULL;
  g_auto (GStrv) params = NULL;
  guint n_words = 0, required = 0, n;

  *status = EXIT_USAGE;
  if (argc < 1)
    {
      usage_error ("missing COMMAND");
      return NULL;
    }
  for (gsize i = 0; i < G_N_ELEMENTS (commands) && !command; i++)
    {
      g_auto (GStrv) words = g_strsplit (commands[i].words, " ", 2);

      if (g_str_equal (words[0], argv[0])
          && (!words[1] || (argc > 1 && g_str_equal (words[1], argv[1]))))
        {
          command = &commands[i];
          n_words = g_strv_length (words);
        }
    }
  if (!command && g_str_equal (argv[0], "members"))
    {
      if (argc < 2)
        usage_error ("members: missing add, remove, promote or set-address");
      else
        usage_error ("members: unknown \"%s\": expected add, remove, promote or set-address",
                     argv[1]);
      return NULL;
    }
  if (!command)
    {
      usage_error ("unknown command \"%s\"", argv[0]);
      return NULL;
    }

  /* "" splits into no parameters */
  params = g_strsplit (command->params, " ", -1);
  n = argc - n_words;
  for (guint i = 0; params[i]; i++)
    if (params[i][0] != '[')
      required++;
  if (n < required)
    {
      usage_error ("%s: missing %s", command->words, params[n]);
      return NULL;
    }
  if (n > g_strv_length (params))
    {
      usage_error ("%s: unexpected argument \"%s\" (usage: sparrowctl %s%s%s)", command->words,
                   argv[n_words + g_strv_length (params)], command->words,
                   *command->params ? " " : "", command->params);
      return NULL;
    }
  if (command->run == run_cas
      && !g_ascii_string_to_unsigned (argv[n_words + 1], 10, 0, G_MAXUINT64, NULL, NULL))
    {
      usage_error ("cas: REVISION: expected a number, got \"%s\"", argv[n_words + 1]);
      return NULL;
    }
  *args = argv + n_words;
  *status = EXIT_OK;
  return command;
}

int
main (int argc, char **argv)
{
  gboolean version = FALSE;
  GOptionEntry entries[]
      = { { "json", 'j', 0, G_OPTION_ARG_NONE, &opt_json, "Print JSON", NULL },
          { "stale", 0, 0, G_OPTION_ARG_NONE, &opt_stale,
            "Reads: answer from this node's copy, even if not the leader", NULL },
          { "learner", 0, 0, G_OPTION_ARG_NONE, &opt_learner,
            "members add: add as a non-voting learner", NULL },
          { "version", 0, 0, G_OPTION_ARG_NONE, &version, "Print the version and exit", NULL },
          { NULL } };
  g_autoptr (GOptionContext) context = g_option_context_new ("COMMAND [ARGS…]");
  g_autoptr (GError) error = NULL;
  const Command *command;
  char **args = NULL;
  int status;

  setlocale (LC_ALL, "");
  g_option_context_add_main_entries (context, entries, NULL);
  g_option_context_set_summary (
      context, "Commands:\n"
               "  status                      this node's view of the cluster\n"
               "  leader                      the leader's name and address\n"
               "  members add NAME HOST:PORT  add a member (--learner: non-voting)\n"
               "  members remove NAME         remove a member\n"
               "  members promote NAME        make a caught-up learner a voter\n"
               "  members set-address NAME HOST:PORT\n"
               "                              where the others reach a (stopped) member\n"
               "  transfer [NODE]             hand leadership over (on any member)\n"
               "  get KEY                     a key's value (--stale: this node's copy)\n"
               "  set KEY VALUE               write a key\n"
               "  del KEY                     delete a key\n"
               "  cas KEY REVISION VALUE      write if the key is still at REVISION\n"
               "  ls [PREFIX]                 list keys\n"
               "  watch [PREFIX]              print changes until interrupted; waits for\n"
               "                              sparrowd and follows it across restarts");
  g_option_context_set_description (
      context, "sparrowctl talks to the sparrowd of this host on the system bus\n"
               "($DBUS_SYSTEM_BUS_ADDRESS), and never starts it: a stopped node stays stopped.\n"
               "\n"
               "Exit status: 0 done, 1 failed, 2 usage, 3 not the leader or no quorum (retry on\n"
               "the leader), 4 not found, 5 conflict, 6 sparrowd not running.");
  if (!g_option_context_parse (context, &argc, &argv, &error))
    return usage_error ("%s", error->message);
  if (version)
    {
      g_print ("sparrowctl %s\n", SPARROW_VERSION);
      return EXIT_OK;
    }
  /* Every mistake on the command line is told before the bus is tried. */
  command = parse_command (argc - 1, argv + 1, &args, &status);
  if (!command)
    return status;

  bus = g_bus_get_sync (G_BUS_TYPE_SYSTEM, NULL, &error);
  if (!bus)
    {
      g_printerr ("sparrowctl: cannot reach the system bus: %s\n", error->message);
      return EXIT_UNREACHABLE;
    }
  return command->run (args);
}
