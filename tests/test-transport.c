/* The peer transport over real sockets on the loopback (127.0.0.1, and ::1
 * when the machine has it).  Certificates are made at run time with
 * tools/sparrow-certs ($SPARROW_CERTS).  Every wait is bounded. */
#include <check.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "transport.h"
#include "member-id.h"
#include "wire.h"
#include "test-util.h"

#define WAIT_MS 10000

/* ---- logging --------------------------------------------------------------- */

typedef struct
{
  GLogLevelFlags level;
  char *message;
} Logged;

static GPtrArray *logged;
static guint tick;

static void
logged_free (gpointer data)
{
  Logged *l = data;

  g_free (l->message);
  g_free (l);
}

static void
record_log (const char *domain, GLogLevelFlags level, const char *message, gpointer data)
{
  Logged *l = g_new0 (Logged, 1);

  l->level = level & G_LOG_LEVEL_MASK;
  l->message = g_strdup (message);
  g_ptr_array_add (logged, l);
  if (!(level & G_LOG_LEVEL_DEBUG))
    fprintf (stderr, "  [%s] %s\n", level & G_LOG_LEVEL_WARNING ? "warning" : "log", message);
}

/* Everything logged in our domain and glib-networking's (its warnings
 * count too), structured (the transport's peer lines) or not, while a test
 * runs. */
static GLogWriterOutput
record_writer (GLogLevelFlags level, const GLogField *fields, gsize n_fields, gpointer data)
{
  const char *domain = NULL;
  const char *message = NULL;

  for (gsize i = 0; i < n_fields; i++)
    if (g_str_equal (fields[i].key, "GLIB_DOMAIN"))
      domain = fields[i].value;
    else if (g_str_equal (fields[i].key, "MESSAGE"))
      message = fields[i].value;
  if (logged && message
      && (g_strcmp0 (domain, G_LOG_DOMAIN) == 0 || g_strcmp0 (domain, "GLib-Net") == 0))
    {
      record_log (domain, level, message, NULL);
      return G_LOG_WRITER_HANDLED;
    }
  return g_log_writer_default (level, fields, n_fields, data);
}

/* Warnings logged that start with prefix and contain text. */
static guint
warned (const char *prefix, const char *text)
{
  guint n = 0;

  for (guint i = 0; i < logged->len; i++)
    {
      Logged *l = g_ptr_array_index (logged, i);

      if (l->level == G_LOG_LEVEL_WARNING && g_str_has_prefix (l->message, prefix)
          && strstr (l->message, text))
        n++;
    }
  return n;
}

/* Lines logged at any level (rate-limited warnings become debug lines)
 * that start with prefix and contain text. */
static guint
seen (const char *prefix, const char *text)
{
  guint n = 0;

  for (guint i = 0; i < logged->len; i++)
    {
      Logged *l = g_ptr_array_index (logged, i);

      if (g_str_has_prefix (l->message, prefix) && strstr (l->message, text))
        n++;
    }
  return n;
}

/* ---- main loop ------------------------------------------------------------- */

static gboolean
keep_running (gpointer data)
{
  return G_SOURCE_CONTINUE;
}

static gint64
deadline (guint ms)
{
  return g_get_monotonic_time () + ms * G_TIME_SPAN_MILLISECOND;
}

/* One iteration (at most ~10 ms: the tick), unless the deadline passed. */
static gboolean
before (gint64 end)
{
  if (g_get_monotonic_time () >= end)
    return FALSE;
  g_main_context_iteration (NULL, TRUE);
  return TRUE;
}

#define WAIT_UNTIL(cond, ms) for (gint64 end_ = deadline (ms); !(cond) && before (end_);)

static void
run_for (guint ms)
{
  for (gint64 end = deadline (ms); before (end);)
    ;
}

static void
setup (void)
{
  logged = g_ptr_array_new_with_free_func (logged_free);
  g_log_set_always_fatal (G_LOG_FATAL_MASK | G_LOG_LEVEL_CRITICAL);
  tick = g_timeout_add (10, keep_running, NULL);
  /* idle worker threads exit instead of waiting for more work */
  g_thread_pool_set_max_unused_threads (0);
}

static void
teardown (void)
{
  /* Let cancelled operations finish, so leak checkers see them freed. */
  run_for (200);
  g_source_remove (tick);
  g_clear_pointer (&logged, g_ptr_array_unref);
}

/* Also outlives the TLS handshake threads (idle pool threads exit after
 * 0.5 s, none kept: see setup): GCC 12's LeakSanitizer crashes at exit on
 * live threads that ran the dlopen()ed GnuTLS backend. */
static void
teardown_tls (void)
{
  run_for (800);
  teardown ();
}

/* ---- nodes ----------------------------------------------------------------- */

typedef struct
{
  guint64 id;
  SpTransport *t;
  GPtrArray *got; /* of SpRaftMsg */
  gboolean free_on_receive;
} Node;

static void
on_receive (const SpRaftMsg *m, gpointer data)
{
  Node *n = data;

  g_ptr_array_add (n->got, sp_raft_msg_copy (m));
  if (n->free_on_receive)
    g_clear_pointer (&n->t, sp_transport_free);
}

static Node *
node_new (guint64 id, const char *name, GTlsCertificate *cert, GTlsDatabase *ca, guint limit)
{
  Node *n = g_new0 (Node, 1);
  SpTransportOptions opts
      = { .id = id, .name = name, .certificate = cert, .ca = ca, .queue_limit = limit };

  n->id = id;
  n->got = g_ptr_array_new_with_free_func ((GDestroyNotify)sp_raft_msg_free);
  n->t = sp_transport_new (&opts, on_receive, n);
  ck_assert_ptr_nonnull (n->t);
  return n;
}

static void
node_listen (Node *n, const char *host, guint16 port)
{
  g_autoptr (GError) error = NULL;

  ck_assert_msg (sp_transport_listen (n->t, host, port, &error), "listen: %s", error->message);
  ck_assert_uint_ne (sp_transport_local_port (n->t), 0);
  if (port)
    ck_assert_uint_eq (sp_transport_local_port (n->t), port);
}

