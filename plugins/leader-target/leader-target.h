/* The leader target plugin: starts sparrow-leader.target through systemd
 * while this node holds (sp_node_get_holder) and the previous holder's
 * leader-only units had the time to stop ([cluster] units-stop-ms), and
 * stops it otherwise.  Only under systemd ($INVOCATION_ID).
 *
 * Before starting the target it writes the leader marker (the file the
 * target's ConditionPathExists= checks); before stopping it, it removes
 * the marker.  Everything goes through org.freedesktop.systemd1 on the
 * bus, asynchronously: Subscribe(), then StartUnit/StopUnit in mode
 * "replace", each job followed to its JobRemoved.  One job at a time; a
 * change that arrives meanwhile is acted on when the job ends.  Except a
 * lost hold (partition, stall, failure) while the target starts: then it
 * is stopped at once, which cancels the start job, and the marker removed;
 * a planned release still waits for the start to end, then stops.
 * Failures are reported (State failed) and retried at the next change. */
#pragma once

#include "plugin.h"

G_BEGIN_DECLS

#define SP_TYPE_LEADER_TARGET_PLUGIN (sp_leader_target_plugin_get_type ())
G_DECLARE_FINAL_TYPE (SpLeaderTargetPlugin, sp_leader_target_plugin, SP, LEADER_TARGET_PLUGIN,
                      SpPlugin)

G_END_DECLS
