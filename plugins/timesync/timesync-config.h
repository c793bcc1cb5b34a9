/* The [timesync] group, and the files the timesync plugin writes from it.
 *
 *   [timesync]
 *   backend = chrony          chrony, or ntpd (ntpsec)
 *   allow = 10.77.0.0/24      subnets followers query the leader from,
 *                             ';'-separated (required)
 *   local-stratum = 10        the stratum the leader serves with (1..15)
 *   upstream = ntp.example.org;192.0.2.7   servers only the leader uses
 *   minpoll = 0               the leader as a follower's source: poll
 *   maxpoll = 4               interval bounds, log2 seconds (-6..17)
 *
 * Errors name the file that set the key, the key and what was expected.
 * The text functions are pure: the unit tests check what they write. */
#pragma once

#include <glib.h>

#include "config.h"

G_BEGIN_DECLS

typedef enum
{
  SP_TIMESYNC_CHRONY,
  SP_TIMESYNC_NTPD,
} SpTimesyncBackend;

typedef struct
{
  SpTimesyncBackend backend;
  GStrv allow;    /* at least one, each ADDRESS/PREFIX */
  guint stratum;  /* local stratum */
  GStrv upstream; /* may be empty */
  int minpoll;
  int maxpoll;
} SpTimesyncConfig;

/* Reads and claims [timesync]; NULL without error when the group is absent.
 * warnings may be NULL. */
SpTimesyncConfig *sp_timesync_config_read (SpConfig *config, GPtrArray *warnings, GError **error);
void sp_timesync_config_free (SpTimesyncConfig *config);

/* chrony's drop-in (confdir): what never changes with leadership, written
 * alike on every node, so that a leadership change restarts nothing. */
char *sp_timesync_chrony_conf (const SpTimesyncConfig *config);
/* The local reference at run time (chronyc's arguments): on the leader the
 * drop-in's "local stratum N [distance 0]", off elsewhere. */
GStrv sp_timesync_chrony_local (const SpTimesyncConfig *config, gboolean leading);
/* chrony's sources file (sourcedir): the upstream servers on the leader
 * (leader NULL), the leader's address elsewhere.  This and
 * sp_timesync_ntpd_conf return NULL for a leader that is not a plain host
 * name or address (a space, a newline, anything that would add an option
 * or a directive): nothing from the cluster reaches a file unchecked. */
char *sp_timesync_chrony_sources (const SpTimesyncConfig *config, const char *leader);
/* ntpd (ntpsec) cannot change its sources at run time: its whole
 * configuration for the role (the admin's file included first, then the
 * leader as a server, or the upstream servers and orphan mode on the
 * leader); ntpsec.service reads it through the package's drop-in. */
#define SP_TIMESYNC_NTPD_ADMIN_CONF "/etc/ntpsec/ntp.conf"
char *sp_timesync_ntpd_conf (const SpTimesyncConfig *config, const char *leader);

/* The source chronyd selected, from `chronyc -c -n sources`: FALSE when
 * none is; offset in seconds. */
gboolean sp_timesync_chrony_parse_sources (const char *output, char **source, guint *stratum,
                                           double *offset);
/* The same from `ntpq -n -p` (the line marked '*'); offset in seconds. */
gboolean sp_timesync_ntpq_parse_peers (const char *output, char **source, guint *stratum,
                                       double *offset);

/* The host part of a member address ("10.77.0.1:7400", "[fd77::1]:7400"),
 * or NULL when it is not a plain host name or address. */
char *sp_timesync_host_of (const char *address);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (SpTimesyncConfig, sp_timesync_config_free)

G_END_DECLS