static void
node_free (Node *n)
{
  g_clear_pointer (&n->t, sp_transport_free);
  g_ptr_array_unref (n->got);
  g_free (n);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC (Node, node_free)

static void
connect_to (Node *from, Node *to, const char *name, const char *host)
{
  sp_transport_set_peer (from->t, to->id, name, host, sp_transport_local_port (to->t));
}

/* ---- messages -------------------------------------------------------------- */

static SpRaftMsg *
msg_new (SpRaftMsgType type, guint64 from, guint64 to)
{
  SpRaftMsg *m = g_new0 (SpRaftMsg, 1);

  m->type = type;
  m->from = from;
  m->to = to;
  m->term = 7;
  return m;
}

static SpRaftMsg *
heartbeat (guint64 from, guint64 to, guint64 context)
{
  SpRaftMsg *m = msg_new (SP_RAFT_MSG_HEARTBEAT, from, to);

  m->commit = 41;
  m->context = context;
  return m;
}

static void
conf_fill (SpRaftConf *conf, guint n_voters, guint64 learner)
{
  for (guint i = 0; i < n_voters; i++)
    conf->voters[conf->n_voters++] = i + 1;
  if (learner)
    conf->learners[conf->n_learners++] = learner;
}

/* Entries after prev: data, a no-op (NULL data), empty data and a
 * configuration. */
static SpRaftMsg *
append (guint64 from, guint64 to, guint64 prev)
{
  SpRaftMsg *m = msg_new (SP_RAFT_MSG_APPEND, from, to);
  SpRaftEntry e = { 0 };

  m->index = prev;
  m->log_term = 6;
  m->commit = prev;
  m->entries = sp_raft_entries_new (4);
  for (guint i = 0; i < 4; i++)
    {
      e.term = 7;
      e.index = prev + 1 + i;
      e.type = i == 3 ? SP_RAFT_ENTRY_CONF : SP_RAFT_ENTRY_NORMAL;
      e.data = i == 2 ? g_bytes_new (NULL, 0) : NULL;
      e.conf = NULL;
      if (i == 0)
        {
          char *command = g_strdup_printf ("set k%" G_GUINT64_FORMAT, prev);

          e.data = g_bytes_new_take (command, strlen (command));
        }
      if (i == 3)
        {
          e.conf = g_rc_box_new0 (SpRaftConf);
          conf_fill (e.conf, 3, 4);
        }
      g_array_append_val (m->entries, e);
    }
  return m;
}

static SpRaftMsg *
snapshot (guint64 from, guint64 to, gsize size)
{
  SpRaftMsg *m = msg_new (SP_RAFT_MSG_SNAPSHOT, from, to);
  guint8 *data = g_malloc (size);

  for (gsize i = 0; i < size; i++)
    data[i] = (guint8)(i * 31 + (i >> 8));
  m->snapshot = g_new0 (SpRaftSnapshot, 1);
  m->snapshot->index = 900;
  m->snapshot->term = 6;
  conf_fill (&m->snapshot->conf, 3, 0);
  m->snapshot->data = g_bytes_new_take (data, size);
  return m;
}

/* A mix of every shape, in an order the receiver must keep. */
static GPtrArray *
sample (guint64 from, guint64 to)
{
  GPtrArray *a = g_ptr_array_new_with_free_func ((GDestroyNotify)sp_raft_msg_free);
  SpRaftMsg *m;

  g_ptr_array_add (a, heartbeat (from, to, 1));
  g_ptr_array_add (a, append (from, to, 10));
  m = msg_new (SP_RAFT_MSG_VOTE, from, to);
  m->index = 14;
  m->log_term = 7;
  m->force = TRUE;
  g_ptr_array_add (a, m);
  g_ptr_array_add (a, snapshot (from, to, 3 * 1024 * 1024 + 17));
  m = msg_new (SP_RAFT_MSG_APPEND_RESP, from, to);
  m->reject = TRUE;
  m->index = 12;
  m->hint_index = 9;
  m->log_term = 5;
  g_ptr_array_add (a, m);
  g_ptr_array_add (a, append (from, to, 14));
  g_ptr_array_add (a, heartbeat (from, to, 2));
  return a;
}

static void
send_all (Node *from, GPtrArray *msgs)
{
  for (guint i = 0; i < msgs->len; i++)
    sp_transport_send (from->t, g_ptr_array_index (msgs, i));
}

static void
assert_got (Node *n, GPtrArray *expected)
{
  ck_assert_uint_eq (n->got->len, expected->len);
  for (guint i = 0; i < expected->len; i++)
    sp_test_assert_msg_eq (g_ptr_array_index (n->got, i), g_ptr_array_index (expected, i));
}

/* Both ways at once; everything arrives intact and in order. */
static void
exchange (Node *a, Node *b)
{
  g_autoptr (GPtrArray) ab = sample (a->id, b->id);
  g_autoptr (GPtrArray) ba = sample (b->id, a->id);

  g_ptr_array_set_size (a->got, 0);
  g_ptr_array_set_size (b->got, 0);
  send_all (a, ab);
  send_all (b, ba);
  WAIT_UNTIL (a->got->len >= ba->len && b->got->len >= ab->len, WAIT_MS);
  run_for (50); /* nothing more may come */
  assert_got (b, ab);
  assert_got (a, ba);
  ck_assert (sp_transport_peer_connected (a->t, b->id));
  ck_assert (sp_transport_peer_connected (b->t, a->id));
}

/* ---- certificates ---------------------------------------------------------- */

static char *certs_dir; /* NULL: openssl is missing */
/* With TLS a member's id is the one of the name its certificate proves. */
static guint64 ALPHA, BETA, GAMMA;

static void
run_certs (const char *dir, const char *name)
{
  const char *script = g_getenv ("SPARROW_CERTS");
  const char *argv[] = { "/bin/sh", script, name ? "node" : "ca", dir, name, NULL };
  g_autoptr (GError) error = NULL;
  g_autofree char *err = NULL;
  int status;

  if (!script)
    ck_abort_msg ("SPARROW_CERTS is not set (path to tools/sparrow-certs)");
  if (!g_spawn_sync (NULL, (char **)argv, NULL, G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL, NULL, &err,
                     &status, &error)
      || !g_spawn_check_wait_status (status, &error))
    ck_abort_msg ("sparrow-certs %s %s: %s\n%s", dir, name ? name : "ca", error->message,
                  err ? err : "");
}

/* Once for the whole suite: a cluster CA with alpha, beta and gamma, and a
 * foreign CA ("other/") with its own beta. */
static void
make_certs (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *other = NULL;
  g_autofree char *openssl = g_find_program_in_path ("openssl");

  if (!openssl)
    return;
  certs_dir = g_dir_make_tmp ("sparrow-transport-XXXXXX", &error);
  ck_assert_msg (certs_dir, "%s", error ? error->message : "");
  other = g_build_filename (certs_dir, "other", NULL);
  run_certs (certs_dir, NULL);
  run_certs (certs_dir, "alpha");
  run_certs (certs_dir, "beta");
  run_certs (certs_dir, "gamma");
  run_certs (certs_dir, "mallory");
  run_certs (other, NULL);
  run_certs (other, "beta");
}

static void
remove_certs (void)
{
  const char *argv[] = { "rm", "-rf", certs_dir, NULL };

  if (certs_dir)
    g_spawn_sync (NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL, NULL,
                  NULL);
  g_clear_pointer (&certs_dir, g_free);
}

static gboolean
have_certs (void)
{
  if (!certs_dir)
    printf ("skipped: openssl not installed\n");
  return certs_dir != NULL;
}

static char *
cert_path (const char *sub, const char *file)
{
  return g_build_filename (certs_dir, sub ? sub : ".", file, NULL);
}

/* Node id with the certificate of cert_name (from the CA in cert_sub) that
 * trusts the CA in ca_sub. */
static Node *
tls_node (guint64 id, const char *name, const char *cert_sub, const char *cert_name,
          const char *ca_sub)
{
  g_autofree char *pem_name = g_strconcat (cert_name, ".pem", NULL);
  g_autofree char *key_name = g_strconcat (cert_name, ".key", NULL);
  g_autofree char *pem = cert_path (cert_sub, pem_name);
  g_autofree char *key = cert_path (cert_sub, key_name);
  g_autofree char *ca_file = cert_path (ca_sub, "ca.pem");
  g_autoptr (GTlsCertificate) cert = NULL;
  g_autoptr (GTlsDatabase) trusted = NULL;
  g_autoptr (GError) error = NULL;
  Node *n;

  cert = g_tls_certificate_new_from_files (pem, key, &error);
  ck_assert_msg (cert, "%s", error ? error->message : "");
  trusted = g_tls_file_database_new (ca_file, &error);
  ck_assert_msg (trusted, "%s", error ? error->message : "");
  n = node_new (id, name, cert, trusted, 0);
  node_listen (n, "127.0.0.1", 0);
  return n;
}

/* ---- tests ----------------------------------------------------------------- */

START_TEST (test_insecure_exchange)
{
  g_autoptr (Node) a = node_new (1, "alpha", NULL, NULL, 0);
  g_autoptr (Node) b = node_new (2, "beta", NULL, NULL, 0);

  ck_assert_uint_eq (warned ("transport of alpha", "insecure"), 1);
  node_listen (a, "127.0.0.1", 0);
  node_listen (b, "127.0.0.1", 0);
  connect_to (a, b, "beta", "127.0.0.1");
  connect_to (b, a, "alpha", "127.0.0.1");
  /* unknown peers are ignored */
  {
    g_autoptr (SpRaftMsg) m = heartbeat (1, 9, 0);

    sp_transport_send (a->t, m);
  }
  exchange (a, b);
  exchange (a, b);
  ck_assert_uint_eq (warned ("", ""), 2); /* the two insecure-mode warnings only */
}
END_TEST

/* Not eager, a transport reads only when asked: messages wait in the
 * socket, none is lost or reordered, and eager again it reads at once. */
START_TEST (test_lazy_reading)
{
  g_autoptr (Node) a = node_new (1, "alpha", NULL, NULL, 0);
  g_autoptr (Node) b = node_new (2, "beta", NULL, NULL, 0);
  g_autoptr (GPtrArray) ab = sample (1, 2);

  node_listen (a, "127.0.0.1", 0);
  node_listen (b, "127.0.0.1", 0);
  connect_to (a, b, "beta", "127.0.0.1");
  connect_to (b, a, "alpha", "127.0.0.1");
  exchange (a, b); /* connected both ways */

  sp_transport_set_eager (b->t, FALSE);
  g_ptr_array_set_size (b->got, 0);
  send_all (a, ab);
  run_for (300);
  ck_assert_uint_eq (b->got->len, 0);
  /* what the socket holds each time (the 3 MiB snapshot fills it: the
   * rest comes as alpha can write it) */
  WAIT_UNTIL ((sp_transport_receive_pending (b->t), b->got->len >= ab->len), WAIT_MS);
  assert_got (b, ab);

  /* a connection set up while not eager is read once it says hello */
  sp_transport_remove_peer (a->t, 2);
  connect_to (a, b, "beta", "127.0.0.1");
  g_ptr_array_set_size (b->got, 0);
  send_all (a, ab);
  WAIT_UNTIL ((sp_transport_receive_pending (b->t), b->got->len >= ab->len), WAIT_MS);
  assert_got (b, ab);

  sp_transport_set_eager (b->t, TRUE);
  g_ptr_array_set_size (b->got, 0);
  send_all (a, ab);
  WAIT_UNTIL (b->got->len >= ab->len, WAIT_MS);
  assert_got (b, ab);
}
END_TEST

START_TEST (test_ipv6_exchange)
{
  g_autoptr (Node) a = node_new (1, "alpha", NULL, NULL, 0);
  g_autoptr (Node) b = node_new (2, "beta", NULL, NULL, 0);
  g_autoptr (GError) error = NULL;

  if (!sp_transport_listen (a->t, "::1", 0, &error))
    {
      printf ("skipped: no IPv6 loopback (::1): %s\n", error->message);
      return;
    }
  node_listen (b, "::1", 0);
  connect_to (a, b, "beta", "::1");
  connect_to (b, a, "alpha", "::1");
  exchange (a, b);
}
END_TEST

START_TEST (test_tls_exchange)
{
  g_autoptr (Node) a = NULL;
  g_autoptr (Node) b = NULL;

  if (!have_certs ())
    return;
  a = tls_node (ALPHA, "alpha", NULL, "alpha", NULL);
  b = tls_node (BETA, "beta", NULL, "beta", NULL);
  connect_to (a, b, "beta", "127.0.0.1");
  connect_to (b, a, "alpha", "127.0.0.1");
  exchange (a, b);
  ck_assert_uint_eq (warned ("", ""), 0);
}
END_TEST

/* beta's certificate from another CA: alpha refuses it.  The impostor
 * trusts the cluster CA (so it gets as far as presenting its certificate);
 * a second one trusts only its own CA and refuses alpha. */
START_TEST (test_tls_foreign_ca)
{
  g_autoptr (Node) a = NULL;
  g_autoptr (Node) impostor = NULL;
  g_autoptr (Node) stranger = NULL;
  g_autofree char *expected = NULL;

  if (!have_certs ())
    return;
  a = tls_node (ALPHA, "alpha", NULL, "alpha", NULL);
  impostor = tls_node (BETA, "beta", "other", "beta", NULL);
  connect_to (impostor, a, "alpha", "127.0.0.1");
  for (guint i = 0; i < 5; i++)
    {
      g_autoptr (SpRaftMsg) m = heartbeat (BETA, ALPHA, i);

      sp_transport_send (impostor->t, m);
    }
  WAIT_UNTIL (warned ("127.0.0.1:", "not issued by the cluster CA"), WAIT_MS);
  ck_assert_uint_ge (warned ("127.0.0.1:", "TLS handshake failed: certificate refused: not issued "
                                           "by the cluster CA"),
                     1);

  stranger = tls_node (BETA, "beta", "other", "beta", "other");
  connect_to (stranger, a, "alpha", "127.0.0.1");
  {
    g_autoptr (SpRaftMsg) m = heartbeat (BETA, ALPHA, 9);

    sp_transport_send (stranger->t, m);
  }
  expected = g_strdup_printf ("alpha (127.0.0.1:%u): TLS handshake failed",
                              sp_transport_local_port (a->t));
  WAIT_UNTIL (warned (expected, "not issued by the cluster CA"), WAIT_MS);
  ck_assert_uint_ge (warned (expected, "not issued by the cluster CA"), 1);
  run_for (300);
  ck_assert_uint_eq (a->got->len, 0);
  ck_assert (!sp_transport_peer_connected (stranger->t, 1));
}
END_TEST

START_TEST (test_tls_impersonation)
{
  g_autoptr (Node) a = NULL;
  g_autoptr (Node) gamma = NULL;
  g_autoptr (Node) claims_beta = NULL;
  g_autoptr (Node) takes_id = NULL;
  g_autofree char *dialed = NULL;
  g_autofree char *bound = NULL;

  if (!have_certs ())
    return;
  a = tls_node (ALPHA, "alpha", NULL, "alpha", NULL);
  gamma = tls_node (GAMMA, "gamma", NULL, "gamma", NULL);

  /* alpha means to reach beta (id 2) but finds gamma there */
  connect_to (a, gamma, "beta", "127.0.0.1");
  sp_transport_set_peer (a->t, BETA, "beta", "127.0.0.1", sp_transport_local_port (gamma->t));
  {
    g_autoptr (SpRaftMsg) m = heartbeat (ALPHA, BETA, 1);

    sp_transport_send (a->t, m);
  }
  dialed = g_strdup_printf ("beta (127.0.0.1:%u)", sp_transport_local_port (gamma->t));
  WAIT_UNTIL (warned (dialed, "not issued to beta"), WAIT_MS);
  ck_assert_uint_ge (warned (dialed, "certificate refused: not issued to beta"), 1);
  ck_assert (!sp_transport_peer_connected (a->t, BETA));

  /* gamma's certificate, but the hello says beta */
  claims_beta = tls_node (BETA, "beta", NULL, "gamma", NULL);
  connect_to (claims_beta, a, "alpha", "127.0.0.1");
  {
    g_autoptr (SpRaftMsg) m = heartbeat (BETA, ALPHA, 2);

    sp_transport_send (claims_beta->t, m);
  }
  WAIT_UNTIL (warned ("127.0.0.1:", "claims to be beta"), WAIT_MS);
  ck_assert_uint_ge (warned ("127.0.0.1:", "certificate refused: claims to be beta"), 1);

  /* gamma's certificate and name, but beta's id */
  takes_id = tls_node (BETA, "gamma", NULL, "gamma", NULL);
  connect_to (takes_id, a, "alpha", "127.0.0.1");
  {
    g_autoptr (SpRaftMsg) m = heartbeat (BETA, ALPHA, 3);

    sp_transport_send (takes_id->t, m);
  }
  bound = g_strdup_printf ("certificate refused: claims the id %016" G_GINT64_MODIFIER
                           "x, gamma's is %016" G_GINT64_MODIFIER "x",
                           BETA, GAMMA);
  WAIT_UNTIL (warned ("127.0.0.1:", bound), WAIT_MS);
  ck_assert_uint_ge (warned ("127.0.0.1:", bound), 1);

  run_for (300);
  ck_assert_uint_eq (a->got->len, 0);
  ck_assert_uint_eq (gamma->got->len, 0);
}
END_TEST

static void
write_frame (GOutputStream *out, GBytes *payload)
{
  guint8 header[4];
  gsize size;
  const void *data = g_bytes_get_data (payload, &size);

  sp_wire_frame_header (size, header);
  g_output_stream_write_all (out, header, sizeof header, NULL, NULL, NULL);
  g_output_stream_write_all (out, data, size, NULL, NULL, NULL);
}

static GBytes *
hello (guint16 version, guint64 id, const char *name)
{
  g_autoptr (GVariant) v = g_variant_ref_sink (g_variant_new ("(qts)", version, id, name));
  g_autoptr (GVariant) le
      = G_BYTE_ORDER == G_BIG_ENDIAN ? g_variant_byteswap (v) : g_variant_ref (v);

  return g_variant_get_data_as_bytes (le);
}

static GBytes *
encoded (SpRaftMsg *m)
{
  g_autoptr (SpRaftMsg) owned = m;

  return sp_wire_msg_to_bytes (owned);
}

static GSocketConnection *
raw_connect (Node *to)
{
  g_autoptr (GSocketClient) client = g_socket_client_new ();
  g_autoptr (GError) error = NULL;
  GSocketConnection *c = g_socket_client_connect_to_host (
      client, "127.0.0.1", sp_transport_local_port (to->t), NULL, &error);

  ck_assert_msg (c, "%s", error ? error->message : "");
  /* reads below must not hang the test */
  g_socket_set_timeout (g_socket_connection_get_socket (c), 5);
  return c;
}

/* From a given loopback address (127.0.0.2...), with a read timeout. */
static GSocketConnection *
raw_connect_from (Node *to, const char *from, guint timeout_s)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GSocket) socket
      = g_socket_new (G_SOCKET_FAMILY_IPV4, G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_TCP, &error);
  g_autoptr (GInetAddress) local = g_inet_address_new_from_string (from);
  g_autoptr (GInetAddress) loopback = g_inet_address_new_loopback (G_SOCKET_FAMILY_IPV4);
  g_autoptr (GSocketAddress) here = g_inet_socket_address_new (local, 0);
  g_autoptr (GSocketAddress) there
      = g_inet_socket_address_new (loopback, sp_transport_local_port (to->t));

  ck_assert_msg (socket, "%s", error ? error->message : "");
  ck_assert_msg (g_socket_bind (socket, here, FALSE, &error), "%s", error ? error->message : "");
  ck_assert_msg (g_socket_connect (socket, there, NULL, &error), "%s", error ? error->message : "");
  g_socket_set_timeout (socket, timeout_s);
  return g_socket_connection_factory_create_connection (socket);
}

