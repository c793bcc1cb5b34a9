/* Peer-to-peer transport: see transport.h for the contract.
 *
 * Lifecycle.  Every TCP connection, dialed or accepted, is an SpConn.  Each
 * pending asynchronous operation holds a reference to its SpConn; closing
 * one (peer removed, error, sp_transport_free) cancels its GCancellable and
 * clears conn->transport, so a callback that completes later sees a closed
 * connection and only drops its reference.  Nothing asynchronous ever points
 * at the SpTransport or an SpPeer directly.
 *
 * Outgoing: dial (GSocketClient) -> TLS handshake -> hello -> batches of
 * queued frames.  A read source stays attached to notice the peer closing.
 * On any failure the peer is redialed after a backoff.
 * Incoming: accept (our own loop, see on_accepted) -> the ClientHello in
 * full (conn_wait_tls) -> TLS handshake -> hello (who is talking) ->
 * frames, each handed to the receive callback once it decodes and is
 * addressed correctly.  Until the hello a connection is "unidentified":
 * it sits in transport->unidentified, oldest first, and is what gets
 * closed when there are too many (see transport.h for the bounds).
 *
 * I/O.  Once set up, a connection is driven by pollable sources rather than
 * one asynchronous operation (a GTask, a source, wake-ups) per frame: the
 * read source stays attached for the connection's life; each time it fires
 * everything available is read (non-blocking) into a per-connection buffer
 * and every complete frame in it is decoded, until a read comes back short
 * (or WOULD_BLOCK).  A short read drained the socket, and a TLS stream too:
 * a read returns at most one record, GnuTLS reads no further than that
 * record, and a record left unread for lack of room fills the buffer (a
 * full read, so reading goes on).  Sending writes a batch of queued frames,
 * copied into one buffer (one TLS record rather than two per frame), with
 * non-blocking writes; a write source is attached only while the socket is
 * full.  Both sources hold a reference and are destroyed by conn_close.
 *
 * Identity (TLS).  The TLS stack verifies the peer chain against the cluster
 * CA (accept-certificate refuses anything it flags).  The name is checked
 * here, by equality with the certificate's CN or a DNS subjectAltName: when
 * dialing, against the member we meant to reach (right after the
 * handshake); when accepting, against the name in the peer's hello. */
#include "transport.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>

#include "config.h"
#include "member-id.h"
#include "wire.h"

#define SP_QUEUE_LIMIT_DEFAULT 4096
#define SP_BACKOFF_MIN_MS      50
#define SP_BACKOFF_MAX_MS      2000
/* Dialing: connect + handshake. */
#define SP_SETUP_TIMEOUT_MS 10000
/* Accepting: from accept to the hello, TLS handshake included.  A member
 * on a working network needs milliseconds; anything slower holds a slot
 * of the unidentified ones. */
#define SP_HELLO_TIMEOUT_MS 5000
/* Once a frame's first byte is in, the rest must follow within this (a
 * 16 MiB snapshot needs only ~2 MB/s). */
#define SP_FRAME_TIMEOUT_MS 10000
/* Accepted connections that have not said hello yet (TLS handshakes
 * included), or said it with an id that is not a peer's: beyond this, one
 * is closed (unidentified_victim), so a member redialing always gets a
 * slot. */
#define SP_UNIDENTIFIED_MAX 64
/* TLS handshakes of accepted connections at once: each holds a worker
 * thread of GLib's pool (10 threads before it grows, slowly).  Beyond this
 * the oldest is closed. */
#define SP_HANDSHAKES_MAX 8
/* Largest TLS record (a ClientHello must fit one, see conn_wait_tls). */
#define SP_TLS_RECORD_MAX (16384 + 2048)
/* While a ClientHello is incomplete, the socket is looked at this often. */
#define SP_TLS_POLL_MS 50
/* Plaintext: a second connection claiming an id replaces the established
 * one only if that one has been silent this long (or comes from the
 * member's address). */
#define SP_IDLE_REPLACE_MS 5000
/* Warnings about accepted connections, per source address: at most this
 * many per window; the rest are counted and reported once the window ends.
 * At most SP_WARN_SOURCES addresses are tracked, the rest share one entry. */
#define SP_WARN_BURST     10
#define SP_WARN_WINDOW_MS 10000
#define SP_WARN_SOURCES   1024
/* Largest hello accepted: before it, the peer is anonymous. */
#define SP_HELLO_MAX 1024
/* A peer's frame above this must be of a type that may be large (Append,
 * Snapshot): every other message is its header alone, 88 bytes.  Also the
 * largest frame from an id that is not a peer's. */
#define SP_SMALL_FRAME_MAX 1024
#define SP_HELLO_TYPE      "(qts)"
#define SP_BATCH_MAX       64           /* frames per write */
#define SP_BATCH_BYTES     (256 * 1024) /* a write takes no more frames past this */
/* Receive buffer of an identified connection: this much or, while a larger
 * frame comes in, up to that frame (see conn_size_buffer). */
#define SP_READ_CHUNK (16 * 1024)
/* A send buffer larger than this (a large frame) is freed once written. */
#define SP_WRITE_KEEP (2 * SP_BATCH_BYTES)
#define SP_BACKLOG    256 /* pending connections the kernel queues */
/* After a failed accept (out of file descriptors): wait this long. */
#define SP_ACCEPT_RETRY_MS 100
/* Frame type of the hello: it is not a Raft message and is never dropped. */
#define SP_FRAME_HELLO SP_RAFT_MSG_N_TYPES

typedef struct _SpPeer SpPeer;

typedef struct
{
  SpRaftMsgType type;
  guint8 header[4];
  GBytes *payload;
} SpFrame;

typedef struct
{
  grefcount ref;
  SpTransport *transport; /* NULL once closed */
  SpPeer *peer;           /* outgoing connections only; NULL once closed */
  char *address;          /* for log lines */
  GCancellable *cancellable;
  GSocketConnection *socket;
  GIOStream *stream; /* the socket, or the TLS connection over it */
  gulong accept_handler;
  char *refusal;        /* why accept-certificate refused the peer */
  gboolean handshaking; /* a worker thread uses the socket */
  GSource *deadline;    /* until set up */
  GSource *reader;      /* pollable source, from set-up to close */
  guint8 *in;           /* incoming: received bytes, from a frame's start */
  gsize in_len;
  gsize in_size;
  gboolean reading; /* conn_decode is running */
  guint64 peer_id;  /* accepted connections: from the hello, 0 before */
  char *peer_name;  /* ... and the name it claimed */
  gboolean warned_misaddressed;
  char *source;         /* accepted: the remote IP address (rate-limited warnings) */
  GList *unidentified;  /* accepted, until the hello: link in transport->unidentified */
  gint64 last_read;     /* accepted: when bytes last came */
  GSource *frame_timer; /* accepted, identified: while a frame is partly in */
  GSource *writer;      /* outgoing: pollable source while the socket is full */
  guint8 *out;          /* outgoing: the batch being written (frames, back to back) */
  gsize out_len;
  gsize out_done; /* ... of which written */
  gsize out_size;
} SpConn;

struct _SpPeer
{
  SpTransport *transport;
  guint64 id;
  char *name;
  char *host;
  guint16 port;
  GQueue queue;    /* of SpFrame, oldest first */
  guint64 dropped; /* since the last log line about it */
  gint64 drop_logged;
  SpConn *conn; /* being set up or connected */
  gboolean connected;
  gint64 connected_since;
  guint backoff_ms; /* next redial delay; 0 = the minimum */
  GSource *retry;
  gboolean unreachable_logged;
};

struct _SpTransport
{
  guint64 id;
  char *name;
  GTlsCertificate *certificate;
  GTlsDatabase *ca;
  guint queue_limit;
  SpTransportReceive receive;
  void (*read_done) (gpointer user_data);
  SpTransportAdmit admit;
  GHashTable *revoked; /* set of normalized fingerprints */
  gpointer user_data;
  GMainContext *context; /* where timeouts go, like GIO's callbacks */
  GSocketListener *listener;
  GCancellable *accepting; /* carries the transport for on_accepted, cleared by free */
  GSource *accept_retry;
  gint64 accept_logged;
  guint16 port;
  GSocketClient *client;
  GHashTable *peers;    /* &peer->id -> SpPeer */
  GHashTable *incoming; /* set of SpConn, one reference each */
  gboolean eager;       /* incoming connections are read as data comes */
  GQueue unidentified;  /* of SpConn: accepted, no hello yet; oldest first */
  guint handshakes;     /* of accepted connections, in progress */
  GHashTable *warnings; /* source address -> SpWarnings */
  GSource *warn_sweep;  /* while warnings is not empty */
};

