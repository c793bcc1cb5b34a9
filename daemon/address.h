/* Member addresses: the one parser for every place an address comes in
 * (the configuration's listen and initial-members, AddMember and
 * SetMemberAddress, member records applied from the log or a snapshot, and
 * a stored address turned into a peer to dial).
 *
 *   host:port       host: 1 to SP_ADDRESS_HOST_MAX ASCII letters, digits,
 *                   '_', '.' or '-' (a host name or an IPv4 address)
 *   [v6]:port       an IPv6 literal, without scope
 *
 * port is decimal, 1 to 65535.  Nothing else passes: no space, newline,
 * ';', '#', '%', non-ASCII, sign or padding, so that an address is safe
 * to write on a line of another program's configuration. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define SP_ADDRESS_HOST_MAX 253 /* a DNS name's limit */
#define SP_ADDRESS_EXPECTS  "host:port with a port between 1 and 65535 (IPv6 as [address]:port)"

/* Whether the n bytes at s are 1 to max ASCII letters, digits, '_', '.' or
 * '-': a host name here, and a member name (sp_config_valid_name). */
gboolean sp_address_is_token (const char *s, gsize n, gsize max);

/* host (without brackets) and port, or FALSE; host_out and port_out may
 * be NULL, and are left alone on failure. */
gboolean sp_address_parse (const char *address, char **host_out, guint16 *port_out);

G_END_DECLS