/* Whether the peer closed: EOF or a reset, not a timeout (of the socket's
 * read timeout). */
static gboolean
is_closed (GSocketConnection *c)
{
  g_autoptr (GError) error = NULL;
  guint8 byte;
  gssize n = g_input_stream_read (g_io_stream_get_input_stream (G_IO_STREAM (c)), &byte, 1, NULL,
                                  &error);

  return n <= 0 && !g_error_matches (error, G_IO_ERROR, G_IO_ERROR_TIMED_OUT);
}

/* After the peer closed: EOF or a reset, not a timeout. */
static void
assert_closed (GSocketConnection *c)
{
  g_autoptr (GError) error = NULL;
  guint8 byte;
  gssize n = g_input_stream_read (g_io_stream_get_input_stream (G_IO_STREAM (c)), &byte, 1, NULL,
                                  &error);

  ck_assert_int_le (n, 0);
  ck_assert_msg (!g_error_matches (error, G_IO_ERROR, G_IO_ERROR_TIMED_OUT), "still open");
}

START_TEST (test_malformed_frames)
{
  g_autoptr (Node) a = node_new (1, "alpha", NULL, NULL, 0);
  g_autoptr (Node) b = node_new (2, "beta", NULL, NULL, 0);
  g_autoptr (GSocketConnection) raw = NULL;
  g_autoptr (GSocketConnection) bad_hello = NULL;
  g_autoptr (GSocketConnection) old_hello = NULL;
  g_autoptr (GSocketConnection) big_hello = NULL;
  /* past the version check: this build's version, then nonsense */
  const guint8 garbage_data[] = { SP_WIRE_VERSION, 0, 'n', 'o', 't', ' ', 'a', ' ', 'm', 's', 'g' };
  const guint8 junk_data[] = { SP_WIRE_VERSION, 0, 'j', 'u', 'n', 'k' };
  g_autoptr (GBytes) garbage = g_bytes_new_static (garbage_data, sizeof garbage_data);
  g_autoptr (GBytes) junk = g_bytes_new_static (junk_data, sizeof junk_data);
  g_autofree char *old_version = g_strdup_printf ("speaks wire version %u, this build %u",
                                                  SP_WIRE_VERSION + 1, SP_WIRE_VERSION);
  g_autoptr (GBytes) h = hello (SP_WIRE_VERSION, 2, "beta");
  g_autoptr (GBytes) h_old = hello (SP_WIRE_VERSION + 1, 2, "beta");
  g_autoptr (GBytes) empty = g_bytes_new_static ("", 0);
  g_autoptr (GBytes) big = g_bytes_new_take (g_malloc0 (2000), 2000);
  const guint8 oversized[4] = { 0xff, 0xff, 0xff, 0xff };
  GOutputStream *out;

  node_listen (a, "127.0.0.1", 0);
  raw = raw_connect (a);
  out = g_io_stream_get_output_stream (G_IO_STREAM (raw));
  write_frame (out, h);
  write_frame (out, garbage); /* dropped, the connection stays */
  write_frame (out, empty);   /* likewise */
  {
    g_autoptr (GBytes) ok = encoded (heartbeat (2, 1, 7));
    g_autoptr (GBytes) not_from_peer = encoded (heartbeat (3, 1, 8));
    g_autoptr (GBytes) not_to_us = encoded (heartbeat (2, 5, 9));
    g_autoptr (GBytes) late = encoded (heartbeat (2, 1, 10));

    write_frame (out, ok);
    write_frame (out, not_from_peer);
    write_frame (out, not_to_us);
    g_output_stream_write_all (out, oversized, sizeof oversized, NULL, NULL, NULL);
    write_frame (out, late); /* never read: the stream cannot be resynced */
  }
  WAIT_UNTIL (warned ("beta (127.0.0.1:", "at most"), WAIT_MS);
  ck_assert_uint_eq (warned ("beta (127.0.0.1:", "dropping a malformed message"), 2);
  ck_assert_uint_eq (warned ("beta (127.0.0.1:", "dropping a message from 0000000000000003"), 1);
  ck_assert_uint_eq (warned ("beta (127.0.0.1:", "dropping a message"),
                     1); /* once per connection */
  ck_assert_uint_eq (warned ("beta (127.0.0.1:", "frame: 4294967295 bytes"), 1);
  assert_closed (raw);
  ck_assert_uint_eq (a->got->len, 1);
  ck_assert_uint_eq (((SpRaftMsg *)g_ptr_array_index (a->got, 0))->context, 7);

  /* broken hellos close the connection at once */
  bad_hello = raw_connect (a);
  write_frame (g_io_stream_get_output_stream (G_IO_STREAM (bad_hello)), junk);
  old_hello = raw_connect (a);
  write_frame (g_io_stream_get_output_stream (G_IO_STREAM (old_hello)), h_old);
  big_hello = raw_connect (a);
  write_frame (g_io_stream_get_output_stream (G_IO_STREAM (big_hello)), big);
  WAIT_UNTIL (warned ("127.0.0.1:", "malformed hello") && warned ("127.0.0.1:", "wire version")
                  && warned ("127.0.0.1:", "hello of 2000 bytes"),
              WAIT_MS);
  ck_assert_uint_eq (warned ("127.0.0.1:", "malformed hello; closing"), 1);
  ck_assert_uint_eq (warned ("127.0.0.1:", old_version), 1);
  ck_assert_uint_eq (warned ("127.0.0.1:", "hello of 2000 bytes, at most"), 1);
  assert_closed (bad_hello);
  assert_closed (old_hello);
  assert_closed (big_hello);

  /* and a proper peer still gets through */
  node_listen (b, "127.0.0.1", 0);
  connect_to (b, a, "alpha", "127.0.0.1");
  {
    g_autoptr (SpRaftMsg) m = heartbeat (2, 1, 11);

    sp_transport_send (b->t, m);
  }
  WAIT_UNTIL (a->got->len >= 2, WAIT_MS);
  ck_assert_uint_eq (a->got->len, 2);
  ck_assert_uint_eq (((SpRaftMsg *)g_ptr_array_index (a->got, 1))->context, 11);
}
END_TEST

