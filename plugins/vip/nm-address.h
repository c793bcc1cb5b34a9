/* Service addresses on a NetworkManager device, as a runtime-only change
 * of its applied connection (the nm-cloud-setup pattern):
 *
 *   GetAppliedConnection  -> the connection as applied, and its version id
 *   add / remove the addresses in its ipv4 / ipv6 setting
 *   Reapply (connection, version id)
 *
 * NetworkManager then owns the addresses like its own: it does not wipe
 * them, and they go when the device is re-activated (the plugin adds them
 * again).  The saved profile is never touched, so nothing reaches the disk.
 * A Reapply that lost a race with another change (version id mismatch) is
 * retried from GetAppliedConnection a few times.
 *
 * add and remove hold SpVipAddress*, all on the device's interface; both
 * may be empty.  Completes TRUE when the applied connection has every
 * address of add and none of remove (also when it already had: then
 * nothing is reapplied, unless an address of add is missing from the
 * kernel).  Removing from a device that is not active is not
 * an error: nothing is applied there.  Adding to a family whose method
 * takes no addresses (ipv4 disabled; ipv6 disabled, ignore, link-local)
 * fails with a message saying so. */
#pragma once

#include <NetworkManager.h>

#include "vip-config.h"

G_BEGIN_DECLS

void sp_nm_address_change_async (NMDevice *device, GPtrArray *add, GPtrArray *remove,
                                 GCancellable *cancellable, GAsyncReadyCallback callback,
                                 gpointer user_data);
gboolean sp_nm_address_change_finish (NMDevice *device, GAsyncResult *result, GError **error);

/* Whether the device's current IP configuration (the kernel's addresses,
 * as NetworkManager publishes them) has address. */
gboolean sp_nm_address_present (NMDevice *device, const SpVipAddress *address);

G_END_DECLS
