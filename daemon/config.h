/* sparrowd's configuration: /etc/sparrow/sparrow.conf (GKeyFile) and the
 * drop-ins sparrow.conf.d/NAME.conf beside it, applied in name order (a key
 * in a drop-in overrides the same key before it).
 *
 *   [node]
 *   name = alpha                     this member's name (required)
 *   listen = 192.0.2.1:7400          host:port, IPv6 as [2001:db8::1]:7400 (required)
 *   data-dir = /var/lib/sparrow
 *   strict = false                   true: every warning is an error (as --strict)
 *   [cluster]
 *   initial-members = alpha=192.0.2.1:7400;beta=192.0.2.2:7400;gamma=192.0.2.3:7400
 *   heartbeat-ms = 250
 *   election-ms = 600                minimum election timeout (at least 2 heartbeats)
 *   join = false                     true: join an existing cluster (never bootstrap;
 *                                    initial-members then only tells where peers are)
 *   snapshot-entries = 10000         applied entries between snapshots (log compaction)
 *   fence = true                     a new leader waits out the previous holder's fence
 *                                    time (sp_fence_ms) before it holds anything; false:
 *                                    faster, but a stalled old leader may overlap
 *   keeper-ms = 20                   the fence keeper's reaction at the end of a lease
 *                                    (timer wake-up, address removal): part of the fence
 *   leader-watchdog-ms = heartbeat + 200   the service watchdog while leading
 *   cleanup-ms = 200                 worst case of the unit's ExecStopPost clean-up
 *   units-stop-ms = 500              what leader-only units may take to stop
 *   fence-keeper = /run/sparrow-fence/keeper.sock   the fence keeper's socket
 *                                    (sparrow-fence); with fence = true no node holds
 *                                    anything without it
 *   [tls]
 *   ca = /etc/sparrow/tls/ca.pem
 *   cert = /etc/sparrow/tls/node.pem
 *   key = /etc/sparrow/tls/node.key
 *   insecure = false                 true: plaintext (warned at every start)
 *   revoked = FP;FP...               SHA-256 fingerprints of certificates refused
 *                                    though the CA signed them (removed members')
 *
 * Plugins read their own groups through the accessors at the end.
 *
 * Every error names the file, the group/key and what was expected; unknown
 * groups/keys, and voter counts that tolerate less than they seem to, are
 * warnings, not errors (unless strict). */
#pragma once

#include <glib.h>

#include "keeper-proto.h"

G_BEGIN_DECLS

#define SP_CONFIG_DEFAULT_PATH       "/etc/sparrow/sparrow.conf"
#define SP_CONFIG_DEFAULT_DATA_DIR   "/var/lib/sparrow"
#define SP_CONFIG_DEFAULT_CLEANUP_MS 200
#define SP_CONFIG_DEFAULT_KEEPER_MS  20
/* A leader feeds the watchdog every heartbeat: this much late is tolerated. */
#define SP_CONFIG_LEADER_WATCHDOG_MARGIN_MS 200
#define SP_CONFIG_DEFAULT_UNITS_STOP_MS     500
#define SP_CONFIG_DEFAULT_FENCE_KEEPER      SP_KEEPER_SOCKET

#define SP_CONFIG_ERROR (sp_config_error_quark ())
GQuark sp_config_error_quark (void);

typedef enum
{
  SP_CONFIG_ERROR_PARSE,   /* not a key file: message has file and line */
  SP_CONFIG_ERROR_MISSING, /* a required key is absent */
  SP_CONFIG_ERROR_INVALID, /* a value is not what was expected */
} SpConfigError;

typedef struct
{
  char *name;
  char *host; /* literal address or host name, without brackets */
  guint16 port;
} SpConfigMember;

typedef struct
{
  char *path; /* main file as given */
  char *node_name;
  char *listen_host;
  guint16 listen_port;
  char *data_dir;
  gboolean strict;
  GPtrArray *initial_members; /* of SpConfigMember*, may be empty */
  guint heartbeat_ms;
  guint election_ms;
  gboolean join;
  guint snapshot_entries;
  gboolean fence;
  guint keeper_ms;
  guint leader_watchdog_ms;
  guint cleanup_ms;
  guint units_stop_ms;
  char *fence_keeper;
  char *tls_ca;
  char *tls_cert;
  char *tls_key;
  GStrv tls_revoked; /* of sp_config_normalize_fingerprint; NULL when none */
  gboolean insecure;
  struct _SpConfigLoader *loader; /* the merged files, for the accessors below */
} SpConfig;

/* Member names: the one rule for the configuration, the member changes of
 * the running cluster and the certificates of tools/sparrow-certs (its
 * shell copy says the same). */
#define SP_CONFIG_NAME_MAX 63
#define SP_CONFIG_NAME_RULE                                                                        \
  "1 to " G_STRINGIFY (SP_CONFIG_NAME_MAX) " letters, digits, '_', '.' or '-'"
gboolean sp_config_valid_name (const char *name);

/* A certificate's SHA-256 fingerprint as [tls] revoked takes it (colons
 * and case ignored, as openssl x509 -fingerprint -sha256 prints it) to 64
 * lowercase hex digits; NULL when it is not one. */
char *sp_config_normalize_fingerprint (const char *fingerprint);

/* How many voters of n may fail with the rest still a quorum. */
guint sp_config_failures_tolerated (guint voters);

/* warnings (may be NULL) receives one string per warning. */
SpConfig *sp_config_load (const char *path, GPtrArray *warnings, GError **error);
void sp_config_free (SpConfig *config);
/* The initial member called name, or NULL. */
const SpConfigMember *sp_config_find_member (const SpConfig *config, const char *name);

/* ---- for plugins: their own groups, with the same error quality -------- */

gboolean sp_config_has_group (const SpConfig *config, const char *group);
/* Takes group for a plugin: its keys not in keys (NULL-terminated) are
 * warned about, and it is not an unknown group any more. */
void sp_config_claim (SpConfig *config, const char *group, const char *const *keys,
                      GPtrArray *warnings);
/* The groups neither the core nor a plugin took, once plugins probed. */
void sp_config_warn_unclaimed (const SpConfig *config, GPtrArray *warnings);
/* Each leaves *out alone when the key is absent. */
gboolean sp_config_get_string (const SpConfig *config, const char *group, const char *key,
                               char **out, GError **error);
/* A ';'-separated list, items stripped. */
gboolean sp_config_get_strv (const SpConfig *config, const char *group, const char *key, GStrv *out,
                             GError **error);
gboolean sp_config_get_uint (const SpConfig *config, const char *group, const char *key, guint min,
                             guint max, guint *out, GError **error);
gboolean sp_config_get_bool (const SpConfig *config, const char *group, const char *key,
                             gboolean *out, GError **error);
/* Sets "FILE: [group] key: what", FILE being where the key was set, and
 * returns FALSE. */
gboolean sp_config_error (const SpConfig *config, GError **error, SpConfigError code,
                          const char *group, const char *key, const char *format, ...)
    G_GNUC_PRINTF (6, 7);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (SpConfig, sp_config_free)

G_END_DECLS