/* Frames arriving a byte at a time are reassembled; a stream ending inside
 * a frame is reported. */
START_TEST (test_split_frames)
{
  g_autoptr (Node) a = node_new (1, "alpha", NULL, NULL, 0);
  g_autoptr (GSocketConnection) raw = NULL;
  g_autoptr (GBytes) h = hello (SP_WIRE_VERSION, 2, "beta");
  g_autoptr (GBytes) hb = encoded (heartbeat (2, 1, 7));
  g_autoptr (GByteArray) all = g_byte_array_new ();
  GOutputStream *out;
  guint8 header[4];

  node_listen (a, "127.0.0.1", 0);
  raw = raw_connect (a);
  out = g_io_stream_get_output_stream (G_IO_STREAM (raw));
  for (guint i = 0; i < 2; i++)
    {
      GBytes *b = i == 0 ? h : hb;

      sp_wire_frame_header (g_bytes_get_size (b), header);
      g_byte_array_append (all, header, sizeof header);
      g_byte_array_append (all, g_bytes_get_data (b, NULL), g_bytes_get_size (b));
    }
  g_byte_array_append (all, header, sizeof header); /* and a frame cut short */
  g_byte_array_append (all, g_bytes_get_data (hb, NULL), 3);
  for (guint i = 0; i < all->len; i++)
    {
      g_output_stream_write_all (out, all->data + i, 1, NULL, NULL, NULL);
      run_for (1);
    }
  WAIT_UNTIL (a->got->len == 1, WAIT_MS);
  ck_assert_uint_eq (a->got->len, 1);
  ck_assert_uint_eq (((SpRaftMsg *)g_ptr_array_index (a->got, 0))->context, 7);
  g_io_stream_close (G_IO_STREAM (raw), NULL, NULL);
  WAIT_UNTIL (warned ("beta (127.0.0.1:", "closed within a frame (3 of"), WAIT_MS);
  ck_assert_uint_eq (warned ("beta (127.0.0.1:", "closed within a frame (3 of"), 1);
}
END_TEST

