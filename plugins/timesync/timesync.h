/* The timesync plugin: one clock for the cluster, served by the leader
 * through chronyd (or ntpd), on every node whose configuration has
 * [timesync].
 *
 * chronyd: what never changes with leadership (allow SUBNET, local) is a
 * drop-in in chrony's confdir, written alike on every node at start; the
 * unit is restarted (ReloadOrRestartUnit) only when that file really
 * changed, and started (StartUnit) when it is not running.  What changes
 * is a sources file in chrony's sourcedir: the upstream servers on the
 * leader, the leader's cluster address (iburst, short poll, prefer) on the
 * others, applied with `chronyc reload sources`: a leadership change
 * restarts nothing and chronyd keeps its measurements; the local reference
 * follows the role with `chronyc local`.  chronyc runs as an
 * asynchronous subprocess with a timeout; systemd is driven over the bus
 * (sp_systemd_job_async).  The status (source, offset, stratum,
 * synchronised) is refreshed every few seconds after a change, then every
 * 30 s.  Failures are reported (State failed) and everything is retried
 * every 10 s.  ntpd cannot change its sources at run time: its whole
 * configuration is the role's file, which ntpsec.service reads while it
 * is there (the package's drop-in: sparrow-ntpd), and every change
 * restarts the unit (RestartUnit); its status comes from ntpq.
 * sparrow-timesync-cleanup (ExecStopPost) removes the files however
 * sparrowd ends.  Writing them takes sparrow.service's timesync drop-in
 * (sparrowd runs as user sparrow); systemd and chronyc let it do the
 * rest (the package's polkit rules, CAP_DAC_OVERRIDE). */
#pragma once

#include "plugin.h"

G_BEGIN_DECLS

#define SP_TIMESYNC_CHRONY_CONF    "/etc/chrony/conf.d/sparrow.conf"
#define SP_TIMESYNC_CHRONY_SOURCES "/etc/chrony/sources.d/sparrow.sources"
#define SP_TIMESYNC_CHRONY_UNIT    "chrony.service"
/* ntpd: its configuration, which ntpsec.service reads while sparrowd
 * runs (sparrow-ntpd). */
#define SP_TIMESYNC_NTPD_CONF "/etc/ntpsec/sparrow.conf"
#define SP_TIMESYNC_NTPD_UNIT "ntpsec.service"

#define SP_TYPE_TIMESYNC_PLUGIN (sp_timesync_plugin_get_type ())
G_DECLARE_FINAL_TYPE (SpTimesyncPlugin, sp_timesync_plugin, SP, TIMESYNC_PLUGIN, SpPlugin)

G_END_DECLS
