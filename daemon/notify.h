/* systemd's notification protocol (sd_notify) without libsystemd: one
 * datagram to $NOTIFY_SOCKET.  Quietly does nothing outside a Type=notify
 * unit. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* state is e.g. "READY=1" or "STATUS=leader, term 4". */
void sp_notify (const char *state);
/* The watchdog interval systemd asked for ($WATCHDOG_USEC for this
 * process), or 0. */
guint64 sp_notify_watchdog_usec (void);

G_END_DECLS
