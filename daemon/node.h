/* One cluster member: drives the Raft core from the GLib main loop with the
 * transport (messages), the storage (durability) and the store (the
 * replicated state).  Everything above it (D-Bus, systemd target, plugins)
 * watches its properties and signals.
 *
 * Loop: the core counts time in ticks of up to 10 ms, but the node sleeps
 * until the next tick that may act (sp_raft_ticks_until_due) and catches
 * the core up whenever it wakes, so an idle follower wakes only for its
 * leader's heartbeats, and an idle leader (see settled () in node.c) only
 * to send them, reading its followers' answers at the same time.  Each
 * received message or request steps the core; once per loop iteration the
 * pending ready batch is persisted in the storage worker, and only when it
 * is durable are its messages sent and its committed entries applied
 * (Raft's persist-before-send); the writes of a batch are answered once it
 * is applied and announced.  Requests that arrive meanwhile pile up in the
 * core and leave as the next batch.
 *
 * Writes go to the leader: on a follower they fail with
 * SP_NODE_ERROR_NOT_LEADER whose message names the leader and its address
 * (clients retry there; sparrowctl does).  Reads are linearizable by default
 * (served by the leader while its lease holds, after everything committed
 * before the read is applied); a stale read serves local state anywhere. */
#pragma once

#include <gio/gio.h>

#include "config.h"
#include "member-id.h"
#include "raft/raft.h"

G_BEGIN_DECLS

#define SP_NODE_ERROR (sp_node_error_quark ())
GQuark sp_node_error_quark (void);

typedef enum
{
  SP_NODE_ERROR_NOT_LEADER,
  SP_NODE_ERROR_NO_QUORUM, /* leader without a valid lease */
  SP_NODE_ERROR_INVALID_ARGUMENT,
  SP_NODE_ERROR_CONFLICT, /* compare-and-swap mismatch */
  SP_NODE_ERROR_NOT_FOUND,
  SP_NODE_ERROR_BUSY, /* transfer or membership change in progress; retry */
  SP_NODE_ERROR_STOPPED,
} SpNodeError;

#define SP_TYPE_NODE (sp_node_get_type ())
G_DECLARE_FINAL_TYPE (SpNode, sp_node, SP, NODE, GObject)

/* Properties (all emit notify on change): "name" (s), "role" (s:
 * follower, candidate (pre-vote included), leader, learner), "term" (t),
 * "leader" (s, "" when unknown), "leader-address" (s), "commit-index" (t),
 * "lease-valid" (b), "holder" (b: leader, lease valid, and the previous
 * holder's fence time (sp_fence_ms) has passed since the voters that
 * elected this node last heard it, unless a transfer elected it: what
 * plugins follow to hold addresses and units), "refused-entries" (t:
 * committed entries and snapshot records refused since start, see
 * sp_store_apply), "fence-keeper" (s: sp_node_get_fence_state).  Signals: "members-changed" () when
 * a member joins, leaves, or its reachability or match index moves (see sp_node_get_members),
 * "store-changed" (GVariant a(ssbt): key, value ("" when deleted), deleted, revision; every change
 * of one applied batch, in order, before the writes in it return), "failed" (s: why) once, see
 * below.
 *
 * The properties are brought up to date whenever the node wakes up (a
 * message, a request, the clock), before anything is answered or
 * published, and time is counted on CLOCK_BOOTTIME: no published lease
 * outlives its end, even after the process was stopped or the machine
 * suspended for a while.
 * Whoever answers from the properties without waking the node (the D-Bus
 * property getters) calls sp_node_refresh() first.
 *
 * Fail-stop: a node that cannot go on (its storage failed) gives up at
 * once: it publishes itself a follower without leader or lease, fails the
 * requests waiting, refuses writes and linearizable reads with
 * SP_NODE_ERROR_STOPPED naming the cause, and emits "failed".  Its owner
 * then stops it with sp_node_stop_async() (which releases what leadership
 * started through the handover hook) and exits with a failure status. */

SpNode *sp_node_new (SpConfig *config, GError **error);
/* Listens and starts ticking. */
gboolean sp_node_start (SpNode *node, GError **error);
/* Graceful stop: hands leadership over first if leader (bounded wait),
 * then flushes storage.  A failed node hands nothing over: it waits for
 * the handover hook's release instead. */
void sp_node_stop_async (SpNode *node, GAsyncReadyCallback callback, gpointer user_data);
gboolean sp_node_stop_finish (SpNode *node, GAsyncResult *result, GError **error);

const char *sp_node_get_name (SpNode *node);
const char *sp_node_get_role (SpNode *node);
guint64 sp_node_get_term (SpNode *node);
const char *sp_node_get_leader (SpNode *node);
const char *sp_node_get_leader_address (SpNode *node);
guint64 sp_node_get_commit_index (SpNode *node);
gboolean sp_node_get_lease_valid (SpNode *node);
gboolean sp_node_get_holder (SpNode *node);
guint64 sp_node_get_refused_entries (SpNode *node);

