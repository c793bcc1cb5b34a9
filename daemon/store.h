/* The replicated state machine: a small key/value store with revisions,
 * plus the address book of members (name -> address) that membership
 * changes need.  Deterministic: the same committed entries give the same
 * state on every node.  Commands are GVariants carried in NORMAL entries.
 *
 * Revisions: one counter for the whole store, bumped by every successful
 * write; each key remembers the revision of its last write, which is what
 * compare-and-swap compares. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define SP_STORE_MAX_KEY   256         /* bytes */
#define SP_STORE_MAX_VALUE (64 * 1024) /* bytes */

#define SP_STORE_ERROR (sp_store_error_quark ())
GQuark sp_store_error_quark (void);

typedef enum
{
  SP_STORE_ERROR_INVALID,   /* bad key/value/command (never applied) */
  SP_STORE_ERROR_CONFLICT,  /* compare-and-swap: revision did not match */
  SP_STORE_ERROR_NOT_FOUND, /* delete of a missing key */
  SP_STORE_ERROR_REFUSED,   /* member record that does not apply (see below) */
} SpStoreError;

typedef struct _SpStore SpStore;

/* Called after every applied change; value NULL means deleted. */
typedef void (*SpStoreWatch) (const char *key, const char *value, guint64 revision,
                              gpointer user_data);

SpStore *sp_store_new (void);
void sp_store_free (SpStore *store);
void sp_store_set_watch (SpStore *store, SpStoreWatch watch, gpointer user_data);

/* Keys: 1 to SP_STORE_MAX_KEY bytes of UTF-8 without the characters of
 * sp_text_is_unsafe (control characters, DEL, bidi overrides and isolates),
 * so that a listing shows every key as it is.  The one rule for every
 * request naming a key, and for every key applied or restored: a leader
 * that builds its own entries gets no further than one that asks.  A
 * prefix may also be empty.  Member records: a name of sp_config_valid_name
 * and an address of sp_address_parse, alike when proposed, applied and
 * restored. */
gboolean sp_store_check_key (const char *key, GError **error);
gboolean sp_store_check_prefix (const char *prefix, GError **error);

/* Commands to propose.  They validate their arguments (key rule, sizes). */
GBytes *sp_store_cmd_set (const char *key, const char *value, GError **error);
GBytes *sp_store_cmd_delete (const char *key, GError **error);
/* expected_revision 0: the key must not exist. */
GBytes *sp_store_cmd_cas (const char *key, guint64 expected_revision, const char *value,
                          GError **error);
/* The address of a member being added / the new address of a member. */
GBytes *sp_store_cmd_member (const char *name, const char *address, GError **error);
GBytes *sp_store_cmd_member_address (const char *name, const char *address, GError **error);
/* The name and address in a record of sp_store_cmd_member, without
 * applying it; FALSE for anything else. */
gboolean sp_store_cmd_member_parse (GBytes *cmd, char **name, char **address);

/* Applies a committed command.  On success *revision is the store revision
 * after it.  A failed CAS or delete changes nothing; a command that is
 * malformed or breaks the rules above (SP_STORE_ERROR_INVALID: it can only
 * come from a buggy or hostile leader) changes nothing either, except that
 * a member record still advances the revision (see
 * sp_store_set_member_check); a refused member record: see there. */
gboolean sp_store_apply (SpStore *store, GBytes *cmd, guint64 *revision, GError **error);

guint64 sp_store_revision (const SpStore *store);
/* NULL when absent; *revision (may be NULL) gets the key's last write. */
const char *sp_store_get (const SpStore *store, const char *key, guint64 *revision);
/* Sorted keys starting with prefix ("" = all). */
GPtrArray *sp_store_list (const SpStore *store, const char *prefix);
/* Address of a member added (or moved) at run time, or NULL. */
const char *sp_store_member_address (const SpStore *store, const char *name);
typedef void (*SpStoreMemberFunc) (const char *name, const char *address, gpointer user_data);
void sp_store_foreach_member (const SpStore *store, SpStoreMemberFunc func, gpointer user_data);
/* Called after a member record is applied. */
void sp_store_set_member_watch (SpStore *store, SpStoreMemberFunc watch, gpointer user_data);
/* Asked before a member record is applied: TRUE when name is a member of
 * the configuration as of that entry.  A record of sp_store_cmd_member for
 * a member, or of sp_store_cmd_member_address for a name that is not one,
 * is refused (SP_STORE_ERROR_REFUSED) and changes no address: a member's
 * address changes only when asked for explicitly, never as a side effect
 * of adding it again.  A refused record still advances the revision, as
 * every member record always did, so that a log written by an older
 * version gives the same revisions.  The answer must be the same on every
 * node (the applied configuration). */
typedef gboolean (*SpStoreMemberCheck) (const char *name, gpointer user_data);
void sp_store_set_member_check (SpStore *store, SpStoreMemberCheck is_member, gpointer user_data);

GBytes *sp_store_snapshot (const SpStore *store);
/* Replaces the state; on error (a snapshot that is malformed as a whole)
 * the store is unchanged.  A record that breaks the rules above is left
 * out, the same on every node, as applying its command would have refused
 * it; refused (may be NULL) gets one message per record left out. */
gboolean sp_store_restore (SpStore *store, GBytes *snapshot, GPtrArray *refused, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (SpStore, sp_store_free)

G_END_DECLS
