/* The [vip] group: the service addresses and how they are announced.
 * Shared by the plugin (probe) and sparrow-vip-cleanup, so both agree on
 * what "this node's addresses" are.
 *
 *   [vip]
 *   addresses = 10.77.0.100/24@eth0;fd77::100/64@eth0
 *                            ADDRESS/PREFIX@INTERFACE, ';'-separated (required)
 *   announce-count = 3       gratuitous ARP / unsolicited NA per burst (0: none)
 *   announce-interval-ms = 100
 *   refresh-s = 0            re-announce every N s while held (0: never)
 *   probe-ms = 50            ARP probe / neighbour solicitation window before
 *                            adding (0: no probe)
 *   on-failure = transfer    transfer: hand leadership to another node when
 *                            the addresses cannot be held; stay: report only
 *
 * Errors name the file that set the key, the key and what was expected. */
#pragma once

#include <gio/gio.h>

#include "config.h"

G_BEGIN_DECLS

typedef struct
{
  int family;      /* AF_INET or AF_INET6 */
  guint8 addr[16]; /* network order; 4 bytes for IPv4 */
  guint prefix;
  char *ifname;
  char *address; /* "10.77.0.100", canonical */
  char *text;    /* "10.77.0.100/24@eth0", canonical */
} SpVipAddress;

typedef struct
{
  GPtrArray *addresses; /* of SpVipAddress*, at least one, no duplicates */
  guint announce_count;
  guint announce_interval_ms;
  guint refresh_s;
  guint probe_ms;
  gboolean transfer_on_failure;
} SpVipConfig;

/* Parses one ADDRESS/PREFIX@INTERFACE; the message says what was expected. */
SpVipAddress *sp_vip_address_parse (const char *text, GError **error);
void sp_vip_address_free (SpVipAddress *address);

/* Reads and claims [vip]; NULL without error when the group is absent.
 * warnings may be NULL. */
SpVipConfig *sp_vip_config_read (SpConfig *config, GPtrArray *warnings, GError **error);
void sp_vip_config_free (SpVipConfig *config);

/* What a run of sparrowd may hold, recorded from its configuration by
 * sparrow-vip-cleanup --record (as root, before sparrowd starts), one
 * address a line: the clean-up after the run removes those whatever the
 * configuration file has become since (edited, broken).  In a directory
 * of root's own, mode 0700: sparrowd, user sparrow, can neither write
 * nor replace it.  load: NULL without error when there is no record. */
#define SP_VIP_RECORD_PATH "/run/sparrow-cleanup/vip-addresses"
gboolean sp_vip_record_save (const char *path, GPtrArray *addresses, GError **error);
GPtrArray *sp_vip_record_load (const char *path, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (SpVipAddress, sp_vip_address_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (SpVipConfig, sp_vip_config_free)

G_END_DECLS
