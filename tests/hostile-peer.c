/* A hostile peer, for the integration tests only: it speaks sparrow's
 * transport (the real one, with a certificate the cluster CA signed) and
 * sends crafted Raft messages a member must not act on.
 *
 *   hostile-peer --name NAME [--id HEX] --cert PEM --key KEY --ca PEM
 *                --target NAME=HOST:PORT... --term T --kinds LIST
 *                [--duration-ms MS]
 *
 * --id claims another id than sp_member_id (NAME).  --kinds (comma
 * separated): vote (forced PreVote and Vote), timeout-now, append,
 * heartbeat (with a transfer notice naming itself), snapshot,
 * transfer-request.  Each is sent to every target at terms T, T + 1 and
 * T + 100, in that order, a TimeoutNow last; the whole set again every
 * 100 ms (the transport redials a closed connection) until --duration-ms
 * has passed.  Exits 0; what the targets did is for the test to read. */
#include <gio/gio.h>
#include <stdlib.h>
#include <string.h>

#include "member-id.h"
#include "transport.h"

typedef struct
{
  guint64 id;
  char *name;
} Target;

static void
on_receive (const SpRaftMsg *m, gpointer user_data)
{
}

static SpRaftMsg *
crafted (SpRaftMsgType type, guint64 from, guint64 to, guint64 term)
{
  SpRaftMsg *m = g_new0 (SpRaftMsg, 1);

  m->type = type;
  m->from = from;
  m->to = to;
  m->term = term;
  m->index = 1000000;
  m->log_term = term;
  m->commit = 1000000;
  switch (type)
    {
      case SP_RAFT_MSG_PREVOTE:
      case SP_RAFT_MSG_VOTE:
        m->force = TRUE;
        break;
      case SP_RAFT_MSG_HEARTBEAT:
        m->force = TRUE;
        m->hint_index = from;
        break;
      case SP_RAFT_MSG_APPEND:
        {
          SpRaftEntry e = { .term = term, .index = m->index + 1, .type = SP_RAFT_ENTRY_NORMAL };

          e.data = g_bytes_new_static ("set hostile yes", 15);
          m->entries = sp_raft_entries_new (1);
          g_array_append_val (m->entries, e);
          break;
        }
      case SP_RAFT_MSG_SNAPSHOT:
        m->snapshot = g_new0 (SpRaftSnapshot, 1);
        m->snapshot->index = 1000000;
        m->snapshot->term = term;
        m->snapshot->conf.voters[m->snapshot->conf.n_voters++] = from;
        m->snapshot->data = g_bytes_new_static ("", 0);
        break;
      case SP_RAFT_MSG_TRANSFER_REQUEST:
        m->context = from;
        break;
      default:
        break;
    }
  return m;
}

static void
send_all (SpTransport *t, guint64 from, GArray *targets, GStrv kinds, guint64 term)
{
  static const struct
  {
    const char *kind;
    SpRaftMsgType types[2];
  } table[] = {
    { "vote", { SP_RAFT_MSG_PREVOTE, SP_RAFT_MSG_VOTE } },
    { "append", { SP_RAFT_MSG_APPEND, SP_RAFT_MSG_N_TYPES } },
    { "heartbeat", { SP_RAFT_MSG_HEARTBEAT, SP_RAFT_MSG_N_TYPES } },
    { "snapshot", { SP_RAFT_MSG_SNAPSHOT, SP_RAFT_MSG_N_TYPES } },
    { "transfer-request", { SP_RAFT_MSG_TRANSFER_REQUEST, SP_RAFT_MSG_N_TYPES } },
    { "timeout-now", { SP_RAFT_MSG_TIMEOUT_NOW, SP_RAFT_MSG_N_TYPES } },
  };
  const guint64 terms[] = { term, term + 1, term + 100 };

  for (guint i = 0; i < targets->len; i++)
    for (guint k = 0; k < G_N_ELEMENTS (table); k++)
      {
        if (!g_strv_contains ((const char *const *)kinds, table[k].kind))
          continue;
        for (guint j = 0; j < G_N_ELEMENTS (terms); j++)
          for (guint n = 0; n < 2 && table[k].types[n] != SP_RAFT_MSG_N_TYPES; n++)
            {
              g_autoptr (SpRaftMsg) m = crafted (table[k].types[n], from,
                                                 g_array_index (targets, Target, i).id, terms[j]);

              sp_transport_send (t, m);
            }
      }
}