typedef struct
{
  gint64 since; /* start of the window */
  guint logged;
  guint64 suppressed;
} SpWarnings;

/* ---- helpers ------------------------------------------------------------- */

static SpFrame *
frame_new (SpRaftMsgType type, GBytes *payload)
{
  SpFrame *f = g_new0 (SpFrame, 1);

  f->type = type;
  f->payload = g_bytes_ref (payload);
  sp_wire_frame_header (g_bytes_get_size (payload), f->header);
  return f;
}

static void
frame_free (gpointer data)
{
  SpFrame *f = data;

  g_bytes_unref (f->payload);
  g_free (f);
}

static GSource *
timeout_new (SpTransport *t, guint ms, GSourceFunc func, gpointer data, GDestroyNotify destroy)
{
  GSource *source = g_timeout_source_new (ms);

  g_source_set_callback (source, func, data, destroy);
  g_source_attach (source, t->context);
  return source;
}

static void
source_clear (GSource **source)
{
  if (*source)
    {
      g_source_destroy (*source);
      g_clear_pointer (source, g_source_unref);
    }
}

static char *
host_port (const char *host, guint16 port)
{
  return strchr (host, ':') ? g_strdup_printf ("[%s]:%u", host, port)
                            : g_strdup_printf ("%s:%u", host, port);
}

/* An RFC 4514 subject ("CN=alpha,O=x") has an attribute CN=name.  Escaped
 * separators are skipped so "O=a\,CN=alpha" does not count. */
static gboolean
subject_has_cn (const char *subject, const char *name)
{
  gsize len = strlen (name);
  const char *p = subject;

  while (*p)
    {
      const char *start = p;

      for (; *p && *p != ',' && *p != '+'; p++)
        if (*p == '\\' && p[1])
          p++;
      if ((gsize)(p - start) == 3 + len && g_ascii_strncasecmp (start, "CN=", 3) == 0
          && memcmp (start + 3, name, len) == 0)
        return TRUE;
      if (*p)
        p++;
    }
  return FALSE;
}

gboolean
sp_transport_cert_has_name (GTlsCertificate *cert, const char *name)
{
  g_autoptr (GPtrArray) dns_names = NULL;
  g_autofree char *subject = NULL;
  gsize len = strlen (name);

  if (!cert)
    return FALSE;
  g_object_get (cert, "dns-names", &dns_names, "subject-name", &subject, NULL);
  for (guint i = 0; dns_names && i < dns_names->len; i++)
    {
      gsize size;
      const char *dns = g_bytes_get_data (g_ptr_array_index (dns_names, i), &size);

      if (size == len && memcmp (dns, name, len) == 0)
        return TRUE;
    }
  return subject && subject_has_cn (subject, name);
}

static char *
describe_cert_errors (GTlsCertificateFlags errors)
{
  static const struct
  {
    GTlsCertificateFlags flag;
    const char *text;
  } reasons[] = {
    { G_TLS_CERTIFICATE_UNKNOWN_CA, "not issued by the cluster CA" },
    { G_TLS_CERTIFICATE_BAD_IDENTITY, "wrong name" },
    { G_TLS_CERTIFICATE_NOT_ACTIVATED, "not valid yet" },
    { G_TLS_CERTIFICATE_EXPIRED, "expired" },
    { G_TLS_CERTIFICATE_REVOKED, "revoked" },
    { G_TLS_CERTIFICATE_INSECURE, "insecure algorithm" },
    { G_TLS_CERTIFICATE_GENERIC_ERROR, "invalid" },
  };
  g_autoptr (GString) s = g_string_new ("certificate refused: ");
  const char *separator = "";

  for (gsize i = 0; i < G_N_ELEMENTS (reasons); i++)
    if (errors & reasons[i].flag)
      {
        g_string_append_printf (s, "%s%s", separator, reasons[i].text);
        separator = ", ";
      }
  return g_string_free (g_steal_pointer (&s), FALSE);
}

/* ---- connections --------------------------------------------------------- */

static SpConn *
conn_new (SpTransport *t, SpPeer *peer, char *address)
{
  SpConn *conn = g_new0 (SpConn, 1);

  g_ref_count_init (&conn->ref);
  conn->transport = t;
  conn->peer = peer;
  conn->address = address;
  conn->cancellable = g_cancellable_new ();
  return conn;
}

static SpConn *
conn_ref (SpConn *conn)
{
  g_ref_count_inc (&conn->ref);
  return conn;
}

