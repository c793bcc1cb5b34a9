/* A member's Raft id, derived from its name identically on every node and
 * release: the transport binds a connection's claimed id to the name its
 * certificate proves, and the node names members by it. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* Never 0 (SP_RAFT_NONE). */
guint64 sp_member_id (const char *name);

G_END_DECLS
