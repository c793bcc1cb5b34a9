/* Peer-to-peer transport for Raft messages over TCP, on the GLib main loop.
 *
 * Each node dials every peer and uses that outgoing connection to send; it
 * receives on the connections peers dialed to it.  A connection starts
 * with a hello frame (wire version, sender id and member name, of
 * sp_config_valid_name, else the connection closes); frames are
 * [u32 big-endian length][GVariant message] (wire.h).
 *
 * Security: with TLS (the default) both sides present a certificate signed
 * by the cluster CA and not revoked (its SHA-256 fingerprint is not in the
 * options' list), and the name in the certificate (subject CN or a DNS
 * subjectAltName) must equal the member name the peer claims in its hello
 * and, when dialing, the name of the member we meant to reach.  The hello
 * binds the connection: the id it claims must be sp_member_id () of that
 * name, and the options' admit callback must take that member (the node
 * admits the members of its configurations).  Anything else closes the
 * connection with a warning naming the address, before any message is
 * read.  sp_transport_recheck () closes the incoming connections of ids
 * admit no longer takes (a member removed).
 *
 * Trade-off: a member that has not yet replicated the entry adding a new
 * member does not know it, and refuses it at the hello, though that new
 * member may be its leader by now.  The node's admit takes such a stranger
 * only while its core takes that stranger's leader messages
 * (sp_raft_accepts_stranger: no configuration yet, or no leader heard for
 * an election timeout and a member named it as its leader), then the
 * leader it follows: a lagging member hears a new leader after an election
 * timeout and a pre-vote (it answers once it knows its address), while a
 * removed member's certificate gets nowhere but to a joining node or a
 * learner that lost its leader.
 * Revoke a removed member's certificate (options.revoked) so it gets
 * nowhere ever.
 * Insecure mode (plaintext) exists for tests and is warned about: it has
 * no authentication at all, anyone who reaches the port can claim any id.
 * It only never lets a second connection claiming an id replace an
 * established one unless that one has been silent for 5 s or the new one
 * comes from the member's address.
 *
 * Unidentified peers (accepted, no hello yet, or in plaintext a hello with
 * an id that is not a peer's) are bounded: 64 at most, a new one closing
 * the oldest that has not begun a TLS handshake; 5 s from accept to the
 * hello (TLS handshake included); before it, only a hello of at most 1
 * KiB; after a stranger's hello, frames of at most 1 KiB.  With TLS a
 * handshake starts only once the client's whole first record is in, and at
 * most 8 run at once (a new one closes the oldest), so silent or slow
 * clients hold no thread.  A peer's frame over 1 KiB must be an Append or
 * a Snapshot (checked on its first bytes), at most 16 MiB, and it must
 * keep coming (10 s without a byte of it closes the connection); the
 * receive buffer grows with what arrives, not with what a header
 * announces.  Warnings about accepted connections are rate-limited per
 * source address (10 per 10 s, then a count of the suppressed ones).  A
 * failed accept (out of file descriptors) is retried after 100 ms, closing
 * the oldest unidentified connection.
 *
 * Never blocks: connects, handshakes, reads and writes are asynchronous.
 * Each peer has a bounded send queue (oldest Append/Heartbeat messages are
 * dropped first when full — Raft retransmits); a dead peer is redialed with
 * exponential backoff (50 ms doubling to 2 s).  Malformed, oversized or
 * misaddressed frames are dropped and logged with the peer address; the
 * connection is closed on a framing error (the stream cannot be resynced). */
#pragma once

#include <gio/gio.h>

#include "raft/raft.h"

G_BEGIN_DECLS

typedef struct _SpTransport SpTransport;

/* A message arrived from a peer and passed validation.  The transport
 * frees it after the call returns. */
typedef void (*SpTransportReceive) (const SpRaftMsg *m, gpointer user_data);

/* Whether the peer that said hello as (id, name) may speak (id and name
 * checked: with TLS, the certificate proves name and id is its member
 * id). */
typedef gboolean (*SpTransportAdmit) (guint64 id, const char *name, gpointer user_data);

typedef struct
{
  guint64 id;
  const char *name;
  /* TLS material; all NULL means insecure (plaintext). */
  GTlsCertificate *certificate; /* this node's certificate with its key */
  GTlsDatabase *ca;             /* the cluster CA */
  guint queue_limit;            /* messages per peer; 0 = 4096 */
  /* SHA-256 fingerprints of refused certificates (64 hex digits, colons
   * and case ignored); NULL-terminated, may be NULL. */
  const char *const *revoked;
  SpTransportAdmit admit; /* given receive's user_data; NULL admits everyone */
  /* After the main loop woke the transport for an incoming connection and
   * it handed on what that held (given receive's user_data; may be NULL):
   * the receiver may run its batch there rather than in a pass of the
   * main loop of its own.  Not after sp_transport_receive_pending (), nor
   * when the connection closed meanwhile. */
  void (*read_done) (gpointer user_data);
} SpTransportOptions;

SpTransport *sp_transport_new (const SpTransportOptions *opts, SpTransportReceive receive,
                               gpointer user_data);
void sp_transport_free (SpTransport *transport);

/* Starts accepting on host:port (port 0 picks one; see local_port).  A host
 * name (rather than an address) is resolved synchronously: call at start-up. */
gboolean sp_transport_listen (SpTransport *transport, const char *host, guint16 port,
                              GError **error);
guint16 sp_transport_local_port (SpTransport *transport);

/* Adds or updates a peer; host may be a name, an IPv4 or IPv6 literal. */
void sp_transport_set_peer (SpTransport *transport, guint64 id, const char *name, const char *host,
                            guint16 port);
void sp_transport_remove_peer (SpTransport *transport, guint64 id);

/* Queues m for m->to (copied); unknown peers are ignored. */
void sp_transport_send (SpTransport *transport, const SpRaftMsg *m);

/* Incoming messages are read as they arrive (the default) or, not eager,
 * only when sp_transport_receive_pending () asks: an idle leader reads its
 * followers' answers once per heartbeat rather than waking up for each.
 * Connections still being set up are read either way. */
void sp_transport_set_eager (SpTransport *transport, gboolean eager);
/* Reads, without blocking, what the incoming connections hold now. */
void sp_transport_receive_pending (SpTransport *transport);

/* Closes the incoming connections whose peers admit no longer takes. */
void sp_transport_recheck (SpTransport *transport);

/* The SHA-256 fingerprint of cert as 64 lowercase hex digits (free it). */
char *sp_transport_cert_fingerprint (GTlsCertificate *cert);

/* Whether the outgoing connection to id is established (for status). */
gboolean sp_transport_peer_connected (SpTransport *transport, guint64 id);

/* Whether cert is issued to the member name: its CN or a DNS
 * subjectAltName equals it (no wildcards, no case folding). */
gboolean sp_transport_cert_has_name (GTlsCertificate *cert, const char *name);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (SpTransport, sp_transport_free)

G_END_DECLS