static void
conn_unref (gpointer data)
{
  SpConn *conn = data;

  if (!g_ref_count_dec (&conn->ref))
    return;
  g_assert (!conn->transport && !conn->deadline && !conn->accept_handler);
  g_assert (!conn->reader && !conn->writer && !conn->frame_timer && !conn->unidentified);
  g_free (conn->in);
  g_free (conn->source);
  g_free (conn->out);
  g_free (conn->refusal);
  g_clear_object (&conn->stream);
  g_clear_object (&conn->socket);
  g_object_unref (conn->cancellable);
  g_free (conn->address);
  g_free (conn->peer_name);
  g_free (conn);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC (SpConn, conn_unref)

/* Callers hold a reference: closing drops the deadline's. */
static void
conn_unlink_unidentified (SpConn *conn)
{
  if (conn->unidentified)
    {
      g_queue_delete_link (&conn->transport->unidentified, conn->unidentified);
      conn->unidentified = NULL;
    }
}

static void
conn_close (SpConn *conn)
{
  SpTransport *t = conn->transport;

  if (!t)
    return;
  if (conn->handshaking && !conn->peer)
    t->handshakes--;
  conn_unlink_unidentified (conn);
  conn->transport = NULL;
  conn->peer = NULL;
  source_clear (&conn->deadline);
  source_clear (&conn->reader);
  source_clear (&conn->writer);
  source_clear (&conn->frame_timer);
  g_cancellable_cancel (conn->cancellable);
  if (conn->accept_handler)
    g_clear_signal_handler (&conn->accept_handler, conn->stream);
  /* A handshake thread may be polling the socket: on_handshake closes it. */
  if (conn->socket && !conn->handshaking)
    g_io_stream_close (G_IO_STREAM (conn->socket), NULL, NULL);
}

static void peer_lost (SpPeer *peer);
static void peer_flush (SpPeer *peer);
static void conn_read_start (SpConn *conn);
static void conn_established (SpConn *conn);

/* An unreachable peer is logged once, until it answers again. */
static GLogLevelFlags
peer_unreachable_level (SpPeer *peer)
{
  gboolean first = !peer->unreachable_logged;

  peer->unreachable_logged = TRUE;
  return first ? G_LOG_LEVEL_MESSAGE : G_LOG_LEVEL_DEBUG;
}

/* A log line about a peer, with the peer as a journal field (SPARROW_PEER:
 * the address, and the member name once known). */
static void peer_log (const char *address, const char *name, GLogLevelFlags level,
                      const char *format, ...) G_GNUC_PRINTF (4, 5);

static void
peer_log (const char *address, const char *name, GLogLevelFlags level, const char *format, ...)
{
  g_autofree char *text = NULL;
  va_list ap;

  va_start (ap, format);
  text = g_strdup_vprintf (format, ap);
  va_end (ap);
  g_log_structured (G_LOG_DOMAIN, level, "SPARROW_PEER", address ? address : "",
                    "SPARROW_PEER_NAME", name ? name : "", "MESSAGE", "%s%s: %s",
                    address ? "" : "peer ", address ? address : name, text);
}

static gboolean
on_warn_sweep (gpointer data)
{
  SpTransport *t = data;
  gint64 now = g_get_monotonic_time ();
  GHashTableIter iter;
  const char *source;
  SpWarnings *w;

  g_hash_table_iter_init (&iter, t->warnings);
  while (g_hash_table_iter_next (&iter, (gpointer *)&source, (gpointer *)&w))
    {
      if (now - w->since < SP_WARN_WINDOW_MS * G_TIME_SPAN_MILLISECOND)
        continue;
      if (w->suppressed > 0)
        peer_log (source, NULL, G_LOG_LEVEL_WARNING,
                  "(%" G_GUINT64_FORMAT " similar messages from %s suppressed)", w->suppressed,
                  source);
      g_hash_table_iter_remove (&iter);
    }
  if (g_hash_table_size (t->warnings) > 0)
    return G_SOURCE_CONTINUE;
  g_clear_pointer (&t->warn_sweep, g_source_unref);
  return G_SOURCE_REMOVE;
}

/* Warnings about accepted connections: SP_WARN_BURST per source address
 * and window, the others counted (and reported by on_warn_sweep) and
 * logged as debug messages.  Anyone can open connections: the log must
 * not grow with what they send. */
static GLogLevelFlags
conn_warning_level (SpConn *conn)
{
  SpTransport *t = conn->transport;
  const char *source = conn->source;
  SpWarnings *w = g_hash_table_lookup (t->warnings, source);

  if (!w && g_hash_table_size (t->warnings) >= SP_WARN_SOURCES)
    {
      source = "other addresses";
      w = g_hash_table_lookup (t->warnings, source);
    }
  if (!w)
    {
      w = g_new0 (SpWarnings, 1);
      w->since = g_get_monotonic_time ();
      g_hash_table_insert (t->warnings, g_strdup (source), w);
    }
  if (!t->warn_sweep)
    t->warn_sweep = timeout_new (t, SP_WARN_WINDOW_MS, on_warn_sweep, t, NULL);
  if (w->logged < SP_WARN_BURST)
    {
      w->logged++;
      return G_LOG_LEVEL_WARNING;
    }
  w->suppressed++;
  return G_LOG_LEVEL_DEBUG;
}

/* Logs why, closes conn and, when it was dialed, schedules the redial. */
static void conn_fail (SpConn *conn, GLogLevelFlags level, const char *format, ...)
    G_GNUC_PRINTF (3, 4);

static void
conn_fail (SpConn *conn, GLogLevelFlags level, const char *format, ...)
{
  SpTransport *t = conn->transport;
  g_autofree char *why = NULL;
  va_list ap;

  va_start (ap, format);
  why = g_strdup_vprintf (format, ap);
  va_end (ap);
  /* What accepted connections cause is rate-limited, and so is any word
   * about one that never said who it is: the log must not grow with what
   * strangers send. */
  if (!conn->peer
      && (level == G_LOG_LEVEL_WARNING || (level == G_LOG_LEVEL_MESSAGE && conn->unidentified))
      && conn_warning_level (conn) == G_LOG_LEVEL_DEBUG)
    level = G_LOG_LEVEL_DEBUG;
  peer_log (conn->address, conn->peer ? conn->peer->name : NULL, level, "%s", why);
  if (conn->peer)
    {
      peer_lost (conn->peer);
      return;
    }
  conn_close (conn);
  g_hash_table_remove (t->incoming, conn);
}

static gboolean
on_deadline (gpointer data)
{
  SpConn *conn = data;

  source_clear (&conn->deadline);
  if (conn->peer)
    conn_fail (conn, peer_unreachable_level (conn->peer), "not set up within %d s; closing",
               SP_SETUP_TIMEOUT_MS / 1000);
  else
    conn_fail (conn, G_LOG_LEVEL_WARNING, "no hello within %d s; closing",
               SP_HELLO_TIMEOUT_MS / 1000);
  return G_SOURCE_REMOVE;
}

static void
conn_arm_deadline (SpConn *conn, guint ms)
{
  conn->deadline = timeout_new (conn->transport, ms, on_deadline, conn_ref (conn), conn_unref);
}

/* Emitted on a client only when verification found errors, on a server for
 * every client certificate. */
static gboolean
on_accept_certificate (GTlsConnection *tls, GTlsCertificate *cert, GTlsCertificateFlags errors,
                       gpointer data)
{
  SpConn *conn = data;

  /* A dialer checks the name itself after the handshake (exact match,
   * rather than the TLS stack's host name rules). */
  if (conn->peer)
    errors &= ~G_TLS_CERTIFICATE_BAD_IDENTITY;
  if (errors == 0)
    return TRUE;
  g_free (conn->refusal);
  conn->refusal = describe_cert_errors (errors);
  return FALSE;
}

static void
on_handshake (GObject *source, GAsyncResult *result, gpointer data)
{
  g_autoptr (SpConn) conn = data;
  g_autoptr (GError) error = NULL;
  gboolean ok = g_tls_connection_handshake_finish (G_TLS_CONNECTION (source), result, &error);
  GTlsCertificate *cert;

  if (conn->transport && !conn->peer)
    conn->transport->handshakes--;
  conn->handshaking = FALSE;
  if (!conn->transport)
    {
      g_io_stream_close (G_IO_STREAM (conn->socket), NULL, NULL);
      return;
    }
  g_clear_signal_handler (&conn->accept_handler, conn->stream);
  if (!ok)
    {
      conn_fail (conn, G_LOG_LEVEL_WARNING, "TLS handshake failed: %s",
                 conn->refusal ? conn->refusal : error->message);
      return;
    }
  cert = g_tls_connection_get_peer_certificate (G_TLS_CONNECTION (conn->stream));
  if (g_hash_table_size (conn->transport->revoked) > 0)
    {
      g_autofree char *fp = sp_transport_cert_fingerprint (cert);

      if (g_hash_table_contains (conn->transport->revoked, fp))
        {
          conn_fail (conn, G_LOG_LEVEL_WARNING,
                     "certificate refused: revoked (SHA-256 %s); closing", fp);
          return;
        }
    }
  if (!conn->peer)
    {
      conn_read_start (conn); /* the hello */
      return;
    }

  if (!sp_transport_cert_has_name (cert, conn->peer->name))
    {
      conn_fail (conn, G_LOG_LEVEL_WARNING, "certificate refused: not issued to %s",
                 conn->peer->name);
      return;
    }
  conn_established (conn);
}

/* Accepted: counts the handshake, closing the oldest one in progress when
 * SP_HANDSHAKES_MAX are. */
static void
conn_take_handshake_slot (SpConn *conn)
{
  SpTransport *t = conn->transport;

  if (t->handshakes >= SP_HANDSHAKES_MAX)
    for (GList *l = t->unidentified.head; l; l = l->next)
      if (((SpConn *)l->data)->handshaking)
        {
          conn_fail (l->data, G_LOG_LEVEL_WARNING,
                     "%d TLS handshakes at once, this one the oldest; closing", SP_HANDSHAKES_MAX);
          break;
        }
  t->handshakes++;
}

/* Wraps conn->socket in TLS (either side) and starts the handshake. */
static void
conn_start_tls (SpConn *conn)
{
  SpTransport *t = conn->transport;
  g_autoptr (GError) error = NULL;
  GIOStream *tls;

  if (conn->peer)
    {
      g_autoptr (GSocketConnectable) identity
          = g_network_address_new (conn->peer->name, conn->peer->port);

      tls = g_tls_client_connection_new (G_IO_STREAM (conn->socket), identity, &error);
    }
  else
    {
      tls = g_tls_server_connection_new (G_IO_STREAM (conn->socket), t->certificate, &error);
      if (tls)
        g_object_set (tls, "authentication-mode", G_TLS_AUTHENTICATION_REQUIRED, NULL);
    }
  if (!tls)
    {
      conn_fail (conn, G_LOG_LEVEL_WARNING, "cannot start TLS: %s", error->message);
      return;
    }
  g_clear_object (&conn->stream);
  conn->stream = tls;
  g_tls_connection_set_certificate (G_TLS_CONNECTION (tls), t->certificate);
  g_tls_connection_set_database (G_TLS_CONNECTION (tls), t->ca);
  /* Frames are length-prefixed, so a truncation is seen anyway; and
   * connections are torn down without a close_notify (never blocking). */
  g_tls_connection_set_require_close_notify (G_TLS_CONNECTION (tls), FALSE);
  conn->accept_handler
      = g_signal_connect (tls, "accept-certificate", G_CALLBACK (on_accept_certificate), conn);
  if (!conn->peer)
    conn_take_handshake_slot (conn);
  conn->handshaking = TRUE;
  g_tls_connection_handshake_async (G_TLS_CONNECTION (tls), G_PRIORITY_DEFAULT, conn->cancellable,
                                    on_handshake, conn_ref (conn));
}

/* ---- receiving ----------------------------------------------------------- */

/* The identified incoming connection from id, if any. */
static SpConn *
conn_with_id (SpTransport *t, guint64 id)
{
  GHashTableIter iter;
  SpConn *conn;

  g_hash_table_iter_init (&iter, t->incoming);
  while (g_hash_table_iter_next (&iter, (gpointer *)&conn, NULL))
    if (conn->peer_id == id)
      return conn;
  return NULL;
}

/* Whether conn comes from peer's address: its configured address, or the
 * one we reached it at (a host name). */
static gboolean
conn_from_peer (SpConn *conn, SpPeer *peer)
{
  g_autoptr (GInetAddress) from = g_inet_address_new_from_string (conn->source);
  g_autoptr (GInetAddress) host = g_inet_address_new_from_string (peer->host);
  g_autoptr (GSocketAddress) dialed = NULL;

  if (!from)
    return FALSE;
  if (host)
    return g_inet_address_equal (from, host);
  if (!peer->connected)
    return FALSE;
  dialed = g_socket_connection_get_remote_address (peer->conn->socket, NULL);
  return G_IS_INET_SOCKET_ADDRESS (dialed)
         && g_inet_address_equal (
             from, g_inet_socket_address_get_address (G_INET_SOCKET_ADDRESS (dialed)));
}

/* A member dials again when its connection died, perhaps without a word
 * reaching us (reboot), so a new connection with its id replaces the old
 * one.  With TLS the certificate proves the id.  In plaintext anyone can
 * claim it: the new one must come from the member's address, or the old
 * one must have been silent for SP_IDLE_REPLACE_MS. */
static gboolean
conn_may_replace (SpConn *conn, SpConn *old, SpPeer *peer)
{
  if (conn->transport->certificate)
    return TRUE;
  if (g_get_monotonic_time () - old->last_read >= SP_IDLE_REPLACE_MS * G_TIME_SPAN_MILLISECOND)
    return TRUE;
  return peer && conn_from_peer (conn, peer);
}

static void peer_dial (SpPeer *peer);

static void
conn_hello (SpConn *conn, GBytes *bytes)
{
  SpTransport *t = conn->transport;
  g_autoptr (GVariant) v = NULL;
  g_autoptr (GPtrArray) stale = g_ptr_array_new ();
  gsize size;
  const guint8 *p = g_bytes_get_data (bytes, &size);
  guint16 version;
  guint64 id;
  const char *name;
  SpPeer *known;
  GHashTableIter iter;
  SpConn *other;
  char *address;

  if (size < 2)
    {
      conn_fail (conn, G_LOG_LEVEL_WARNING, "malformed hello; closing");
      return;
    }
  version = p[0] | (guint16)(p[1] << 8);
  if (version != SP_WIRE_VERSION)
    {
      conn_fail (conn, G_LOG_LEVEL_WARNING, "speaks wire version %u, this build %u; closing",
                 version, SP_WIRE_VERSION);
      return;
    }
  v = g_variant_ref_sink (g_variant_new_from_bytes (G_VARIANT_TYPE (SP_HELLO_TYPE), bytes, FALSE));
  if (!g_variant_is_normal_form (v))
    {
      conn_fail (conn, G_LOG_LEVEL_WARNING, "malformed hello; closing");
      return;
    }
  if (G_BYTE_ORDER == G_BIG_ENDIAN)
    {
      GVariant *swapped = g_variant_byteswap (v);

      g_variant_unref (v);
      v = swapped;
    }
  g_variant_get (v, "(qt&s)", NULL, &id, &name);
  /* The name goes into every line about this connection: a member name
   * or nothing (not echoed, it may be anything). */
  if (!sp_config_valid_name (name))
    {
      conn_fail (conn, G_LOG_LEVEL_WARNING, "hello with a malformed name; closing");
      return;
    }

  if (id == SP_RAFT_NONE || id == t->id)
    {
      conn_fail (conn, G_LOG_LEVEL_WARNING, "hello claims id %016" G_GINT64_MODIFIER "x; closing",
                 id);
      return;
    }
  if (t->certificate
      && !sp_transport_cert_has_name (
          g_tls_connection_get_peer_certificate (G_TLS_CONNECTION (conn->stream)), name))
    {
      conn_fail (conn, G_LOG_LEVEL_WARNING,
                 "certificate refused: claims to be %s but the certificate is not issued to it; "
                 "closing",
                 name);
      return;
    }
  if (t->certificate && id != sp_member_id (name))
    {
      conn_fail (conn, G_LOG_LEVEL_WARNING,
                 "certificate refused: claims the id %016" G_GINT64_MODIFIER
                 "x, %s's is %016" G_GINT64_MODIFIER "x; closing",
                 id, name, sp_member_id (name));
      return;
    }
  known = g_hash_table_lookup (t->peers, &id);
  if (known && !g_str_equal (known->name, name))
    {
      conn_fail (conn, G_LOG_LEVEL_WARNING,
                 "claims to be %s with the id %016" G_GINT64_MODIFIER "x of %s; closing", name, id,
                 known->name);
      return;
    }

  other = conn_with_id (t, id);
  if (other && !conn_may_replace (conn, other, known))
    {
      conn_fail (conn, G_LOG_LEVEL_WARNING,
                 "claims to be %s, connected from %s and not idle; closing (insecure mode: "
                 "peers are not authenticated)",
                 name, other->address);
      return;
    }

  if (t->admit && !t->admit (id, name, t->user_data))
    {
      conn_fail (conn, G_LOG_LEVEL_WARNING, "%s is not a member; closing", name);
      return;
    }

  source_clear (&conn->deadline);
  /* With TLS the certificate proves an admitted member, perhaps one this
   * node has no address of yet: a new leader whose entries would teach us
   * its address.  In plaintext an id that is not a peer's stays among the
   * unidentified: evicted like them, and held to small frames. */
  if (known || t->certificate)
    conn_unlink_unidentified (conn);
  conn->peer_id = id;
  conn->peer_name = g_strdup (name);
  address = g_strdup_printf ("%s (%s)", name, conn->address);
  g_free (conn->address);
  conn->address = address;
  g_debug ("%s: connected", conn->address);

  /* A peer dials again only when its previous connection died, perhaps
   * without a word reaching us (reboot): drop that one. */
  g_hash_table_iter_init (&iter, t->incoming);
  while (g_hash_table_iter_next (&iter, (gpointer *)&other, NULL))
    if (other != conn && other->peer_id == id)
      g_ptr_array_add (stale, other);
  for (guint i = 0; i < stale->len; i++)
    {
      other = g_ptr_array_index (stale, i);
      conn_close (other);
      g_hash_table_remove (t->incoming, other);
    }
  /* It dials because it just started: ours to it waits out a backoff of
   * up to SP_BACKOFF_MAX_MS, during which nothing of ours reaches it (a
   * new leader's lease waited on it, or lapsed).  Dial it now. */
  if (known && known->retry && (t->certificate || conn_from_peer (conn, known)))
    {
      source_clear (&known->retry);
      known->backoff_ms = 0;
      peer_dial (known);
    }
}

static void
conn_deliver (SpConn *conn, GBytes *bytes)
{
  SpTransport *t = conn->transport;
  g_autoptr (GError) error = NULL;
  g_autoptr (SpRaftMsg) m = sp_wire_msg_from_bytes (bytes, &error);

  if (!m)
    {
      peer_log (conn->address, NULL, conn_warning_level (conn), "dropping a malformed message: %s",
                error->message);
      return;
    }
  if (m->from != conn->peer_id || m->to != t->id)
    {
      if (!conn->warned_misaddressed)
        peer_log (conn->address, NULL, conn_warning_level (conn),
                  "dropping a message from %016" G_GINT64_MODIFIER "x to %016" G_GINT64_MODIFIER
                  "x on this connection (further ones are dropped silently)",
                  m->from, m->to);
      conn->warned_misaddressed = TRUE;
      return;
    }
  /* May free the transport; conn stays valid (the caller's reference). */
  t->receive (m, t->user_data);
}

/* Checks the header at p; the connection is closed when it is refused. */
static gboolean
conn_check_header (SpConn *conn, const guint8 *p, guint32 *len)
{
  g_autoptr (GError) error = NULL;

  if (!sp_wire_frame_parse_header (p, len, &error))
    {
      conn_fail (conn, G_LOG_LEVEL_WARNING, "%s; closing", error->message);
      return FALSE;
    }
  if (conn->peer_id == 0 && *len > SP_HELLO_MAX)
    {
      conn_fail (conn, G_LOG_LEVEL_WARNING, "hello of %u bytes, at most %u; closing", *len,
                 SP_HELLO_MAX);
      return FALSE;
    }
  if (conn->unidentified && *len > SP_SMALL_FRAME_MAX)
    {
      conn_fail (conn, G_LOG_LEVEL_WARNING,
                 "frame of %u bytes from an id that is not a peer's, at most %u; closing", *len,
                 SP_SMALL_FRAME_MAX);
      return FALSE;
    }
  return TRUE;
}

/* A frame of len bytes of which have are in, at p: one larger than
 * SP_SMALL_FRAME_MAX must be, by its first 16 bytes (version and type, see
 * wire.c), an Append or a Snapshot of this version.  Refused (conn closed)
 * before it is buffered. */
static gboolean
conn_check_partial (SpConn *conn, const guint8 *p, guint32 len, gsize have)
{
  guint64 version, type;

  if (len <= SP_SMALL_FRAME_MAX || have < 2 * sizeof (guint64))
    return TRUE;
  memcpy (&version, p, sizeof version);
  memcpy (&type, p + sizeof version, sizeof type);
  version = GUINT64_FROM_LE (version);
  type = GUINT64_FROM_LE (type);
  if (version == SP_WIRE_VERSION && (type == SP_RAFT_MSG_APPEND || type == SP_RAFT_MSG_SNAPSHOT))
    return TRUE;
  conn_fail (conn, G_LOG_LEVEL_WARNING,
             "frame of %u bytes is not an append or a snapshot (at most %u bytes); closing", len,
             SP_SMALL_FRAME_MAX);
  return FALSE;
}

static gboolean
on_frame_timer (gpointer data)
{
  SpConn *conn = data;

  if (conn->in_len > 0
      && g_get_monotonic_time () - conn->last_read < SP_FRAME_TIMEOUT_MS * G_TIME_SPAN_MILLISECOND)
    return G_SOURCE_CONTINUE;
  source_clear (&conn->frame_timer);
  if (conn->in_len > 0)
    conn_fail (conn, G_LOG_LEVEL_WARNING,
               "a frame not complete within %d s of its last bytes; closing",
               SP_FRAME_TIMEOUT_MS / 1000);
  return G_SOURCE_REMOVE;
}

/* Identified connections: a frame begun must keep coming, nothing received
 * for SP_FRAME_TIMEOUT_MS closes it, however large it is (a snapshot over a
 * slow link takes as long as it takes).  A timer checks once a second while
 * one is partly in (rather than a timer per frame: most frames come whole). */
static void
conn_time_frame (SpConn *conn)
{
  if (conn->in_len > 0 && !conn->frame_timer)
    conn->frame_timer
        = timeout_new (conn->transport, 1000, on_frame_timer, conn_ref (conn), conn_unref);
}

/* The receive buffer is its base size (a hello, then a chunk) unless a
 * larger frame is coming in; then it doubles each time it is full, up to
 * that frame: it holds what came, never what a header announced. */
static void
conn_size_buffer (SpConn *conn, gsize frame)
{
  gsize base = conn->peer_id ? SP_READ_CHUNK : 4 + SP_HELLO_MAX;
  gsize size = base;

  if (frame > base)
    size = conn->in_len == conn->in_size ? MIN (frame, MAX (base, 2 * conn->in_size))
                                         : MAX (base, conn->in_size);
  if (size != conn->in_size)
    {
      conn->in = g_realloc (conn->in, size);
      conn->in_size = size;
    }
}

/* Hands on every complete frame in conn->in and keeps the rest (part of a
 * frame) at the start of the buffer, with room for more of it.  Returns
 * FALSE once conn is closed (a refused frame, or by the receive
 * callback). */
static gboolean
conn_decode (SpConn *conn)
{
  gsize start = 0;
  gsize partial = 0;

  while (conn->in_len - start >= 4)
    {
      const guint8 *p = conn->in + start;
      g_autoptr (GBytes) bytes = NULL;
      guint32 len;

      if (!conn_check_header (conn, p, &len))
        return FALSE;
      if (conn->in_len - start - 4 < len)
        {
          if (!conn_check_partial (conn, p + 4, len, conn->in_len - start - 4))
            return FALSE;
          partial = 4 + (gsize)len;
          break;
        }
      start += 4 + (gsize)len;
      if (conn->peer_id == 0)
        {
          /* A copy with a readable zero byte past the end: GLib's
           * normal-form check may read one byte past a cut-short tuple
           * (see record_from_bytes in wire.c). */
          guint8 *copy = g_malloc (len + 1);

          memcpy (copy, p + 4, len);
          copy[len] = 0;
          bytes = g_bytes_new_with_free_func (copy, len, g_free, copy);
          conn_hello (conn, bytes);
        }
      else
        {
          /* A copy: the buffer is reused, and the message may outlive it. */
          bytes = g_bytes_new (p + 4, len);
          conn_deliver (conn, bytes);
        }
      if (!conn->transport)
        return FALSE;
    }

  conn->in_len -= start;
  if (start > 0 && conn->in_len > 0)
    memmove (conn->in, conn->in + start, conn->in_len);
  if (conn->peer_id != 0)
    conn_time_frame (conn);
  conn_size_buffer (conn, partial);
  return TRUE;
}

/* The end of an incoming stream (read returned 0). */
static void
conn_eof (SpConn *conn)
{
  guint32 len;

  if (conn->in_len == 0)
    conn_fail (conn, G_LOG_LEVEL_DEBUG, "closed by the peer");
  else if (conn->in_len < 4)
    conn_fail (conn, G_LOG_LEVEL_WARNING, "closed within a frame header");
  else
    {
      /* conn_decode accepted this header */
      sp_wire_frame_parse_header (conn->in, &len, NULL);
      conn_fail (conn, G_LOG_LEVEL_WARNING,
                 "closed within a frame (%" G_GSIZE_FORMAT " of %u bytes)", conn->in_len - 4, len);
    }
}

/* Peers never write on the connections we dialed: the read source is only
 * there to notice the peer closing. */
static gboolean
on_readable_dialed (SpConn *conn, GPollableInputStream *in)
{
  g_autoptr (GError) error = NULL;
  guint8 scratch[64];
  gssize n = g_pollable_input_stream_read_nonblocking (in, scratch, sizeof scratch, NULL, &error);

  if (n < 0 && g_error_matches (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
    return G_SOURCE_CONTINUE;
  if (n > 0)
    conn_fail (conn, G_LOG_LEVEL_WARNING, "unexpected data from the peer; closing");
  else
    conn_fail (conn, G_LOG_LEVEL_MESSAGE, "connection lost: %s",
               error ? error->message : "closed by the peer");
  return G_SOURCE_REMOVE;
}

/* Reads and hands on what an incoming connection holds; FALSE once it is
 * closed. */
static gboolean
conn_read (SpConn *conn)
{
  GPollableInputStream *in = G_POLLABLE_INPUT_STREAM (g_io_stream_get_input_stream (conn->stream));

  if (!conn->in)
    conn_size_buffer (conn, 0);
  /* Until a short read (see the top of the file).  conn_decode leaves
   * room: what it keeps is less than one frame, and the buffer is either
   * larger than that or grown when full. */
  for (;;)
    {
      g_autoptr (GError) error = NULL;
      gsize room = conn->in_size - conn->in_len;
      gboolean ok;
      gssize n = g_pollable_input_stream_read_nonblocking (in, conn->in + conn->in_len, room, NULL,
                                                           &error);

      if (n < 0 && g_error_matches (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
        return TRUE;
      if (n < 0)
        {
          conn_fail (conn, G_LOG_LEVEL_MESSAGE, "connection lost: %s", error->message);
          return FALSE;
        }
      if (n == 0)
        {
          conn_eof (conn);
          return FALSE;
        }
      conn->in_len += n;
      conn->last_read = g_get_monotonic_time ();
      conn->reading = TRUE;
      ok = conn_decode (conn);
      conn->reading = FALSE;
      if (!ok)
        return FALSE;
      if ((gsize)n < room)
        return TRUE;
    }
}

static gboolean
on_readable (GSocket *socket, GIOCondition condition, gpointer data)
{
  g_autoptr (SpConn) conn = conn_ref (data); /* the callbacks may close it */
  gboolean open;

  if (!conn->transport)
    return G_SOURCE_REMOVE;
  /* A nested main loop run by the receive callback (the daemon runs none)
   * must not touch the buffer under the outer pass: it comes back later. */
  if (conn->reading)
    return G_SOURCE_CONTINUE;
  if (conn->peer)
    return on_readable_dialed (
        conn, G_POLLABLE_INPUT_STREAM (g_io_stream_get_input_stream (conn->stream)));
  open = conn_read (conn);
  /* Closed (or the transport freed) by a callback: the receiver's own
   * pass of the main loop runs its batch. */
  if (open && conn->peer_id != 0 && conn->transport->read_done)
    conn->transport->read_done (conn->transport->user_data);
  if (!open)
    return G_SOURCE_REMOVE;
  /* Set up now (the hello came), and the transport reads only when asked. */
  if (conn->peer_id != 0 && !conn->transport->eager)
    source_clear (&conn->reader);
  return G_SOURCE_CONTINUE;
}

/* Set up (connected, and with TLS handshaken): reading starts.
 *
 * The source watches the socket itself, not the stream's pollable source:
 * that one is a source with a child source (two with TLS), and GLib 2.74
 * removes and re-adds the child's descriptor around every dispatch, each
 * time writing the main context's eventfd (two wake-ups per frame).  A
 * single socket source that may recurse is dispatched without that.  For
 * TLS this is the same readiness the TLS source waits for once the
 * handshake is over (no other operation runs on the connection), and each
 * pass reads until a short read, so no decrypted data is left behind. */
static void
conn_read_start (SpConn *conn)
{
  GInputStream *in = g_io_stream_get_input_stream (conn->stream);

  /* GSocketConnection's and GTlsConnection's streams are pollable. */
  g_assert (G_IS_POLLABLE_INPUT_STREAM (in)
            && g_pollable_input_stream_can_poll (G_POLLABLE_INPUT_STREAM (in)));
  g_assert (!conn->reader);
  conn->reader
      = g_socket_create_source (g_socket_connection_get_socket (conn->socket), G_IO_IN, NULL);
  g_source_set_callback (conn->reader, G_SOURCE_FUNC (on_readable), conn_ref (conn), conn_unref);
  g_source_set_can_recurse (conn->reader, TRUE);
  g_source_attach (conn->reader, conn->transport->context);
}

static void conn_wait_tls (SpConn *conn);

static gboolean
on_tls_poll (gpointer data)
{
  SpConn *conn = data;

  source_clear (&conn->reader);
  conn_wait_tls (conn);
  return G_SOURCE_REMOVE;
}

/* The first TLS record, peeked at: a handshake record of this protocol,
 * all of it in the socket. */
static gboolean
on_tls_readable (GSocket *socket, GIOCondition condition, gpointer data)
{
  SpConn *conn = data;
  guint8 h[5];
  gssize n = recv (g_socket_get_fd (socket), h, sizeof h, MSG_PEEK | MSG_DONTWAIT);
  gsize len;

  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
    return G_SOURCE_CONTINUE;
  if (n <= 0)
    {
      conn_fail (conn, n == 0 ? G_LOG_LEVEL_DEBUG : G_LOG_LEVEL_MESSAGE, "connection lost: %s",
                 n == 0 ? "closed by the peer" : g_strerror (errno));
      return G_SOURCE_REMOVE;
    }
  /* 22: handshake; 3: the major version of TLS 1.x */
  if (h[0] != 22 || (n >= 2 && h[1] != 3))
    {
      conn_fail (conn, G_LOG_LEVEL_WARNING, "not a TLS handshake; closing");
      return G_SOURCE_REMOVE;
    }
  len = n == sizeof h ? (gsize)h[3] << 8 | h[4] : 0;
  if (len > SP_TLS_RECORD_MAX)
    {
      conn_fail (conn, G_LOG_LEVEL_WARNING, "TLS record of %" G_GSIZE_FORMAT " bytes; closing",
                 len);
      return G_SOURCE_REMOVE;
    }
  source_clear (&conn->reader);
  if (n < (gssize)sizeof h || g_socket_get_available_bytes (socket) < (gssize)(sizeof h + len))
    /* The socket stays readable with part of it: look again later. */
    conn->reader
        = timeout_new (conn->transport, SP_TLS_POLL_MS, on_tls_poll, conn_ref (conn), conn_unref);
  else
    conn_start_tls (conn);
  return G_SOURCE_REMOVE;
}

/* Accepted, with TLS.  A handshake holds a worker thread until it is
 * over, so it starts only once the client's first record (its
 * ClientHello) is in: a silent or slow client holds a socket and a slot
 * among the unidentified connections, never a thread. */
static void
conn_wait_tls (SpConn *conn)
{
  conn->reader
      = g_socket_create_source (g_socket_connection_get_socket (conn->socket), G_IO_IN, NULL);
  g_source_set_callback (conn->reader, G_SOURCE_FUNC (on_tls_readable), conn_ref (conn),
                         conn_unref);
  g_source_attach (conn->reader, conn->transport->context);
}

/* The one to close when there are too many: the oldest that has not
 * begun a TLS handshake.  One that has sent a whole ClientHello (or is
 * past the handshake) is likelier a member; those are bounded apart
 * (SP_HANDSHAKES_MAX, the hello deadline).  Under a flood of new
 * connections, this is what lets a member's handshake finish. */
static SpConn *
unidentified_victim (SpTransport *t)
{
  for (GList *l = t->unidentified.head; l; l = l->next)
    {
      SpConn *conn = l->data;

      if (conn->stream == G_IO_STREAM (conn->socket))
        return conn;
    }
  return t->unidentified.head->data;
}

static void
conn_accepted (SpTransport *t, GSocketConnection *socket)
{
  g_autoptr (GSocketAddress) remote = g_socket_connection_get_remote_address (socket, NULL);
  SpConn *conn;

  while (t->unidentified.length >= SP_UNIDENTIFIED_MAX)
    conn_fail (unidentified_victim (t), G_LOG_LEVEL_WARNING,
               "%d connections without a hello, this one the oldest; closing", SP_UNIDENTIFIED_MAX);
  conn = conn_new (t, NULL,
                   remote ? g_socket_connectable_to_string (G_SOCKET_CONNECTABLE (remote))
                          : g_strdup ("unknown address"));
  conn->source = G_IS_INET_SOCKET_ADDRESS (remote) ? g_inet_address_to_string (
                     g_inet_socket_address_get_address (G_INET_SOCKET_ADDRESS (remote)))
                                                   : g_strdup ("unknown address");
  conn->last_read = g_get_monotonic_time ();
  g_hash_table_add (t->incoming, conn);
  g_queue_push_tail (&t->unidentified, conn);
  conn->unidentified = t->unidentified.tail;
  conn->socket = g_object_ref (socket);
  conn->stream = g_object_ref (G_IO_STREAM (socket));
  conn_arm_deadline (conn, SP_HELLO_TIMEOUT_MS);
  if (t->certificate)
    conn_wait_tls (conn);
  else
    conn_read_start (conn);
}

static void accept_next (SpTransport *t);

static gboolean
on_accept_retry (gpointer data)
{
  SpTransport *t = data;

  g_clear_pointer (&t->accept_retry, g_source_unref);
  accept_next (t);
  return G_SOURCE_REMOVE;
}

/* GSocketService would retry a failed accept at once, forever (out of
 * file descriptors, the listening socket stays readable): here the loop
 * waits a little, and the oldest unidentified connection makes room. */
static void
on_accepted (GObject *source, GAsyncResult *result, gpointer data)
{
  g_autoptr (GCancellable) accepting = data;
  SpTransport *t = g_object_get_data (G_OBJECT (accepting), "transport");
  g_autoptr (GError) error = NULL;
  g_autoptr (GSocketConnection) socket
      = g_socket_listener_accept_finish (G_SOCKET_LISTENER (source), result, NULL, &error);
  gint64 now = g_get_monotonic_time ();

  if (!t)
    return;
  if (socket)
    {
      conn_accepted (t, socket);
      accept_next (t);
      return;
    }
  if (now - t->accept_logged >= SP_WARN_WINDOW_MS * G_TIME_SPAN_MILLISECOND)
    {
      g_warning ("transport of %s: cannot accept a connection: %s", t->name, error->message);
      t->accept_logged = now;
    }
  if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_TOO_MANY_OPEN_FILES) && t->unidentified.head)
    conn_fail (unidentified_victim (t), G_LOG_LEVEL_WARNING,
               "closing to make room for a new connection");
  t->accept_retry = timeout_new (t, SP_ACCEPT_RETRY_MS, on_accept_retry, t, NULL);
}

static void
accept_next (SpTransport *t)
{
  g_socket_listener_accept_async (t->listener, t->accepting, on_accepted,
                                  g_object_ref (t->accepting));
}

/* Stops accepting: a pending accept completes, cancelled, without t. */
static void
accept_stop (SpTransport *t)
{
  if (!t->accepting)
    return;
  g_object_set_data (G_OBJECT (t->accepting), "transport", NULL);
  g_cancellable_cancel (t->accepting);
  g_clear_object (&t->accepting);
  source_clear (&t->accept_retry);
}

/* Accepting on every listening socket (an accept watches the sockets
 * there were when it started). */
static void
accept_restart (SpTransport *t)
{
  accept_stop (t);
  t->accepting = g_cancellable_new ();
  g_object_set_data (G_OBJECT (t->accepting), "transport", t);
  accept_next (t);
}

/* ---- sending ------------------------------------------------------------- */

/* Moves the oldest queued frames (a batch) into conn->out; FALSE when the
 * queue is empty. */
static gboolean
conn_take_batch (SpConn *conn)
{
  SpPeer *peer = conn->peer;
  guint frames = 0;

  conn->out_len = conn->out_done = 0;
  if (conn->out_size > SP_WRITE_KEEP)
    {
      g_clear_pointer (&conn->out, g_free);
      conn->out_size = 0;
    }
  while (!g_queue_is_empty (&peer->queue) && frames < SP_BATCH_MAX
         && conn->out_len < SP_BATCH_BYTES)
    {
      SpFrame *f = g_queue_pop_head (&peer->queue);
      gsize size;
      const void *payload = g_bytes_get_data (f->payload, &size);
      gsize need = conn->out_len + sizeof f->header + size;

      if (need > conn->out_size)
        {
          conn->out_size = MAX (need, MAX (2 * conn->out_size, 4096));
          conn->out = g_realloc (conn->out, conn->out_size);
        }
      memcpy (conn->out + conn->out_len, f->header, sizeof f->header);
      if (size > 0)
        memcpy (conn->out + conn->out_len + sizeof f->header, payload, size);
      conn->out_len = need;
      frame_free (f);
      frames++;
    }
  return frames > 0;
}

static gboolean on_writable (GObject *stream, gpointer data);

/* Writes queued frames, a batch at a time, until the queue is empty or the
 * socket is full (then the write source calls again). */
static void
conn_write (SpConn *conn)
{
  g_autoptr (SpConn) hold = conn_ref (conn); /* conn_fail may drop the peer's */
  GPollableOutputStream *out
      = G_POLLABLE_OUTPUT_STREAM (g_io_stream_get_output_stream (conn->stream));

  while (conn->out_done < conn->out_len || conn_take_batch (conn))
    {
      g_autoptr (GError) error = NULL;
      /* After WOULD_BLOCK, the same bytes again (as a TLS stream wants). */
      gssize n = g_pollable_output_stream_write_nonblocking (
          out, conn->out + conn->out_done, conn->out_len - conn->out_done, NULL, &error);

      if (n == 0 || (n < 0 && g_error_matches (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK)))
        {
          conn->writer = g_pollable_output_stream_create_source (out, NULL);
          g_source_set_callback (conn->writer, G_SOURCE_FUNC (on_writable), conn_ref (conn),
                                 conn_unref);
          g_source_attach (conn->writer, conn->transport->context);
          return;
        }
      if (n < 0)
        {
          conn_fail (conn, G_LOG_LEVEL_MESSAGE, "connection lost: %s", error->message);
          return;
        }
      conn->out_done += n;
    }
}

static gboolean
on_writable (GObject *stream, gpointer data)
{
  SpConn *conn = data; /* the source's reference lasts through this call */

  source_clear (&conn->writer);
  if (conn->transport)
    conn_write (conn);
  return G_SOURCE_REMOVE;
}

/* Writes the oldest queued frames, unless a write waits for the socket. */
static void
peer_flush (SpPeer *peer)
{
  if (peer->connected && !peer->conn->writer)
    conn_write (peer->conn);
}

static SpFrame *
hello_frame (SpTransport *t)
{
  g_autoptr (GVariant) v
      = g_variant_ref_sink (g_variant_new ("(qts)", (guint16)SP_WIRE_VERSION, t->id, t->name));
  g_autoptr (GVariant) le
      = G_BYTE_ORDER == G_BIG_ENDIAN ? g_variant_byteswap (v) : g_variant_ref (v);
  g_autoptr (GBytes) bytes = g_variant_get_data_as_bytes (le);

  return frame_new (SP_FRAME_HELLO, bytes);
}

/* Dialed, and authenticated with TLS: the hello goes first. */
static void
conn_established (SpConn *conn)
{
  SpPeer *peer = conn->peer;

  source_clear (&conn->deadline);
  peer->connected = TRUE;
  peer->connected_since = g_get_monotonic_time ();
  g_queue_push_head (&peer->queue, hello_frame (conn->transport));
  conn_read_start (conn);
  peer_flush (peer);
}

static void
on_connected (GObject *source, GAsyncResult *result, gpointer data)
{
  g_autoptr (SpConn) conn = data;
  g_autoptr (GError) error = NULL;
  g_autoptr (GSocketConnection) socket
      = g_socket_client_connect_finish (G_SOCKET_CLIENT (source), result, &error);
  SpPeer *peer = conn->peer;

  if (!conn->transport)
    return;
  if (!socket)
    {
      conn_fail (conn, peer_unreachable_level (peer), "cannot connect: %s (retrying)",
                 error->message);
      return;
    }
  /* Raft messages are small and latency-bound; writes are batched. */
  g_socket_set_option (g_socket_connection_get_socket (socket), IPPROTO_TCP, TCP_NODELAY, 1, NULL);
  conn->socket = g_steal_pointer (&socket);
  conn->stream = g_object_ref (G_IO_STREAM (conn->socket));
  if (peer->unreachable_logged)
    peer_log (conn->address, conn->peer ? conn->peer->name : NULL, G_LOG_LEVEL_MESSAGE,
              "reachable again");
  peer->unreachable_logged = FALSE;
  if (conn->transport->certificate)
    conn_start_tls (conn);
  else
    conn_established (conn);
}

static void
peer_dial (SpPeer *peer)
{
  g_autoptr (GSocketConnectable) target = g_network_address_new (peer->host, peer->port);
  g_autofree char *where = host_port (peer->host, peer->port);

  peer->conn = conn_new (peer->transport, peer, g_strdup_printf ("%s (%s)", peer->name, where));
  conn_arm_deadline (peer->conn, SP_SETUP_TIMEOUT_MS);
  g_socket_client_connect_async (peer->transport->client, target, peer->conn->cancellable,
                                 on_connected, conn_ref (peer->conn));
}

static gboolean
on_retry (gpointer data)
{
  SpPeer *peer = data;

  source_clear (&peer->retry);
  peer_dial (peer);
  return G_SOURCE_REMOVE;
}

/* Drops the connection (and the frames it did not write yet: Raft
 * retransmits) without redialing. */
static void
peer_close (SpPeer *peer)
{
  source_clear (&peer->retry);
  if (peer->conn)
    {
      conn_close (peer->conn);
      g_clear_pointer (&peer->conn, conn_unref);
    }
  peer->connected = FALSE;
}

static void
peer_lost (SpPeer *peer)
{
  guint delay;

  /* Only a connection that held resets the backoff: one refused right
   * after the handshake must not be redialed in a tight loop. */
  if (peer->connected
      && g_get_monotonic_time () - peer->connected_since
             >= SP_BACKOFF_MAX_MS * G_TIME_SPAN_MILLISECOND)
    peer->backoff_ms = 0;
  peer_close (peer);
  delay = MAX (peer->backoff_ms, SP_BACKOFF_MIN_MS);
  peer->backoff_ms = MIN (delay * 2, SP_BACKOFF_MAX_MS);
  peer->retry = timeout_new (peer->transport, delay, on_retry, peer, NULL);
}

static void
peer_free (gpointer data)
{
  SpPeer *peer = data;

  peer_close (peer);
  g_queue_clear_full (&peer->queue, frame_free);
  g_free (peer->name);
  g_free (peer->host);
  g_free (peer);
}

/* Makes room for one frame: the oldest Append or Heartbeat goes first,
 * the oldest of any kind if there is none. */
static void
peer_drop_one (SpPeer *peer)
{
  GList *victim = NULL;
  gint64 now = g_get_monotonic_time ();

  for (GList *l = peer->queue.head; l && !victim; l = l->next)
    {
      SpFrame *f = l->data;

      if (f->type == SP_RAFT_MSG_APPEND || f->type == SP_RAFT_MSG_HEARTBEAT)
        victim = l;
    }
  if (!victim)
    victim = peer->queue.head;
  frame_free (victim->data);
  g_queue_delete_link (&peer->queue, victim);
  peer->dropped++;
  if (now - peer->drop_logged >= G_USEC_PER_SEC)
    {
      peer_log (NULL, peer->name, G_LOG_LEVEL_WARNING,
                "send queue full (%u messages), dropped %" G_GUINT64_FORMAT
                " message(s) since the last report",
                peer->transport->queue_limit, peer->dropped);
      peer->dropped = 0;
      peer->drop_logged = now;
    }
}

/* ---- public API ---------------------------------------------------------- */

SpTransport *
sp_transport_new (const SpTransportOptions *opts, SpTransportReceive receive, gpointer user_data)
{
  SpTransport *t;

  g_return_val_if_fail (opts && opts->id != SP_RAFT_NONE && opts->name && receive, NULL);
  g_return_val_if_fail (!opts->certificate == !opts->ca, NULL);

  t = g_new0 (SpTransport, 1);
  t->id = opts->id;
  t->name = g_strdup (opts->name);
  t->certificate = opts->certificate ? g_object_ref (opts->certificate) : NULL;
  t->ca = opts->ca ? g_object_ref (opts->ca) : NULL;
  /* Each connection is given the cluster CA (conn_start_tls); as the TLS
   * backend's default, it also spares the process the system trust store,
   * which GnuTLS otherwise parses whenever a connection is set up (some
   * 140 certificates, 8 MB of heap at the peak, kept by malloc as RSS). */
  if (t->ca)
    g_tls_backend_set_default_database (g_tls_backend_get_default (), t->ca);
  t->queue_limit = opts->queue_limit ? opts->queue_limit : SP_QUEUE_LIMIT_DEFAULT;
  t->receive = receive;
  t->read_done = opts->read_done;
  t->admit = opts->admit;
  t->revoked = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  for (guint i = 0; opts->revoked && opts->revoked[i]; i++)
    {
      char *fp = sp_config_normalize_fingerprint (opts->revoked[i]);

      g_return_val_if_fail (fp, NULL);
      g_hash_table_add (t->revoked, fp);
    }
  t->user_data = user_data;
  t->context = g_main_context_ref_thread_default ();
  t->client = g_socket_client_new ();
  /* Cluster traffic goes straight to the member, never through a proxy. */
  g_socket_client_set_enable_proxy (t->client, FALSE);
  t->peers = g_hash_table_new_full (g_int64_hash, g_int64_equal, NULL, peer_free);
  t->incoming = g_hash_table_new_full (NULL, NULL, conn_unref, NULL);
  t->eager = TRUE;
  g_queue_init (&t->unidentified);
  t->warnings = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  t->listener = g_socket_listener_new ();
  /* GLib's 10 would drop members' SYNs behind a burst of strangers. */
  g_socket_listener_set_backlog (t->listener, SP_BACKLOG);
  if (!t->certificate)
    g_warning ("transport of %s: insecure mode, plaintext and no authentication at all "
               "(any host can claim to be a member): for tests only",
               t->name);
  return t;
}

void
sp_transport_free (SpTransport *t)
{
  GHashTableIter iter;
  SpConn *conn;

  if (!t)
    return;
  accept_stop (t);
  g_socket_listener_close (t->listener);
  g_object_unref (t->listener);
  g_hash_table_destroy (t->peers);
  g_hash_table_iter_init (&iter, t->incoming);
  while (g_hash_table_iter_next (&iter, (gpointer *)&conn, NULL))
    conn_close (conn);
  g_hash_table_destroy (t->incoming);
  source_clear (&t->warn_sweep);
  g_hash_table_destroy (t->warnings);
  g_object_unref (t->client);
  g_main_context_unref (t->context);
  g_clear_object (&t->certificate);
  g_clear_object (&t->ca);
  g_hash_table_destroy (t->revoked);
  g_free (t->name);
  g_free (t);
}

void
sp_transport_recheck (SpTransport *t)
{
  g_autoptr (GPtrArray) gone = g_ptr_array_new_with_free_func (conn_unref);
  GHashTableIter iter;
  SpConn *conn;

  if (!t->admit)
    return;
  g_hash_table_iter_init (&iter, t->incoming);
  while (g_hash_table_iter_next (&iter, (gpointer *)&conn, NULL))
    if (conn->peer_id != 0 && !t->admit (conn->peer_id, conn->peer_name, t->user_data))
      g_ptr_array_add (gone, conn_ref (conn));
  for (guint i = 0; i < gone->len; i++)
    {
      conn = g_ptr_array_index (gone, i);
      if (conn->transport)
        conn_fail (conn, G_LOG_LEVEL_WARNING, "no longer a member; closing");
    }
}

char *
sp_transport_cert_fingerprint (GTlsCertificate *cert)
{
  g_autoptr (GByteArray) der = NULL;

  g_object_get (cert, "certificate", &der, NULL);
  return g_compute_checksum_for_data (G_CHECKSUM_SHA256, der->data, der->len);
}

/* A host name is resolved synchronously: this is a start-up call. */
gboolean
sp_transport_listen (SpTransport *t, const char *host, guint16 port, GError **error)
{
  g_autolist (GInetAddress) addresses = NULL;
  GInetAddress *literal = g_inet_address_new_from_string (host);

  if (literal)
    addresses = g_list_prepend (NULL, literal);
  else
    {
      addresses = g_resolver_lookup_by_name (g_resolver_get_default (), host, NULL, error);
      if (!addresses)
        return FALSE;
    }
  for (GList *l = addresses; l; l = l->next)
    {
      g_autoptr (GSocketAddress) address = g_inet_socket_address_new (l->data, port);
      g_autoptr (GSocketAddress) effective = NULL;

      if (!g_socket_listener_add_address (t->listener, address, G_SOCKET_TYPE_STREAM,
                                          G_SOCKET_PROTOCOL_TCP, NULL, &effective, error))
        return FALSE;
      /* Every address of the name on the port the first one got. */
      port = g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (effective));
      if (t->port == 0)
        t->port = port;
    }
  accept_restart (t);
  return TRUE;
}

guint16
sp_transport_local_port (SpTransport *t)
{
  return t->port;
}

void
sp_transport_set_peer (SpTransport *t, guint64 id, const char *name, const char *host, guint16 port)
{
  SpPeer *peer = g_hash_table_lookup (t->peers, &id);
  SpConn *conn;

  g_return_if_fail (id != SP_RAFT_NONE && name && host);

  if (peer && g_str_equal (peer->name, name) && g_str_equal (peer->host, host)
      && peer->port == port)
    return;
  if (peer)
    {
      peer_close (peer);
      g_free (peer->name);
      g_free (peer->host);
    }
  else
    {
      peer = g_new0 (SpPeer, 1);
      peer->transport = t;
      peer->id = id;
      g_queue_init (&peer->queue);
      g_hash_table_insert (t->peers, &peer->id, peer);
    }
  peer->name = g_strdup (name);
  peer->host = g_strdup (host);
  peer->port = port;
  peer->backoff_ms = 0;
  peer->unreachable_logged = FALSE;
  /* A connection it made before we knew it is now a peer's. */
  if ((conn = conn_with_id (t, id)))
    conn_unlink_unidentified (conn);
  peer_dial (peer);
}

void
sp_transport_remove_peer (SpTransport *t, guint64 id)
{
  g_hash_table_remove (t->peers, &id);
}

void
sp_transport_send (SpTransport *t, const SpRaftMsg *m)
{
  SpPeer *peer = g_hash_table_lookup (t->peers, &m->to);
  g_autoptr (GBytes) payload = NULL;

  if (!peer)
    return;
  payload = sp_wire_msg_to_bytes (m);
  if (g_bytes_get_size (payload) > SP_WIRE_MAX_FRAME)
    {
      peer_log (NULL, peer->name, G_LOG_LEVEL_WARNING,
                "dropping a %s message of %" G_GSIZE_FORMAT " bytes (at most %u)",
                sp_raft_msg_type_to_string (m->type), g_bytes_get_size (payload),
                SP_WIRE_MAX_FRAME);
      return;
    }
  if (g_queue_get_length (&peer->queue) >= t->queue_limit)
    peer_drop_one (peer);
  g_queue_push_tail (&peer->queue, frame_new (m->type, payload));
  peer_flush (peer);
}

void
sp_transport_set_eager (SpTransport *t, gboolean eager)
{
  GHashTableIter iter;
  SpConn *conn;

  if (t->eager == eager)
    return;
  t->eager = eager;
  g_hash_table_iter_init (&iter, t->incoming);
  while (g_hash_table_iter_next (&iter, (gpointer *)&conn, NULL))
    {
      /* Connections still saying hello keep their source either way. */
      if (conn->peer_id == 0)
        continue;
      if (eager && !conn->reader)
        conn_read_start (conn);
      else if (!eager)
        source_clear (&conn->reader);
    }
}

void
sp_transport_receive_pending (SpTransport *t)
{
  g_autoptr (GPtrArray) conns = g_ptr_array_new_with_free_func (conn_unref);
  GHashTableIter iter;
  SpConn *conn;

  /* The receive callback may close connections: hold them first. */
  g_hash_table_iter_init (&iter, t->incoming);
  while (g_hash_table_iter_next (&iter, (gpointer *)&conn, NULL))
    if (conn->peer_id != 0 && !conn->reader)
      g_ptr_array_add (conns, conn_ref (conn));
  for (guint i = 0; i < conns->len; i++)
    {
      conn = g_ptr_array_index (conns, i);
      if (conn->transport && !conn->reading)
        conn_read (conn);
    }
}

gboolean
sp_transport_peer_connected (SpTransport *t, guint64 id)
{
  SpPeer *peer = g_hash_table_lookup (t->peers, &id);

  return peer && peer->connected;
}
