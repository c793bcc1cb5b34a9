/* Telling the link who has a service address, and asking first whether
 * someone else already has it.
 *
 * Announce: one gratuitous ARP request (IPv4: sender and target are the
 * address, from this interface's MAC, to broadcast) or one unsolicited
 * neighbour advertisement (IPv6: from the address to ff02::1, hop limit
 * 255, override flag, target link-layer address option).  The caller
 * repeats it for a burst.
 *
 * Probe: before adding, one question and a short wait (window_ms) for an
 * answer from another MAC.  IPv4: an ARP probe per RFC 5227 (sender IP
 * 0.0.0.0, so no neighbour cache learns anything from it).  IPv6: a DAD
 * neighbour solicitation (RFC 4862: from ::, to the address's
 * solicited-node group); an advertisement for it from another MAC is the
 * conflict.  The kernel's own DAD still runs once NetworkManager adds the
 * address; the probe keeps a conflict from being added at all.
 *
 * Both families go through AF_PACKET sockets: the IPv6 packets are built
 * here, since the kernel would refuse a source address still in DAD.
 * Everything is non-blocking (the wait is a timeout source on the
 * thread-default main context), and the probe reads at most a few packets
 * per wake-up.  Needs CAP_NET_RAW. */
#pragma once

#include "vip-config.h"

G_BEGIN_DECLS

gboolean sp_announce_once (const SpVipAddress *address, GError **error);

/* Completes TRUE when no other host answered within window_ms; FALSE with
 * *conflict_mac set ("aa:bb:cc:dd:ee:ff") when one did; FALSE with error
 * when the probe could not be sent. */
void sp_announce_probe_async (const SpVipAddress *address, guint window_ms,
                              GCancellable *cancellable, GAsyncReadyCallback callback,
                              gpointer user_data);
gboolean sp_announce_probe_finish (GAsyncResult *result, char **conflict_mac, GError **error);

/* The socket a probe reads answers from (non-blocking): bound to the
 * interface ifindex, it receives only what could answer a probe of address
 * (ARP from the address, or a neighbour advertisement for it), filtered by
 * the kernel.  -1 with error set on failure.  For tests. */
int sp_announce_answer_socket (const SpVipAddress *address, int ifindex, GError **error);

G_END_DECLS