/* A frame larger than it may be is refused on its header, or on its first
 * bytes: the connection is closed before the rest is sent. */
START_TEST (test_oversized_refused_unbuffered)
{
  g_autoptr (Node) a = node_new (1, "alpha", NULL, NULL, 0);
  g_autoptr (GSocketConnection) anonymous = NULL;
  g_autoptr (GSocketConnection) stranger = NULL;
  g_autoptr (GSocketConnection) member = NULL;
  g_autoptr (GBytes) h_stranger = hello (SP_WIRE_VERSION, 9, "stranger");
  g_autoptr (GBytes) h_beta = hello (SP_WIRE_VERSION, 2, "beta");
  g_autoptr (GBytes) hb = encoded (heartbeat (2, 1, 7));
  guint8 header[4];

  node_listen (a, "127.0.0.1", 0);
  sp_transport_set_peer (a->t, 2, "beta", "127.0.0.1", 1); /* a port nobody listens on */

  /* no hello yet: 16 MiB announced */
  anonymous = raw_connect (a);
  sp_wire_frame_header (SP_WIRE_MAX_FRAME, header);
  g_output_stream_write_all (g_io_stream_get_output_stream (G_IO_STREAM (anonymous)), header,
                             sizeof header, NULL, NULL, NULL);

  /* a hello with an id that is not a peer's, then 1 MiB announced */
  stranger = raw_connect (a);
  write_frame (g_io_stream_get_output_stream (G_IO_STREAM (stranger)), h_stranger);
  sp_wire_frame_header (1024 * 1024, header);
  g_output_stream_write_all (g_io_stream_get_output_stream (G_IO_STREAM (stranger)), header,
                             sizeof header, NULL, NULL, NULL);

  /* a peer's hello, then 1 MiB announced for a heartbeat (its first 16
   * bytes say so): a heartbeat is 88 bytes */
  member = raw_connect (a);
  write_frame (g_io_stream_get_output_stream (G_IO_STREAM (member)), h_beta);
  sp_wire_frame_header (1024 * 1024, header);
  g_output_stream_write_all (g_io_stream_get_output_stream (G_IO_STREAM (member)), header,
                             sizeof header, NULL, NULL, NULL);
  g_output_stream_write_all (g_io_stream_get_output_stream (G_IO_STREAM (member)),
                             g_bytes_get_data (hb, NULL), 16, NULL, NULL, NULL);

  WAIT_UNTIL (warned ("127.0.0.1:", "hello of 16777216 bytes")
                  && warned ("stranger (127.0.0.1:", "not a peer's")
                  && warned ("beta (127.0.0.1:", "not an append or a snapshot"),
              WAIT_MS);
  ck_assert_uint_eq (warned ("127.0.0.1:", "hello of 16777216 bytes, at most 1024; closing"), 1);
  ck_assert_uint_eq (
      warned ("stranger (127.0.0.1:", "frame of 1048576 bytes from an id that is not a peer's"), 1);
  ck_assert_uint_eq (
      warned ("beta (127.0.0.1:", "frame of 1048576 bytes is not an append or a snapshot"), 1);
  assert_closed (anonymous);
  assert_closed (stranger);
  assert_closed (member);
  ck_assert_uint_eq (a->got->len, 0);
}
END_TEST

/* A connection that never says hello is closed after 5 s; a frame begun
 * and not finished, after 10 s. */
START_TEST (test_deadlines)
{
  g_autoptr (Node) a = node_new (1, "alpha", NULL, NULL, 0);
  g_autoptr (GSocketConnection) silent = NULL;
  g_autoptr (GSocketConnection) stalled = NULL;
  g_autoptr (GBytes) h = hello (SP_WIRE_VERSION, 2, "beta");
  g_autoptr (GBytes) hb = encoded (heartbeat (2, 1, 7));
  guint8 header[4];
  gint64 start;
  gint64 hello_closed = 0;
  gint64 frame_closed = 0;

  node_listen (a, "127.0.0.1", 0);
  sp_transport_set_peer (a->t, 2, "beta", "127.0.0.1", 1);
  start = g_get_monotonic_time ();
  silent = raw_connect (a);
  stalled = raw_connect (a);
  write_frame (g_io_stream_get_output_stream (G_IO_STREAM (stalled)), h);
  sp_wire_frame_header (g_bytes_get_size (hb), header);
  g_output_stream_write_all (g_io_stream_get_output_stream (G_IO_STREAM (stalled)), header,
                             sizeof header, NULL, NULL, NULL);
  g_output_stream_write_all (g_io_stream_get_output_stream (G_IO_STREAM (stalled)),
                             g_bytes_get_data (hb, NULL), 10, NULL, NULL, NULL);
  for (gint64 end = deadline (20000); (!hello_closed || !frame_closed) && before (end);)
    {
      if (!hello_closed && warned ("127.0.0.1:", "no hello within 5 s; closing"))
        hello_closed = g_get_monotonic_time ();
      if (!frame_closed && warned ("beta (127.0.0.1:", "a frame not complete within 10 s"))
        frame_closed = g_get_monotonic_time ();
    }
  ck_assert_msg (hello_closed && frame_closed, "still open after 20 s");
  ck_assert_int_ge (hello_closed - start, 5 * G_USEC_PER_SEC);
  ck_assert_int_ge (frame_closed - start, 10 * G_USEC_PER_SEC);
  assert_closed (silent);
  assert_closed (stalled);
  ck_assert_uint_eq (a->got->len, 0);
}
END_TEST

/* Past 64 connections without a hello, each new one closes the oldest:
 * and a member still gets through while strangers hold every slot. */
START_TEST (test_unidentified_cap)
{
  g_autoptr (Node) a = node_new (1, "alpha", NULL, NULL, 0);
  g_autoptr (Node) b = node_new (2, "beta", NULL, NULL, 0);
  g_autoptr (GPtrArray) silent = g_ptr_array_new_with_free_func (g_object_unref);

  node_listen (a, "127.0.0.1", 0);
  node_listen (b, "127.0.0.1", 0);
  for (guint i = 0; i < 64 + 20; i++)
    {
      g_ptr_array_add (silent, raw_connect (a));
      g_socket_set_timeout (g_socket_connection_get_socket (g_ptr_array_index (silent, i)), 1);
      run_for (2);
    }
  WAIT_UNTIL (warned ("127.0.0.1:", "connections without a hello"), WAIT_MS);
  run_for (200);
  /* the oldest 20 closed (10 warnings, then rate-limited), the newest open */
  ck_assert_uint_eq (warned ("127.0.0.1:", "64 connections without a hello, this one the oldest"),
                     10);
  for (guint i = 0; i < 20; i++)
    ck_assert_msg (is_closed (g_ptr_array_index (silent, i)), "connection %u still open", i);
  ck_assert (!is_closed (g_ptr_array_index (silent, silent->len - 1)));

  /* beta dials alpha with every slot taken, and is heard at once */
  connect_to (a, b, "beta", "127.0.0.1");
  connect_to (b, a, "alpha", "127.0.0.1");
  exchange (a, b);
  /* more strangers do not knock a member out: it said hello */
  for (guint i = 0; i < 70; i++)
    {
      g_ptr_array_add (silent, raw_connect (a));
      run_for (2);
    }
  exchange (a, b);
}
END_TEST

