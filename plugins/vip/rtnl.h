/* A service address in the kernel directly (rtnetlink RTM_NEWADDR,
 * RTM_DELADDR): immediate, and it works without NetworkManager.  This is
 * how a node lets go of an address at once when it loses its lease, and how
 * sparrow-vip-cleanup makes sure nothing is left after sparrowd died.
 *
 * The call does not block: the kernel handles the request within sendmsg(),
 * so its answer is read at once.  Needs CAP_NET_ADMIN. */
#pragma once

#include "vip-config.h"

G_BEGIN_DECLS

typedef enum
{
  SP_RTNL_FAILED = -1,
  SP_RTNL_ABSENT = 0,  /* the address (or its interface) was not there */
  SP_RTNL_REMOVED = 1, /* it was there and is gone now */
} SpRtnlResult;

SpRtnlResult sp_rtnl_remove_address (const SpVipAddress *address, GError **error);
/* Adds it to the kernel at once (IPv6 without DAD: it was probed), ahead
 * of NetworkManager's reapply, which records it: the address answers a
 * round trip to NetworkManager sooner. */
gboolean sp_rtnl_add_address (const SpVipAddress *address, GError **error);
/* Removes each of addresses (SpVipAddress*), logging what it removed and
 * what it could not; FALSE when one could not be removed. */
gboolean sp_rtnl_remove_addresses (GPtrArray *addresses);

G_END_DECLS
