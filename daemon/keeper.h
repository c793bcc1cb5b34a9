/* The link to the fence keeper (sparrow-fence; the contract is
 * keeper-proto.h): the node holds nothing unless the keeper is connected
 * and armed with the end of its lease, so that a stalled node's addresses
 * leave the kernel at that end whatever this process is doing.
 *
 * The link connects without blocking and reconnects with a backoff; it
 * sends the addresses added here on every connection, before arming.  Its
 * owner asks, at every wake-up where it could hold, hold_until (the lease's
 * end): TRUE when the keeper is armed with that deadline (an atomic store
 * into the shared page, no message), FALSE while it is not (then it asks the
 * keeper to arm, and calls changed once armed).  changed is also called when
 * an armed link is lost (the owner stops holding at once). */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct _SpKeeper SpKeeper;
typedef void (*SpKeeperChangedFunc) (gpointer user_data);

SpKeeper *sp_keeper_new (const char *path, SpKeeperChangedFunc changed, gpointer user_data);
void sp_keeper_free (SpKeeper *keeper);

/* family AF_INET (4 bytes of addr) or AF_INET6; ifname shorter than 16. */
void sp_keeper_add_address (SpKeeper *keeper, int family, const guint8 *addr, guint prefix,
                            const char *ifname);
/* deadline: CLOCK_BOOTTIME microseconds, or -1 for a lease without end. */
gboolean sp_keeper_hold_until (SpKeeper *keeper, gint64 deadline_usec);
/* It does not hold any more: the deadline written last is final. */
void sp_keeper_let_go (SpKeeper *keeper);
/* "armed" (with a deadline), "arming", "ready" (connected: it arms when
 * asked), or why none of these (for status). */
const char *sp_keeper_describe (SpKeeper *keeper);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (SpKeeper, sp_keeper_free)

G_END_DECLS