/* Plaintext: a second hello with beta's id, from another address, while
 * beta's connection is alive, is refused; beta's messages keep coming. */
START_TEST (test_second_hello_keeps_first)
{
  g_autoptr (Node) a = node_new (1, "alpha", NULL, NULL, 0);
  g_autoptr (Node) b = node_new (2, "beta", NULL, NULL, 0);
  g_autoptr (GSocketConnection) impostor = NULL;
  g_autoptr (GBytes) h = hello (SP_WIRE_VERSION, 2, "beta");

  node_listen (a, "127.0.0.1", 0);
  node_listen (b, "127.0.0.1", 0);
  connect_to (a, b, "beta", "127.0.0.1");
  connect_to (b, a, "alpha", "127.0.0.1");
  exchange (a, b);

  impostor = raw_connect_from (a, "127.0.0.2", 5);
  write_frame (g_io_stream_get_output_stream (G_IO_STREAM (impostor)), h);
  WAIT_UNTIL (warned ("127.0.0.2:", "claims to be beta"), WAIT_MS);
  ck_assert_uint_eq (warned ("127.0.0.2:", "claims to be beta, connected from beta (127.0.0.1:"),
                     1);
  assert_closed (impostor);
  exchange (a, b);
}
END_TEST

/* The name a hello claims goes into every line about the connection: one
 * that is not a member name (a newline, a space) is refused, not echoed. */
START_TEST (test_hello_name_checked)
{
  g_autoptr (Node) a = node_new (1, "alpha", NULL, NULL, 0);
  g_autoptr (GSocketConnection) forger = NULL;
  g_autoptr (GBytes) h = hello (SP_WIRE_VERSION, 2, "beta\nsparrowd: forged line");

  node_listen (a, "127.0.0.1", 0);
  /* beta a peer: its id in another name's hello would be said */
  sp_transport_set_peer (a->t, 2, "beta", "127.0.0.1", 9);
  forger = raw_connect (a);
  write_frame (g_io_stream_get_output_stream (G_IO_STREAM (forger)), h);
  WAIT_UNTIL (seen ("127.0.0.1:", "hello"), WAIT_MS);
  ck_assert_uint_eq (warned ("127.0.0.1:", "hello with a malformed name; closing"), 1);
  for (guint i = 0; i < logged->len; i++)
    ck_assert_ptr_null (strstr (((Logged *)g_ptr_array_index (logged, i))->message, "forged"));
  assert_closed (forger);
}
END_TEST

/* 30 connections with a broken hello from one address: 10 warnings, then
 * one line with the count of the others once the 10 s window is over. */
START_TEST (test_warnings_rate_limited)
{
  g_autoptr (Node) a = node_new (1, "alpha", NULL, NULL, 0);
  const guint8 junk_data[] = { SP_WIRE_VERSION, 0, 'j', 'u', 'n', 'k' };
  g_autoptr (GBytes) junk = g_bytes_new_static (junk_data, sizeof junk_data);

  node_listen (a, "127.0.0.1", 0);
  for (guint i = 0; i < 30; i++)
    {
      g_autoptr (GSocketConnection) c = raw_connect (a);

      write_frame (g_io_stream_get_output_stream (G_IO_STREAM (c)), junk);
      WAIT_UNTIL (seen ("127.0.0.1:", "malformed hello") > i, WAIT_MS);
    }
  ck_assert_uint_eq (seen ("127.0.0.1:", "malformed hello"), 30);
  ck_assert_uint_eq (warned ("127.0.0.1:", "malformed hello"), 10);
  WAIT_UNTIL (warned ("127.0.0.1:", "suppressed"), 15000);
  ck_assert_uint_eq (warned ("127.0.0.1:", "(20 similar messages from 127.0.0.1 suppressed)"), 1);
  ck_assert_uint_eq (warned ("", ""), 1 + 10 + 1); /* insecure mode, 10, the count */
}
END_TEST

START_TEST (test_reconnect)
{
  g_autoptr (Node) a = node_new (1, "alpha", NULL, NULL, 0);
  g_autoptr (Node) b = node_new (2, "beta", NULL, NULL, 0);
  guint16 port;

  node_listen (b, "127.0.0.1", 0);
  port = sp_transport_local_port (b->t);
  connect_to (a, b, "beta", "127.0.0.1");
  {
    g_autoptr (SpRaftMsg) m = heartbeat (1, 2, 100);

    sp_transport_send (a->t, m);
  }
  WAIT_UNTIL (b->got->len == 1, WAIT_MS);
  ck_assert_uint_eq (b->got->len, 1);

  /* the receiver goes away: the sender notices and queues */
  g_clear_pointer (&b, node_free);
  WAIT_UNTIL (!sp_transport_peer_connected (a->t, 2), WAIT_MS);
  ck_assert (!sp_transport_peer_connected (a->t, 2));
  for (guint i = 0; i < 5; i++)
    {
      g_autoptr (SpRaftMsg) m = heartbeat (1, 2, i);

      sp_transport_send (a->t, m);
    }
  run_for (300); /* a few refused redials */
  ck_assert (!sp_transport_peer_connected (a->t, 2));

  b = node_new (2, "beta", NULL, NULL, 0);
  node_listen (b, "127.0.0.1", port);
  WAIT_UNTIL (b->got->len >= 5, WAIT_MS);
  run_for (50);
  ck_assert_uint_eq (b->got->len, 5);
  for (guint i = 0; i < 5; i++)
    ck_assert_uint_eq (((SpRaftMsg *)g_ptr_array_index (b->got, i))->context, i);
  ck_assert (sp_transport_peer_connected (a->t, 2));
}
END_TEST

/* A peer that comes back dials us: we dial it again at once instead of
 * waiting out our backoff, which its absence grew to 1.6 s (redials at
 * 50, 150, 350, 750 and 1550 ms, the next at 3150). */
START_TEST (test_redial_when_dialed)
{
  g_autoptr (Node) a = node_new (1, "alpha", NULL, NULL, 0);
  g_autoptr (Node) b = node_new (2, "beta", NULL, NULL, 0);
  guint16 port;

  node_listen (a, "127.0.0.1", 0);
  node_listen (b, "127.0.0.1", 0);
  port = sp_transport_local_port (b->t);
  connect_to (a, b, "beta", "127.0.0.1");
  {
    g_autoptr (SpRaftMsg) m = heartbeat (1, 2, 1);

    sp_transport_send (a->t, m);
  }
  WAIT_UNTIL (b->got->len == 1, WAIT_MS);
  ck_assert_uint_eq (b->got->len, 1);

  g_clear_pointer (&b, node_free);
  run_for (1800);
  ck_assert (!sp_transport_peer_connected (a->t, 2));

  b = node_new (2, "beta", NULL, NULL, 0);
  node_listen (b, "127.0.0.1", port);
  connect_to (b, a, "alpha", "127.0.0.1");
  {
    g_autoptr (SpRaftMsg) m = heartbeat (2, 1, 2);

    sp_transport_send (b->t, m);
  }
  WAIT_UNTIL (sp_transport_peer_connected (a->t, 2), 800);
  ck_assert_msg (sp_transport_peer_connected (a->t, 2),
                 "still waiting out the backoff after the peer dialed in");
}
END_TEST

START_TEST (test_queue_bound)
{
  g_autoptr (Node) a = node_new (1, "alpha", NULL, NULL, 50);
  g_autoptr (Node) b = node_new (2, "beta", NULL, NULL, 0);
  guint16 port;

  /* a port nobody listens on, for now */
  node_listen (b, "127.0.0.1", 0);
  port = sp_transport_local_port (b->t);
  g_clear_pointer (&b, node_free);

  sp_transport_set_peer (a->t, 2, "beta", "127.0.0.1", port);
  {
    g_autoptr (SpRaftMsg) vote = msg_new (SP_RAFT_MSG_VOTE, 1, 2);

    sp_transport_send (a->t, vote);
  }
  for (guint i = 0; i < 50 + 100; i++)
    {
      g_autoptr (SpRaftMsg) m = heartbeat (1, 2, i);

      sp_transport_send (a->t, m);
    }
  ck_assert_uint_eq (warned ("peer beta", "send queue full (50 messages)"), 1);
  run_for (100);

  b = node_new (2, "beta", NULL, NULL, 0);
  node_listen (b, "127.0.0.1", port);
  WAIT_UNTIL (b->got->len >= 50, WAIT_MS);
  run_for (300);
  /* the vote survives; the oldest heartbeats made room */
  ck_assert_uint_eq (b->got->len, 50);
  ck_assert_int_eq (((SpRaftMsg *)g_ptr_array_index (b->got, 0))->type, SP_RAFT_MSG_VOTE);
  for (guint i = 1; i < 50; i++)
    ck_assert_uint_eq (((SpRaftMsg *)g_ptr_array_index (b->got, i))->context, 100 + i);
}
END_TEST