/* For a leader, how long from now until the previous holder's fence (see
 * fence.h) plus extra_ms has passed (0 when elected by a transfer). */
guint sp_node_fence_left_ms (SpNode *node, guint extra_ms);

/* The fence keeper (keeper.h; [cluster] fence-keeper): with [cluster]
 * fence = true the node is holder only while the keeper is armed with the
 * end of its lease.  Plugins add, from start on, the addresses they may
 * hold; the keeper removes them when a lease ends unextended.  The state:
 * "off", or sp_keeper_describe (). */
void sp_node_add_fence_address (SpNode *node, int family, const guint8 *addr, guint prefix,
                                const char *ifname);
const char *sp_node_get_fence_state (SpNode *node);

/* Called at the end of every wake-up that brought the published state up
 * to date: a stalled loop stops calling it (the service watchdog). */
typedef void (*SpNodeWakeFunc) (SpNode *node, gpointer user_data);
void sp_node_set_wake_func (SpNode *node, SpNodeWakeFunc func, gpointer user_data);
/* Catches up with the time that passed and publishes the result. */
void sp_node_refresh (SpNode *node);

typedef struct
{
  char *name;
  char *address; /* host:port */
  gboolean voter;
  gboolean reachable; /* leader: heard within an election timeout; else connected */
  guint64 match;      /* leader only, else 0 */
} SpNodeMember;

void sp_node_member_free (SpNodeMember *member);
/* Sorted by name; caller frees. */
GPtrArray *sp_node_get_members (SpNode *node);

/* Writes: complete once applied on this (leader) node. */
void sp_node_set_async (SpNode *node, const char *key, const char *value,
                        GAsyncReadyCallback callback, gpointer user_data);
void sp_node_delete_async (SpNode *node, const char *key, GAsyncReadyCallback callback,
                           gpointer user_data);
void sp_node_cas_async (SpNode *node, const char *key, guint64 expected_revision, const char *value,
                        GAsyncReadyCallback callback, gpointer user_data);
/* For set/delete/cas: the store revision after the write. */
gboolean sp_node_write_finish (SpNode *node, GAsyncResult *result, guint64 *revision,
                               GError **error);

/* Reads (synchronous: local state).  Linearizable unless stale. */
gboolean sp_node_get (SpNode *node, const char *key, gboolean stale, char **value,
                      guint64 *revision, GError **error);
GPtrArray *sp_node_list (SpNode *node, const char *prefix, gboolean stale, GError **error);

/* Administration: complete when the change is committed (transfer: when
 * another node is leader or the attempt timed out).  A transfer on a
 * non-leader that knows a leader asks that leader, which serves members'
 * requests as its own, and completes when the target leads (NULL or "":
 * anyone but that leader), else Busy after the same timeout. */
void sp_node_transfer_async (SpNode *node, const char *target, GAsyncReadyCallback callback,
                             gpointer user_data);
void sp_node_add_member_async (SpNode *node, const char *name, const char *address, gboolean voter,
                               GAsyncReadyCallback callback, gpointer user_data);
void sp_node_remove_member_async (SpNode *node, const char *name, GAsyncReadyCallback callback,
                                  gpointer user_data);
void sp_node_promote_member_async (SpNode *node, const char *name, GAsyncReadyCallback callback,
                                   gpointer user_data);
/* Where the other members reach name from now on (it is stopped, and
 * restarted listening there); complete once the record is applied here.
 * Not for the leader itself, nor during a membership change. */
void sp_node_set_member_address_async (SpNode *node, const char *name, const char *address,
                                       GAsyncReadyCallback callback, gpointer user_data);
gboolean sp_node_admin_finish (SpNode *node, GAsyncResult *result, GError **error);

/* Planned handover.  Before a leadership transfer the node calls every
 * hold's release and waits until each called sp_node_handover_released()
 * with its id; once the transfer is over (another node leads, or it
 * failed) it calls every resume.  Plugins use it to let go of addresses
 * and stop leader-only units before another node takes them.  Stopping a
 * failed node calls release too, and no resume.  Removing a hold counts as
 * its release. */
typedef void (*SpNodeHandoverFunc) (SpNode *node, gpointer user_data);
guint sp_node_add_handover_hold (SpNode *node, SpNodeHandoverFunc release,
                                 SpNodeHandoverFunc resume, gpointer user_data);
void sp_node_remove_handover_hold (SpNode *node, guint id);
void sp_node_handover_released (SpNode *node, guint id);
/* A hold that could not let go (why): the transfer is given up (it fails
 * with SP_NODE_ERROR_BUSY naming why, and every hold resumes), since the
 * new leader would hold at once. */
void sp_node_handover_failed (SpNode *node, guint id, const char *why);

G_END_DECLS
