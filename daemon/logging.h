/* Where sparrowd's messages go.  Under systemd (stderr is the journal's
 * stream, JOURNAL_STREAM) each message goes to the journal natively, with
 * its structured fields (SPARROW_ROLE, SPARROW_TERM, SPARROW_LEADER,
 * SPARROW_PEER, SPARROW_PLUGIN: `journalctl -u sparrow -o verbose`, or
 * `journalctl SPARROW_ROLE=leader`).  Elsewhere one readable line each on
 * stderr:
 *
 *   14:16:39.264 NOTICE alpha: leader in term 2, leader alpha
 *   14:16:40.105 WARNING [sparrow-vip] ...
 *
 * (local time, the level as syslog names it, the log domain when it is not
 * sparrowd's own).  G_MESSAGES_DEBUG selects debug messages, as in GLib. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

void sp_logging_init (void);

G_END_DECLS