/* Teardown with operations in flight at every stage, and from inside the
 * receive callback; the sanitizers and valgrind do the checking. */
START_TEST (test_free_in_flight)
{
  g_autoptr (Node) receiver = node_new (2, "beta", NULL, NULL, 0);

  node_listen (receiver, "127.0.0.1", 0);
  receiver->free_on_receive = TRUE;
  for (guint round = 0; round < 6; round++)
    {
      g_autoptr (Node) a = NULL;
      g_autoptr (Node) b = NULL;

      if (certs_dir)
        {
          a = tls_node (ALPHA, "alpha", NULL, "alpha", NULL);
          b = tls_node (BETA, "beta", NULL, "beta", NULL);
        }
      else
        {
          a = node_new (1, "alpha", NULL, NULL, 0);
          b = node_new (2, "beta", NULL, NULL, 0);
          node_listen (b, "127.0.0.1", 0);
        }
      connect_to (a, b, "beta", "127.0.0.1");
      {
        g_autoptr (GPtrArray) msgs = sample (a->id, b->id);

        send_all (a, msgs);
      }
      /* stop after 0, 1, 2... iterations: dialing, handshaking, writing */
      for (guint i = 0; i < round * round; i++)
        g_main_context_iteration (NULL, FALSE);
      if (round % 2)
        g_clear_pointer (&b->t, sp_transport_free);
      else
        g_clear_pointer (&a->t, sp_transport_free);
    }

  /* the receive callback frees its own transport mid-batch */
  {
    g_autoptr (Node) a = node_new (1, "alpha", NULL, NULL, 0);
    g_autoptr (GPtrArray) msgs = sample (1, 2);

    connect_to (a, receiver, "beta", "127.0.0.1");
    send_all (a, msgs);
    WAIT_UNTIL (!receiver->t, WAIT_MS);
    run_for (100);
    ck_assert_ptr_null (receiver->t);
    ck_assert_uint_eq (receiver->got->len, 1);

    /* removing a peer drops its queue; sending to it is then ignored */
    sp_transport_remove_peer (a->t, 2);
    send_all (a, msgs);
    ck_assert (!sp_transport_peer_connected (a->t, 2));
  }
}
END_TEST

/* With TLS, 100 connections that never send a ClientHello and 20 that
 * send part of one hold no handshake thread: a member still connects and
 * delivers at once, well before their 5 s deadline; non-TLS bytes close a
 * connection at once. */
START_TEST (test_tls_silent_flood)
{
  g_autoptr (Node) a = NULL;
  g_autoptr (Node) b = NULL;
  g_autoptr (GPtrArray) held = g_ptr_array_new_with_free_func (g_object_unref);
  g_autoptr (GSocketConnection) plain = NULL;
  const guint8 partial[] = { 22, 3, 1, 2, 0, 1, 0, 1 }; /* a 512-byte record, 3 bytes of it */
  gint64 start;

  if (!have_certs ())
    return;
  a = tls_node (ALPHA, "alpha", NULL, "alpha", NULL);
  b = tls_node (BETA, "beta", NULL, "beta", NULL);
  for (guint i = 0; i < 120; i++)
    {
      GSocketConnection *c = raw_connect (b);

      if (i >= 100)
        g_output_stream_write_all (g_io_stream_get_output_stream (G_IO_STREAM (c)), partial,
                                   sizeof partial, NULL, NULL, NULL);
      g_ptr_array_add (held, c);
      run_for (2);
    }
  plain = raw_connect (b);
  {
    g_autoptr (GBytes) h = hello (SP_WIRE_VERSION, ALPHA, "alpha");

    write_frame (g_io_stream_get_output_stream (G_IO_STREAM (plain)), h);
  }
  /* (logged as debug lines: the 56 evicted used up the warnings) */
  WAIT_UNTIL (seen ("127.0.0.1:", "not a TLS handshake"), WAIT_MS);
  ck_assert_uint_eq (seen ("127.0.0.1:", "not a TLS handshake; closing"), 1);
  assert_closed (plain);

  start = g_get_monotonic_time ();
  connect_to (a, b, "beta", "127.0.0.1");
  connect_to (b, a, "alpha", "127.0.0.1");
  exchange (a, b);
  ck_assert_int_lt (g_get_monotonic_time () - start, 4 * G_USEC_PER_SEC);
  /* the strangers are still held (the hello deadline) or were evicted */
  ck_assert_uint_eq (warned ("127.0.0.1:", "TLS handshake failed"), 0);
}
END_TEST

/* A real ClientHello: what a TLS client writes first, captured from a
 * handshake over memory streams (it fails at once: no answer comes). */
static GBytes *
client_hello (void)
{
  g_autoptr (GInputStream) in = g_memory_input_stream_new ();
  g_autoptr (GOutputStream) out = g_memory_output_stream_new_resizable ();
  g_autoptr (GIOStream) pipe = g_simple_io_stream_new (in, out);
  g_autoptr (GError) error = NULL;
  g_autoptr (GIOStream) tls = g_tls_client_connection_new (pipe, NULL, &error);

  ck_assert_msg (tls, "%s", error ? error->message : "");
  ck_assert (!g_tls_connection_handshake (G_TLS_CONNECTION (tls), NULL, NULL));
  g_output_stream_close (out, NULL, NULL);
  return g_memory_output_stream_steal_as_bytes (G_MEMORY_OUTPUT_STREAM (out));
}

/* Whole ClientHellos then silence: handshakes run, 8 at most at once (a
 * new one closes the oldest), and a member still gets through. */
START_TEST (test_tls_handshake_cap)
{
  g_autoptr (Node) a = NULL;
  g_autoptr (Node) b = NULL;
  g_autoptr (GPtrArray) held = g_ptr_array_new_with_free_func (g_object_unref);
  g_autoptr (GBytes) hello_bytes = NULL;

  if (!have_certs ())
    return;
  hello_bytes = client_hello ();
  ck_assert_uint_gt (g_bytes_get_size (hello_bytes), 5);
  a = tls_node (ALPHA, "alpha", NULL, "alpha", NULL);
  b = tls_node (BETA, "beta", NULL, "beta", NULL);
  for (guint i = 0; i < 12; i++)
    {
      GSocketConnection *c = raw_connect (b);

      g_output_stream_write_all (g_io_stream_get_output_stream (G_IO_STREAM (c)),
                                 g_bytes_get_data (hello_bytes, NULL),
                                 g_bytes_get_size (hello_bytes), NULL, NULL, NULL);
      g_ptr_array_add (held, c);
      run_for (20);
    }
  WAIT_UNTIL (warned ("127.0.0.1:", "TLS handshakes at once") >= 4, WAIT_MS);
  ck_assert_uint_eq (warned ("127.0.0.1:", "8 TLS handshakes at once, this one the oldest"), 4);
  connect_to (a, b, "beta", "127.0.0.1");
  connect_to (b, a, "alpha", "127.0.0.1");
  exchange (a, b);
}
END_TEST

/* Only members get past the hello: alpha admits beta, not mallory, whose
 * certificate the same CA signed; once beta is no member either, its
 * connection closes. */
static gboolean admit_beta = TRUE;

static gboolean
admit_members (guint64 id, const char *name, gpointer data)
{
  return id == BETA && admit_beta;
}