static gboolean
on_quit (gpointer data)
{
  *(gboolean *)data = TRUE;
  return G_SOURCE_REMOVE;
}

static void
run_for (guint ms)
{
  gboolean done = FALSE;

  g_timeout_add (ms, on_quit, &done);
  while (!done)
    g_main_context_iteration (NULL, TRUE);
}

int
main (int argc, char **argv)
{
  g_autofree char *name = NULL, *id_hex = NULL, *cert_file = NULL, *key_file = NULL;
  g_autofree char *ca_file = NULL, *kinds_arg = NULL;
  g_auto (GStrv) target_args = NULL;
  gint64 term = 0;
  gint duration_ms = 3000;
  GOptionEntry entries[] = {
    { "name", 0, 0, G_OPTION_ARG_STRING, &name, "name in the hello", "NAME" },
    { "id", 0, 0, G_OPTION_ARG_STRING, &id_hex, "id in the hello (hex)", "HEX" },
    { "cert", 0, 0, G_OPTION_ARG_FILENAME, &cert_file, "certificate", "PEM" },
    { "key", 0, 0, G_OPTION_ARG_FILENAME, &key_file, "its key", "KEY" },
    { "ca", 0, 0, G_OPTION_ARG_FILENAME, &ca_file, "cluster CA", "PEM" },
    { "target", 0, 0, G_OPTION_ARG_STRING_ARRAY, &target_args, "victim", "NAME=HOST:PORT" },
    { "term", 0, 0, G_OPTION_ARG_INT64, &term, "base term", "T" },
    { "kinds", 0, 0, G_OPTION_ARG_STRING, &kinds_arg, "what to send", "LIST" },
    { "duration-ms", 0, 0, G_OPTION_ARG_INT, &duration_ms, "how long", "MS" },
    { NULL },
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("- a hostile sparrow peer (tests)");
  g_autoptr (GError) error = NULL;
  g_autoptr (GTlsCertificate) cert = NULL;
  g_autoptr (GTlsDatabase) ca = NULL;
  g_autoptr (GArray) targets = g_array_new (FALSE, FALSE, sizeof (Target));
  g_auto (GStrv) kinds = NULL;
  g_autoptr (SpTransport) t = NULL;
  SpTransportOptions opts = { 0 };
  gint64 end;
  guint64 id;

  g_thread_pool_set_max_unused_threads (0);
  g_option_context_add_main_entries (ctx, entries, NULL);
  if (!g_option_context_parse (ctx, &argc, &argv, &error) || !name || !target_args || !kinds_arg)
    {
      g_printerr ("hostile-peer: %s\n", error ? error->message : "--name, --target, --kinds");
      return 2;
    }
  id = id_hex ? g_ascii_strtoull (id_hex, NULL, 16) : sp_member_id (name);
  kinds = g_strsplit (kinds_arg, ",", -1);
  if (cert_file)
    {
      cert = g_tls_certificate_new_from_files (cert_file, key_file, &error);
      if (cert)
        ca = g_tls_file_database_new (ca_file, &error);
      if (!cert || !ca)
        {
          g_printerr ("hostile-peer: %s\n", error->message);
          return 2;
        }
    }
  opts.id = id;
  opts.name = name;
  opts.certificate = cert;
  opts.ca = ca;
  t = sp_transport_new (&opts, on_receive, NULL);
  for (guint i = 0; target_args[i]; i++)
    {
      char *eq = strchr (target_args[i], '=');
      char *colon = eq ? strrchr (eq, ':') : NULL;
      Target target;

      if (!colon)
        {
          g_printerr ("hostile-peer: --target %s: expected NAME=HOST:PORT\n", target_args[i]);
          return 2;
        }
      *eq = *colon = '\0';
      target.name = target_args[i];
      target.id = sp_member_id (target.name);
      sp_transport_set_peer (t, target.id, target.name, eq + 1, atoi (colon + 1));
      g_array_append_val (targets, target);
    }

  end = g_get_monotonic_time () + (gint64)duration_ms * G_TIME_SPAN_MILLISECOND;
  while (g_get_monotonic_time () < end)
    {
      send_all (t, id, targets, kinds, term);
      run_for (100);
    }
  /* Outlive the TLS handshake threads: LeakSanitizer crashes at exit on
   * live threads that ran the dlopen()ed GnuTLS backend. */
  g_clear_pointer (&t, sp_transport_free);
  run_for (800);
  return 0;
}
