/* Starts the leader target (sparrow-leader.target) through systemd while
 * this node is leader with a valid lease, and stops it otherwise.
 *
 * Before starting the target it writes the leader marker (the file the
 * target's ConditionPathExists= checks); before stopping it, it removes
 * the marker.  Everything goes through org.freedesktop.systemd1 on the
 * given bus, asynchronously: Subscribe(), then StartUnit/StopUnit in mode
 * "replace", each job followed to its JobRemoved.  One job at a time; a
 * change that arrives meanwhile is acted on when the job ends.  Except a
 * lost lease (partition, stall, failure) while the target starts: then it
 * is stopped at once, which cancels the start job, and the marker removed;
 * a planned release still waits for the start to end, then stops.
 * Failures are logged and retried at the next role or lease change. */
#pragma once

#include <gio/gio.h>

#include "node.h"

G_BEGIN_DECLS

typedef struct _SpLeaderTarget SpLeaderTarget;

SpLeaderTarget *sp_leader_target_new (SpNode *node, GDBusConnection *bus, const char *unit,
                                      const char *marker);
void sp_leader_target_free (SpLeaderTarget *target);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (SpLeaderTarget, sp_leader_target_free)

G_END_DECLS
