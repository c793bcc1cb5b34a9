/* A compromised member for the tests: a real node (the configuration, the
 * transport with its certificate, durable storage) that, once it leads,
 * commits entries nothing checked, as a leader that builds its own would
 * (issue 21).  Built only for the tests, from sp-node-testing.
 *
 *   rogue-node CONFIG
 *
 * Commands on stdin, one a line; arguments are C-escaped (g_strcompress),
 * so "\n" is a newline inside an argument:
 *   member NAME ADDRESS   a member record as a NORMAL entry
 *   key KEY               a write of KEY = "v"
 *   set KEY VALUE         a write that passes every rule
 *   conf NAME ADDRESS     a CONF entry adding NAME as a learner, carrying
 *                         the record NAME ADDRESS
 *   compact NAME ADDRESS KEY   compacts the log into this node's store
 *                         snapshot plus the record NAME ADDRESS and the key
 * Each answers one line on stdout: "ok INDEX" or "error MESSAGE".  Every
 * change of role is said as "role ROLE". */
#include <stdio.h>
#include <string.h>

#include <glib-unix.h>

#include "node-testing.h"

#define STORE_VERSION 1
#define OP_SET        0
#define OP_MEMBER     3

typedef struct
{
  SpNode *node;
  GMainLoop *loop;
} Rogue;

static void say (const char *format, ...) G_GNUC_PRINTF (1, 2);

static void
say (const char *format, ...)
{
  va_list args;

  va_start (args, format);
  vprintf (format, args);
  va_end (args);
  putchar ('\n');
  fflush (stdout);
}

/* The store's command format, built by hand: the store's own builders
 * refuse what this program is for. */
static GBytes *
raw_cmd (guint8 op, const char *key, const char *value)
{
  g_autoptr (GVariant) v = g_variant_ref_sink (
      g_variant_new ("(qysst)", (guint16)STORE_VERSION, op, key, value, (guint64)0));

  return g_variant_get_data_as_bytes (v);
}

/* The node's snapshot with one more member record and one more key. */
static GBytes *
crafted_snapshot (SpNode *node, const char *name, const char *address, const char *key)
{
  g_autoptr (GBytes) real = sp_node_testing_store_snapshot (node);
  g_autoptr (GVariant) v = g_variant_ref_sink (
      g_variant_new_from_bytes (G_VARIANT_TYPE ("(qta(sst)a(ss))"), real, FALSE));
  g_autoptr (GVariantIter) items = NULL;
  g_autoptr (GVariantIter) members = NULL;
  g_autoptr (GVariant) out = NULL;
  GVariantBuilder new_items, new_members;
  const char *k, *val;
  guint64 revision, item_revision;
  guint16 version;

  g_variant_get (v, "(qta(sst)a(ss))", &version, &revision, &items, &members);
  g_variant_builder_init (&new_items, G_VARIANT_TYPE ("a(sst)"));
  while (g_variant_iter_next (items, "(&s&st)", &k, &val, &item_revision))
    g_variant_builder_add (&new_items, "(sst)", k, val, item_revision);
  g_variant_builder_add (&new_items, "(sst)", key, "v", revision);
  g_variant_builder_init (&new_members, G_VARIANT_TYPE ("a(ss)"));
  while (g_variant_iter_next (members, "(&s&s)", &k, &val))
    g_variant_builder_add (&new_members, "(ss)", k, val);
  g_variant_builder_add (&new_members, "(ss)", name, address);
  out = g_variant_ref_sink (
      g_variant_new ("(qta(sst)a(ss))", version, revision, &new_items, &new_members));
  return g_variant_get_data_as_bytes (out);
}

static void
run (Rogue *r, char **argv, guint argc)
{
  g_autoptr (GBytes) data = NULL;
  g_autoptr (GError) error = NULL;
  const char *conf_name = NULL;
  guint64 index = 0;
  gboolean ok;

  if (argc == 3 && g_str_equal (argv[0], "member"))
    data = raw_cmd (OP_MEMBER, argv[1], argv[2]);
  else if (argc == 2 && g_str_equal (argv[0], "key"))
    data = raw_cmd (OP_SET, argv[1], "v");
  else if (argc == 3 && g_str_equal (argv[0], "set"))
    data = raw_cmd (OP_SET, argv[1], argv[2]);
  else if (argc == 3 && g_str_equal (argv[0], "conf"))
    {
      conf_name = argv[1];
      data = raw_cmd (OP_MEMBER, argv[1], argv[2]);
    }
  else if (argc == 4 && g_str_equal (argv[0], "compact"))
    {
      data = crafted_snapshot (r->node, argv[1], argv[2], argv[3]);
      ok = sp_node_testing_compact_raw (r->node, data, &index, &error);
      if (ok)
        say ("ok %" G_GUINT64_FORMAT, index);
      else
        say ("error %s", error->message);
      return;
    }
  else
    {
      say ("error unknown command");
      return;
    }
  if (sp_node_testing_propose_raw (r->node, conf_name, data, &index, &error))
    say ("ok %" G_GUINT64_FORMAT, index);
  else
    say ("error %s", error->message);
}

static gboolean
on_stdin (GIOChannel *channel, GIOCondition condition, gpointer user_data)
{
  Rogue *r = user_data;
  g_autofree char *line = NULL;
  g_auto (GStrv) words = NULL;
  gsize end;

  if (g_io_channel_read_line (channel, &line, NULL, &end, NULL) != G_IO_STATUS_NORMAL)
    {
      g_main_loop_quit (r->loop);
      return G_SOURCE_REMOVE;
    }
  line[end] = '\0';
  words = g_strsplit (line, " ", -1);
  for (guint i = 0; words[i]; i++)
    {
      char *plain = g_strcompress (words[i]);

      g_free (words[i]);
      words[i] = plain;
    }
  run (r, words, g_strv_length (words));
  return G_SOURCE_CONTINUE;
}

static void
on_role (SpNode *node, GParamSpec *pspec, gpointer user_data)
{
  say ("role %s", sp_node_get_role (node));
}

static gboolean
on_terminate (gpointer user_data)
{
  Rogue *r = user_data;

  g_main_loop_quit (r->loop);
  return G_SOURCE_REMOVE;
}

int
main (int argc, char **argv)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (SpConfig) config = NULL;
  g_autoptr (GIOChannel) in = NULL;
  Rogue r = { 0 };

  if (argc != 2)
    {
      g_printerr ("usage: rogue-node CONFIG\n");
      return 2;
    }
  config = sp_config_load (argv[1], NULL, &error);
  if (config)
    r.node = sp_node_new (config, &error);
  if (!r.node || !sp_node_start (r.node, &error))
    {
      g_printerr ("rogue-node: %s\n", error->message);
      g_clear_object (&r.node);
      return 1;
    }
  g_signal_connect (r.node, "notify::role", G_CALLBACK (on_role), NULL);
  on_role (r.node, NULL, NULL);
  in = g_io_channel_unix_new (0);
  g_io_add_watch (in, G_IO_IN | G_IO_HUP, on_stdin, &r);
  g_unix_signal_add (SIGTERM, on_terminate, &r);
  r.loop = g_main_loop_new (NULL, FALSE);
  g_main_loop_run (r.loop);
  g_object_unref (r.node);
  g_main_loop_unref (r.loop);
  return 0;
}