START_TEST (test_tls_admit)
{
  g_autofree char *pem = NULL, *key = NULL, *ca_file = NULL;
  g_autoptr (GTlsCertificate) cert = NULL;
  g_autoptr (GTlsDatabase) trusted = NULL;
  g_autoptr (Node) a = NULL;
  g_autoptr (Node) b = NULL;
  g_autoptr (Node) mallory = NULL;
  SpTransportOptions opts = { .id = 0, .name = "alpha", .admit = admit_members };

  if (!have_certs ())
    return;
  pem = cert_path (NULL, "alpha.pem");
  key = cert_path (NULL, "alpha.key");
  ca_file = cert_path (NULL, "ca.pem");
  cert = g_tls_certificate_new_from_files (pem, key, NULL);
  trusted = g_tls_file_database_new (ca_file, NULL);
  ck_assert (cert && trusted);
  opts.id = ALPHA;
  opts.certificate = cert;
  opts.ca = trusted;
  a = g_new0 (Node, 1);
  a->id = ALPHA;
  a->got = g_ptr_array_new_with_free_func ((GDestroyNotify)sp_raft_msg_free);
  a->t = sp_transport_new (&opts, on_receive, a);
  node_listen (a, "127.0.0.1", 0);
  b = tls_node (BETA, "beta", NULL, "beta", NULL);
  mallory = tls_node (sp_member_id ("mallory"), "mallory", NULL, "mallory", NULL);

  connect_to (mallory, a, "alpha", "127.0.0.1");
  {
    g_autoptr (SpRaftMsg) m = heartbeat (mallory->id, ALPHA, 1);

    sp_transport_send (mallory->t, m);
  }
  WAIT_UNTIL (warned ("127.0.0.1:", "mallory is not a member; closing"), WAIT_MS);
  ck_assert_uint_ge (warned ("127.0.0.1:", "mallory is not a member; closing"), 1);

  connect_to (b, a, "alpha", "127.0.0.1");
  {
    g_autoptr (SpRaftMsg) m = heartbeat (BETA, ALPHA, 2);

    sp_transport_send (b->t, m);
  }
  WAIT_UNTIL (a->got->len == 1, WAIT_MS);
  ck_assert_uint_eq (a->got->len, 1);
  admit_beta = FALSE;
  sp_transport_recheck (a->t);
  ck_assert_uint_ge (warned ("beta (127.0.0.1:", "no longer a member; closing"), 1);
  {
    g_autoptr (SpRaftMsg) m = heartbeat (BETA, ALPHA, 3);

    sp_transport_send (b->t, m);
  }
  WAIT_UNTIL (warned ("127.0.0.1:", "beta is not a member; closing"), WAIT_MS);
  ck_assert_uint_ge (warned ("127.0.0.1:", "beta is not a member; closing"), 1);
  ck_assert_uint_eq (a->got->len, 1);
  admit_beta = TRUE;
}
END_TEST

/* A revoked certificate is refused whoever signed it, either way. */
START_TEST (test_tls_revoked)
{
  g_autofree char *pem = NULL, *key = NULL, *ca_file = NULL, *fp = NULL, *colons = NULL;
  g_autoptr (GTlsCertificate) beta_cert = NULL;
  g_autoptr (GTlsCertificate) cert = NULL;
  g_autoptr (GTlsDatabase) trusted = NULL;
  g_autoptr (Node) a = NULL;
  g_autoptr (Node) b = NULL;
  g_autoptr (GString) upper = g_string_new (NULL);
  const char *revoked[2] = { NULL, NULL };
  SpTransportOptions opts = { .name = "alpha", .revoked = revoked };
  g_autofree char *beta_pem = NULL, *expected = NULL, *normal = NULL;

  if (!have_certs ())
    return;
  beta_pem = cert_path (NULL, "beta.pem");
  beta_cert = g_tls_certificate_new_from_file (beta_pem, NULL);
  ck_assert_ptr_nonnull (beta_cert);
  fp = sp_transport_cert_fingerprint (beta_cert);
  ck_assert_uint_eq (strlen (fp), 64);
  /* as openssl x509 -fingerprint -sha256 prints it */
  for (guint i = 0; fp[i]; i += 2)
    g_string_append_printf (upper, "%s%c%c", i ? ":" : "", g_ascii_toupper (fp[i]),
                            g_ascii_toupper (fp[i + 1]));
  colons = g_strdup (upper->str);
  normal = sp_config_normalize_fingerprint (colons);
  ck_assert_str_eq (normal, fp);
  ck_assert_ptr_null (sp_config_normalize_fingerprint ("abc"));
  revoked[0] = colons;

  pem = cert_path (NULL, "alpha.pem");
  key = cert_path (NULL, "alpha.key");
  ca_file = cert_path (NULL, "ca.pem");
  cert = g_tls_certificate_new_from_files (pem, key, NULL);
  trusted = g_tls_file_database_new (ca_file, NULL);
  opts.id = ALPHA;
  opts.certificate = cert;
  opts.ca = trusted;
  a = g_new0 (Node, 1);
  a->id = ALPHA;
  a->got = g_ptr_array_new_with_free_func ((GDestroyNotify)sp_raft_msg_free);
  a->t = sp_transport_new (&opts, on_receive, a);
  node_listen (a, "127.0.0.1", 0);
  b = tls_node (BETA, "beta", NULL, "beta", NULL);
  connect_to (b, a, "alpha", "127.0.0.1");
  connect_to (a, b, "beta", "127.0.0.1");
  {
    g_autoptr (SpRaftMsg) to_a = heartbeat (BETA, ALPHA, 1);
    g_autoptr (SpRaftMsg) to_b = heartbeat (ALPHA, BETA, 1);

    sp_transport_send (b->t, to_a);
    sp_transport_send (a->t, to_b);
  }
  expected = g_strdup_printf ("certificate refused: revoked (SHA-256 %s)", fp);
  /* accepting beta's connection, and dialing beta */
  WAIT_UNTIL (warned ("127.0.0.1:", expected) && warned ("beta (127.0.0.1:", expected), WAIT_MS);
  ck_assert_uint_ge (warned ("127.0.0.1:", expected), 1);
  ck_assert_uint_ge (warned ("beta (127.0.0.1:", expected), 1);
  run_for (100);
  ck_assert_uint_eq (a->got->len, 0);
  ck_assert_uint_eq (b->got->len, 0);
  ck_assert (!sp_transport_peer_connected (a->t, BETA));
}
END_TEST

int
main (void)
{
  Suite *s;
  TCase *plain = tcase_create ("plain");
  TCase *tls = tcase_create ("tls");
  SRunner *sr;
  int failed;

  g_log_set_writer_func (record_writer, NULL, NULL);
  ALPHA = sp_member_id ("alpha");
  BETA = sp_member_id ("beta");
  GAMMA = sp_member_id ("gamma");
  s = suite_create ("transport");
  tcase_add_checked_fixture (plain, setup, teardown);
  tcase_set_timeout (plain, 60);
  tcase_add_test (plain, test_insecure_exchange);
  tcase_add_test (plain, test_ipv6_exchange);
  tcase_add_test (plain, test_lazy_reading);
  tcase_add_test (plain, test_malformed_frames);
  tcase_add_test (plain, test_split_frames);
  tcase_add_test (plain, test_reconnect);
  tcase_add_test (plain, test_redial_when_dialed);
  tcase_add_test (plain, test_queue_bound);
  tcase_add_test (plain, test_oversized_refused_unbuffered);
  tcase_add_test (plain, test_deadlines);
  tcase_add_test (plain, test_unidentified_cap);
  tcase_add_test (plain, test_second_hello_keeps_first);
  tcase_add_test (plain, test_hello_name_checked);
  tcase_add_test (plain, test_warnings_rate_limited);
  suite_add_tcase (s, plain);

  tcase_add_unchecked_fixture (tls, make_certs, remove_certs);
  tcase_add_checked_fixture (tls, setup, teardown_tls);
  tcase_set_timeout (tls, 60);
  tcase_add_test (tls, test_tls_exchange);
  tcase_add_test (tls, test_tls_foreign_ca);
  tcase_add_test (tls, test_tls_impersonation);
  tcase_add_test (tls, test_free_in_flight);
  tcase_add_test (tls, test_tls_silent_flood);
  tcase_add_test (tls, test_tls_handshake_cap);
  tcase_add_test (tls, test_tls_admit);
  tcase_add_test (tls, test_tls_revoked);
  suite_add_tcase (s, tls);

  sr = srunner_create (s);
  srunner_run_all (sr, CK_NORMAL);
  failed = srunner_ntests_failed (sr);
  srunner_free (sr);
  return failed == 0 ? 0 : 1;
}
