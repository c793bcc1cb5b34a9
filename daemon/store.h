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
 * request naming a key; a prefix may also be empty.  Applying and restoring
 * check only UTF-8 and size, so that data written before the rule loads. */
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
 * after it.  A failed CAS or delete changes nothing; a malformed command
 * (it can only come from a buggy or hostile peer) changes nothing either;
 * a refused member record: see sp_store_set_member_check. */
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
/* Replaces the state; on error the store is unchanged. */
gboolean sp_store_restore (SpStore *store, GBytes *snapshot, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (SpStore, sp_store_free)

G_END_DECLS
