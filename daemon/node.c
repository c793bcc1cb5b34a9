#include "node.h"

#include <string.h>
#include <time.h>

#include "address.h"
#include "fence.h"
#include "keeper.h"
#include "storage.h"
#include "store.h"
#include "text.h"
#include "tls-files.h"
#include "transport.h"
#ifdef SP_NODE_TESTING
#include "node-testing.h"
#endif

typedef enum
{
  PENDING_WRITE,
  PENDING_CONF,
} PendingKind;

typedef struct
{
  PendingKind kind;
  guint64 index;
  guint64 term;
  GTask *task;
  gint64 deadline; /* now_usec () */
  GList link;      /* in SpNode.expiring */
  GError *error;   /* the answer, once applied */
  guint64 revision;
} Pending;

struct _SpNode
{
  GObject parent_instance;

  SpConfig *config;
  char *name;
  guint64 id;
  guint tick_ms;
  guint election_ticks;

  SpRaft *raft;
  SpStorage *storage;
  SpTransport *transport;
  SpStore *store;

  GHashTable *names;     /* id (guint64*) -> name */
  GHashTable *addresses; /* name -> host:port */
  GHashTable *peers;     /* ids (guint64*) the transport currently dials */
  SpRaftConf peers_conf; /* the configuration peers were synced to */
  gint64 drops_since;    /* log_drop's window */
  guint drops_logged;
  guint drops_suppressed;
  gboolean rechecking; /* admit_peer is asked by sp_transport_recheck */
  gboolean learned;    /* a member record was applied since peers were synced */
  /* The configuration as of the applied index, the same on every node (the
   * one appended last, sp_raft_conf, may be ahead of it). */
  SpRaftConf applied_conf;
  /* Committed entries and snapshot records the rules refused (see
   * apply_entry), and the count as last published. */
  guint64 refused;
  guint64 refused_published;

  /* The core ticks every tick_ms, lazily: the clock source sleeps until
   * the next tick the core says may act (or a request expires), and every
   * input first catches the core up with the ticks that passed. */
  GSource *clock;
  gint64 clock_start; /* now_usec () of tick 0 */
  guint64 ticks;      /* ticks given to the core */
  guint ready_source;
  gboolean in_clock; /* on_clock runs the batch itself: no idle pass */
  gboolean persisting;
  guint64 published_at;     /* the tick the published state is as of */
  guint persist_stall;      /* fails the node if the storage does not answer */
  gboolean storage_stalled; /* it did not: its worker may never come back */
  gboolean failed;          /* no durable storage any more: failed, or stopped */
  char *failure;            /* why it failed, NULL when it did not */
  SpRaftHardState saved_hs; /* last hard state handed to the storage */
  GHashTable *pending;      /* index (guint64*) -> Pending */
  GVariantBuilder *changes; /* store changes applied in this batch, a(ssbt) */
  GQueue expiring;          /* the same Pendings, oldest first */

  GTask *transfer_task;
  GArray *holds;        /* of Hold: who takes part in a planned handover */
  guint next_hold;      /* the id of the next hold */
  guint releasing;      /* holds the handover still waits for */
  char *unreleased;     /* why one of them could not let go, NULL when all did */
  guint64 transfer_to;  /* its target */
  guint64 transfer_via; /* forwarded: the leader asked, else SP_RAFT_NONE */
  guint transfer_timeout;
  GTask *stop_task;
  guint stop_timeout;
  gboolean stopping;

  /* last published values, for change notification */
  SpRaftProgress seen[SP_RAFT_MAX_NODES]; /* members as last told: id, match, recent */
  guint n_seen;
  SpRaftRole role;
  guint64 term;
  char *leader;
  char *leader_address;
  guint64 commit_index;
  gboolean lease_valid;
  gboolean holder;
  SpFence fence;     /* this leader's, on now_usec () */
  guint fence_ms;    /* sp_fence_ms () */
  SpKeeper *keeper;  /* the fence keeper's link, NULL with [cluster] fence = false */
  char *fence_state; /* sp_node_get_fence_state () as last published */

  SpNodeWakeFunc wake_func;
  gpointer wake_data;
};

typedef struct
{
  guint id;
  gboolean releasing;
  SpNodeHandoverFunc release;
  SpNodeHandoverFunc resume;
  gpointer user_data;
} Hold;

enum
{
  PROP_0,
  PROP_NAME,
  PROP_ROLE,
  PROP_TERM,
  PROP_LEADER,
  PROP_LEADER_ADDRESS,
  PROP_COMMIT_INDEX,
  PROP_LEASE_VALID,
  PROP_HOLDER,
  PROP_REFUSED_ENTRIES,
  PROP_FENCE_KEEPER,
  N_PROPS
};

enum
{
  SIGNAL_MEMBERS_CHANGED,
  SIGNAL_STORE_CHANGED,
  SIGNAL_FAILED,
  N_SIGNALS
};

static GParamSpec *props[N_PROPS];
static guint signals[N_SIGNALS];

G_DEFINE_TYPE (SpNode, sp_node, G_TYPE_OBJECT)

GQuark
sp_node_error_quark (void)
{
  return g_quark_from_static_string ("sp-node-error-quark");
}

void
sp_node_member_free (SpNodeMember *member)
{
  g_free (member->name);
  g_free (member->address);
  g_free (member);
}

static const char *
id_name (SpNode *node, guint64 id)
{
  const char *name = g_hash_table_lookup (node->names, &id);

  return name ? name : "";
}

static void
learn_member (SpNode *node, const char *name, const char *address)
{
  guint64 *id = g_new (guint64, 1);

  *id = sp_member_id (name);
  g_hash_table_replace (node->names, id, g_strdup (name));
  if (address)
    g_hash_table_replace (node->addresses, g_strdup (name), g_strdup (address));
}

/* Every address comes through the one parser before it is dialled,
 * wherever it was read (the configuration, the store, an entry). */
static gboolean
split_address (const char *address, char **host, guint16 *port)
{
  return sp_address_parse (address, host, port);
}

/* added: addresses by id from configuration entries not applied yet (see
 * unapplied_addresses), newer than the store's records and the file's. */
static const char *
member_address (SpNode *node, GHashTable *added, guint64 id, const char *name)
{
  const char *address = g_hash_table_lookup (added, &id);

  return address ? address : g_hash_table_lookup (node->addresses, name);
}

static void
want_peer (SpNode *node, GHashTable *wanted, GHashTable *added, guint64 id, const char *name)
{
  const char *address;
  g_autofree char *host = NULL;
  guint16 port;

  if (id == node->id || g_hash_table_contains (wanted, &id))
    return;
  /* A member added at run time by an older version, whose record this node
   * has not applied yet (replaying its log, or catching up): dialled once
   * it has. */
  if (!name)
    return;
  address = member_address (node, added, id, name);
  if (!address || !split_address (address, &host, &port))
    {
      g_warning ("member %s has no known address", name);
      return;
    }
  if (!g_hash_table_contains (node->peers, &id))
    g_message ("member %s is at %s", name, address);
  sp_transport_set_peer (node->transport, id, name, host, port);
  g_hash_table_add (wanted, g_memdup2 (&id, sizeof id));
}

/* A configuration takes effect when appended, and the entry that adds a
 * member carries its address record, applied with it once committed.  The
 * leader must reach the new member before then (it may count in the
 * quorum), and so must any node that may lead next.  Returns the addresses
 * in the entries this node holds but has not applied, by member id (the
 * newest entry wins).  Their names are learned (an id is the hash of its
 * name, so that is never wrong); their addresses are recorded only when
 * applied. */
static GHashTable *
unapplied_addresses (SpNode *node)
{
  GHashTable *added = g_hash_table_new_full (g_int64_hash, g_int64_equal, g_free, g_free);
  guint64 last = sp_raft_last_index (node->raft);

  /* The usual case, no change under way: no walk through the log. */
  if (sp_raft_conf_equal (sp_raft_conf (node->raft), &node->applied_conf))
    return added;
  for (guint64 i = sp_raft_applied_index (node->raft) + 1; i <= last; i++)
    {
      const SpRaftEntry *e = sp_raft_entry_at (node->raft, i);
      g_autofree char *name = NULL;
      char *address;

      if (!e || e->type != SP_RAFT_ENTRY_CONF || !e->data
          || !sp_store_cmd_member_parse (e->data, &name, &address))
        continue;
      learn_member (node, name, NULL);
      g_hash_table_replace (added, g_memdup2 (&(guint64){ sp_member_id (name) }, sizeof (guint64)),
                            address);
    }
  return added;
}

/* The transport talks to every other member of the configuration.  A node
 * outside it (joining, not yet replicated the configuration that adds it)
 * talks to every member it knows an address of, so it can answer the
 * leader. */
static void
sync_peers (SpNode *node)
{
  const SpRaftConf *conf = sp_raft_conf (node->raft);
  g_autoptr (GHashTable) wanted = g_hash_table_new_full (g_int64_hash, g_int64_equal, g_free, NULL);
  g_autoptr (GHashTable) added = unapplied_addresses (node);
  gboolean inside = FALSE;
  GHashTableIter iter;
  gpointer key, value;

  for (guint i = 0; i < conf->n_voters + conf->n_learners; i++)
    {
      guint64 id = i < conf->n_voters ? conf->voters[i] : conf->learners[i - conf->n_voters];

      inside |= id == node->id;
      want_peer (node, wanted, added, id, g_hash_table_lookup (node->names, &id));
    }
  if (!inside)
    {
      g_hash_table_iter_init (&iter, node->names);
      while (g_hash_table_iter_next (&iter, &key, &value))
        want_peer (node, wanted, added, *(guint64 *)key, value);
    }
  g_hash_table_iter_init (&iter, node->peers);
  while (g_hash_table_iter_next (&iter, &key, NULL))
    if (!g_hash_table_contains (wanted, key))
      sp_transport_remove_peer (node->transport, *(guint64 *)key);
  g_clear_pointer (&node->peers, g_hash_table_unref);
  node->peers = g_steal_pointer (&wanted);
  node->peers_conf = *conf;
  node->learned = FALSE;
  node->rechecking = TRUE;
  sp_transport_recheck (node->transport);
  node->rechecking = FALSE;
}

static gboolean advance_clock (SpNode *node);
static void schedule_ready (SpNode *node);

/* Only members get past the transport's hello (see transport.h for the
 * stranger a lagging member takes as its leader). */
static gboolean
admit_peer (guint64 id, const char *name, gpointer user_data)
{
  SpNode *node = user_data;

  if (id != sp_member_id (name))
    return FALSE;
  /* At a hello the core catches up with the time (a follower whose leader
   * is gone may sleep long); a recheck runs within a batch, in time. */
  if (!node->rechecking && advance_clock (node))
    schedule_ready (node);
  return sp_raft_is_member (node->raft, id) || id == sp_raft_leader (node->raft)
         || sp_raft_accepts_stranger (node->raft, id);
}

/* ---- publishing state --------------------------------------------------- */

/* A leader with nothing in flight: its lease holds, everything is
 * committed, applied and replicated everywhere, no request waits.  Its
 * followers' answers then only renew the lease, and are read once per
 * heartbeat (when the clock fires) instead of waking the process for each.
 * Reading them up to a heartbeat late costs nothing: the lease runs from
 * when a heartbeat was sent, not from when its answer was read; it only
 * takes the clock one extra wake-up per heartbeat if two heartbeats do not
 * fit in a lease. */
static gboolean
settled (SpNode *node)
{
  SpRaftProgress prs[SP_RAFT_MAX_NODES];
  guint64 last = sp_raft_last_index (node->raft);
  guint n;

  if (sp_raft_role (node->raft) != SP_RAFT_LEADER || !sp_raft_lease_valid (node->raft)
      || sp_raft_commit_index (node->raft) != last || sp_raft_applied_index (node->raft) != last
      || g_hash_table_size (node->pending) > 0 || node->transfer_task
      || sp_raft_transfer_target (node->raft) != SP_RAFT_NONE)
    return FALSE;
  n = sp_raft_progress (node->raft, prs);
  for (guint i = 0; i < n; i++)
    if (prs[i].match != last)
      return FALSE;
  return TRUE;
}

/* Whether a member's reachability or match index moved since the last
 * call: noticed here, on every batch (a heartbeat at the latest, or the
 * clock when a member's time runs out), rather than by polling. */
static gboolean
members_moved (SpNode *node)
{
  const SpRaftConf *conf = sp_raft_conf (node->raft);
  SpRaftProgress now[SP_RAFT_MAX_NODES];
  gboolean moved;
  guint n = 0;

  if (sp_raft_role (node->raft) == SP_RAFT_LEADER)
    n = sp_raft_progress (node->raft, now);
  else
    for (guint i = 0; i < conf->n_voters + conf->n_learners; i++)
      {
        guint64 id = i < conf->n_voters ? conf->voters[i] : conf->learners[i - conf->n_voters];

        now[n++] = (SpRaftProgress){
          .id = id,
          .voter = i < conf->n_voters,
          .recent = id == node->id || sp_transport_peer_connected (node->transport, id),
        };
      }
  moved = n != node->n_seen;
  for (guint i = 0; i < n && !moved; i++)
    moved = now[i].id != node->seen[i].id || now[i].match != node->seen[i].match
            || now[i].recent != node->seen[i].recent || now[i].voter != node->seen[i].voter;
  memcpy (node->seen, now, n * sizeof now[0]);
  node->n_seen = n;
  return moved;
}

/* Freezes notifications at the first change of a batch, so that the batch
 * makes one PropertiesChanged, and an unchanged batch (most heartbeats)
 * touches nothing of GObject's. */
static void
property_changed (SpNode *node, GParamSpec *pspec, gboolean *frozen)
{
  if (!*frozen)
    g_object_freeze_notify (G_OBJECT (node));
  *frozen = TRUE;
  g_object_notify_by_pspec (G_OBJECT (node), pspec);
}

static gboolean advance_clock (SpNode *node);
static void schedule_ready (SpNode *node);
static gint64 now_usec (void);

/* When the lease ends (CLOCK_BOOTTIME us, -1 never): its tick comes then. */
static gint64
lease_end (SpNode *node)
{
  guint left = sp_raft_lease_ticks_left (node->raft);

  if (left == G_MAXUINT)
    return -1;
  return node->clock_start + (gint64)(node->ticks + left) * node->tick_ms * 1000;
}

/* What is published is the state of now: the lease counts the time that
 * passed since the core was last ticked (the process may have been stopped
 * meanwhile).  Callers run the ready batch those ticks may leave.  A failed
 * node holds nothing: a follower of nobody without a lease, whatever its
 * frozen core still says. */
static void
publish (SpNode *node)
{
  SpRaftRole role;
  guint64 term, commit;
  const char *leader, *address;
  gboolean lease, want, holder, frozen = FALSE;

  advance_clock (node);
  term = sp_raft_term (node->raft);
  /* Published before the batch is applied: never ahead of what this node
   * serves, so CommitIndex >= N still means a stale read sees N. */
  commit = MIN (sp_raft_commit_index (node->raft), sp_raft_applied_index (node->raft));
  role = sp_raft_role (node->raft);
  if (node->failed && role != SP_RAFT_LEARNER)
    role = SP_RAFT_FOLLOWER;
  leader = node->failed ? "" : id_name (node, sp_raft_leader (node->raft));
  address = g_hash_table_lookup (node->addresses, leader);
  lease = !node->failed && sp_raft_lease_valid (node->raft);
  /* The fence runs from the last time a voter that elected this node may
   * have heard the previous leader; a transfer means that leader let go
   * first. */
  if (role != SP_RAFT_LEADER)
    sp_fence_clear (&node->fence);
  else if (!sp_fence_started (&node->fence))
    sp_fence_start (&node->fence, now_usec (), sp_raft_heard_age (node->raft), node->tick_ms,
                    node->fence_ms, sp_raft_won_by_transfer (node->raft));
  want = lease && role == SP_RAFT_LEADER && sp_fence_over (&node->fence, now_usec ());
  holder = want;
  /* Only with the keeper armed with the end of this lease: it takes the
   * addresses away then, whatever this process does.  A node that does not
   * want to hold tells the keeper its deadline is final. */
  if (node->keeper && want)
    holder = sp_keeper_hold_until (node->keeper, lease_end (node));
  else if (node->keeper)
    sp_keeper_let_go (node->keeper);

  /* After every batch: how the transport should read until the next. */
  sp_transport_set_eager (node->transport, !settled (node));
  if (role != node->role)
    {
      /* How leadership came, for whoever counts elections (bench/vip-bench.py
       * --scenarios rolling): a planned handover should never need one. */
      if (role == SP_RAFT_LEADER)
        g_message ("leading in term %" G_GUINT64_FORMAT ": %s", term,
                   sp_raft_won_by_transfer (node->raft) ? "handed over" : "elected");
      node->role = role;
      property_changed (node, props[PROP_ROLE], &frozen);
    }
  if (term != node->term)
    {
      node->term = term;
      property_changed (node, props[PROP_TERM], &frozen);
    }
  if (g_strcmp0 (leader, node->leader) != 0)
    {
      g_free (node->leader);
      node->leader = g_strdup (leader);
      property_changed (node, props[PROP_LEADER], &frozen);
    }
  if (g_strcmp0 (address ? address : "", node->leader_address) != 0)
    {
      g_free (node->leader_address);
      node->leader_address = g_strdup (address ? address : "");
      property_changed (node, props[PROP_LEADER_ADDRESS], &frozen);
    }
  if (commit != node->commit_index)
    {
      node->commit_index = commit;
      property_changed (node, props[PROP_COMMIT_INDEX], &frozen);
    }
  if (lease != node->lease_valid)
    {
      node->lease_valid = lease;
      property_changed (node, props[PROP_LEASE_VALID], &frozen);
    }
  if (holder != node->holder)
    {
      node->holder = holder;
      property_changed (node, props[PROP_HOLDER], &frozen);
    }
  if (g_strcmp0 (sp_node_get_fence_state (node), node->fence_state) != 0)
    {
      g_free (node->fence_state);
      node->fence_state = g_strdup (sp_node_get_fence_state (node));
      property_changed (node, props[PROP_FENCE_KEEPER], &frozen);
    }
  if (node->refused != node->refused_published)
    {
      node->refused_published = node->refused;
      property_changed (node, props[PROP_REFUSED_ENTRIES], &frozen);
    }
  if (frozen)
    g_object_thaw_notify (G_OBJECT (node));
  if (members_moved (node))
    g_signal_emit (node, signals[SIGNAL_MEMBERS_CHANGED], 0);
  node->published_at = node->ticks;
  if (node->wake_func)
    node->wake_func (node, node->wake_data);
}

/* ---- pending requests --------------------------------------------------- */

static void
pending_free (Pending *p)
{
  g_clear_object (&p->task);
  g_clear_error (&p->error);
  g_free (p);
}

static void
fail_pending (SpNode *node, guint64 index, GError *error)
{
  Pending *p = g_hash_table_lookup (node->pending, &index);

  g_task_return_error (p->task, error);
  g_queue_unlink (&node->expiring, &p->link);
  g_hash_table_remove (node->pending, &index);
}

/* The node's clock: CLOCK_BOOTTIME, the monotonic clock that also counts
 * the time the machine was suspended.  A leader that slept through the end
 * of its lease finds it over when it wakes, as its peers did meanwhile. */
static gint64
now_usec (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_BOOTTIME, &ts);
  return (gint64)ts.tv_sec * G_USEC_PER_SEC + ts.tv_nsec / 1000;
}

/* Requests not committed within their deadline fail (from the clock). */
static void
expire_pending (SpNode *node)
{
  gint64 now = now_usec ();
  Pending *p;

  while ((p = g_queue_peek_head (&node->expiring)) && p->deadline <= now)
    fail_pending (node, p->index,
                  g_error_new (SP_NODE_ERROR, SP_NODE_ERROR_NO_QUORUM,
                               "not committed in time (entry %" G_GUINT64_FORMAT
                               "): no quorum? The write may still be applied later",
                               p->index));
}

/* A request whose entry was replaced by another leader's. */
static GError *
superseded_error (guint64 index)
{
  return g_error_new (SP_NODE_ERROR, SP_NODE_ERROR_NOT_LEADER,
                      "leadership changed before entry %" G_GUINT64_FORMAT
                      " committed; the request was not applied",
                      index);
}

static void
add_pending (SpNode *node, guint64 index, PendingKind kind, GTask *task)
{
  Pending *p = g_new0 (Pending, 1);
  guint64 *key = g_new (guint64, 1);

  /* An index proposed in an earlier term that never committed. */
  if (g_hash_table_contains (node->pending, &index))
    fail_pending (node, index, superseded_error (index));
  *key = index;
  p->kind = kind;
  p->index = index;
  p->term = sp_raft_term (node->raft);
  p->task = g_object_ref (task);
  p->deadline = now_usec () + 20 * (gint64)node->config->election_ms * 1000;
  p->link.data = p;
  g_queue_push_tail_link (&node->expiring, &p->link);
  g_hash_table_insert (node->pending, key, p);
}

static GError *
raft_error_to_node (GError *error, SpNode *node)
{
  gint code = SP_NODE_ERROR_INVALID_ARGUMENT;

  if (g_error_matches (error, SP_RAFT_ERROR, SP_RAFT_ERROR_NOT_LEADER))
    {
      const char *leader = id_name (node, sp_raft_leader (node->raft));
      const char *address = g_hash_table_lookup (node->addresses, leader);
      GError *e;

      if (!*leader)
        e = g_error_new (SP_NODE_ERROR, SP_NODE_ERROR_NOT_LEADER,
                         "%s is not the leader and no leader is known right now", node->name);
      else
        e = g_error_new (SP_NODE_ERROR, SP_NODE_ERROR_NOT_LEADER,
                         "%s is not the leader; the leader is %s at %s", node->name, leader,
                         address ? address : "an unknown address");
      g_error_free (error);
      return e;
    }
  if (error->domain == SP_RAFT_ERROR
      && (error->code == SP_RAFT_ERROR_TRANSFERRING || error->code == SP_RAFT_ERROR_CONF_PENDING
          || error->code == SP_RAFT_ERROR_NOT_READY || error->code == SP_RAFT_ERROR_NOT_CAUGHT_UP))
    code = SP_NODE_ERROR_BUSY;
  error->domain = SP_NODE_ERROR;
  error->code = code;
  return error;
}

/* ---- ready processing --------------------------------------------------- */

/* Takes the request waiting for index out of the table, to be answered
 * once its whole batch is applied (see answer ()). */
static void
settle_pending (SpNode *node, guint64 index, GError *error, guint64 revision, GPtrArray *done)
{
  gpointer key, value;
  Pending *p;

  if (!g_hash_table_steal_extended (node->pending, &index, &key, &value))
    {
      g_clear_error (&error);
      return;
    }
  g_free (key);
  p = value;
  g_queue_unlink (&node->expiring, &p->link);
  p->error = error;
  p->revision = revision;
  g_ptr_array_add (done, p);
}

static void
apply_entry (SpNode *node, const SpRaftEntry *e, GPtrArray *done)
{
  Pending *p = g_hash_table_lookup (node->pending, &e->index);
  g_autoptr (GError) error = NULL;
  guint64 revision = 0;
  gboolean ok = TRUE;
  gint code;

  /* A CONF entry's data is the new member's address record: applied
   * first, checked against the configuration before the entry. */
  if (e->data)
    {
      ok = sp_store_apply (node->store, e->data, &revision, &error);
      /* The rules are the proposer's, so only a buggy or hostile leader
       * commits this; every node refuses it alike. */
      if (!ok && g_error_matches (error, SP_STORE_ERROR, SP_STORE_ERROR_INVALID))
        {
          node->refused++;
          g_warning ("entry %" G_GUINT64_FORMAT " (term %" G_GUINT64_FORMAT ") refused, %s: %s",
                     e->index, e->term,
                     e->type == SP_RAFT_ENTRY_CONF
                         ? "its membership change stands without the record"
                         : "nothing applied",
                     error->message);
        }
      /* Only an older leader proposes these (this one checks first). */
      if (!ok && g_error_matches (error, SP_STORE_ERROR, SP_STORE_ERROR_REFUSED))
        g_warning ("entry %" G_GUINT64_FORMAT ": address record ignored: %s", e->index,
                   error->message);
    }
  if (e->type == SP_RAFT_ENTRY_CONF)
    {
      node->applied_conf = *e->conf;
      sync_peers (node);
      g_signal_emit (node, signals[SIGNAL_MEMBERS_CHANGED], 0);
      /* the change asked for is in effect, whatever became of its record */
      ok = TRUE;
    }

  if (!p)
    return;
  if (p->term != e->term)
    {
      settle_pending (node, e->index, superseded_error (e->index), 0, done);
      return;
    }
  if (ok)
    {
      settle_pending (node, e->index, NULL, revision, done);
      return;
    }
  code = g_error_matches (error, SP_STORE_ERROR, SP_STORE_ERROR_CONFLICT) ? SP_NODE_ERROR_CONFLICT
         : g_error_matches (error, SP_STORE_ERROR, SP_STORE_ERROR_NOT_FOUND)
             ? SP_NODE_ERROR_NOT_FOUND
             : SP_NODE_ERROR_INVALID_ARGUMENT;
  settle_pending (node, e->index, g_error_new_literal (SP_NODE_ERROR, code, error->message), 0,
                  done);
}

/* Watchers first, then the requests: whoever wrote is answered after the
 * changes went out, one signal per batch rather than one per key. */
static void
answer (SpNode *node, GPtrArray *done)
{
  if (node->changes)
    {
      g_autoptr (GVariantBuilder) builder = g_steal_pointer (&node->changes);
      g_autoptr (GVariant) changes = g_variant_ref_sink (g_variant_builder_end (builder));

      g_signal_emit (node, signals[SIGNAL_STORE_CHANGED], 0, changes);
    }
  for (guint i = 0; i < done->len; i++)
    {
      Pending *p = g_ptr_array_index (done, i);

      if (p->error)
        g_task_return_error (p->task, g_steal_pointer (&p->error));
      else if (p->kind == PENDING_WRITE)
        g_task_return_pointer (p->task, g_memdup2 (&p->revision, sizeof p->revision), g_free);
      else
        g_task_return_boolean (p->task, TRUE);
    }
}

static void
on_store_changed (const char *key, const char *value, guint64 revision, gpointer user_data)
{
  SpNode *node = user_data;
  GVariant *change[] = {
    g_variant_new_string (key),
    g_variant_new_string (value ? value : ""),
    g_variant_new_boolean (value == NULL),
    g_variant_new_uint64 (revision),
  };

  if (!node->changes)
    node->changes = g_variant_builder_new (G_VARIANT_TYPE ("a(ssbt)"));
  g_variant_builder_add_value (node->changes, g_variant_new_tuple (change, G_N_ELEMENTS (change)));
}

static void
on_store_member (const char *name, const char *address, gpointer user_data)
{
  SpNode *node = user_data;

  learn_member (node, name, address);
  node->learned = TRUE;
}

static gboolean
is_applied_member (const char *name, gpointer user_data)
{
  SpNode *node = user_data;
  guint64 id = sp_member_id (name);

  return sp_raft_conf_is_voter (&node->applied_conf, id)
         || sp_raft_conf_is_learner (&node->applied_conf, id);
}

static void
maybe_compact (SpNode *node)
{
  const SpRaftSnapshot *snap = sp_raft_snapshot (node->raft);
  guint64 applied = sp_raft_applied_index (node->raft);
  g_autoptr (GBytes) data = NULL;
  g_autoptr (GError) error = NULL;

  if (applied - (snap ? snap->index : 0) < node->config->snapshot_entries)
    return;
  data = sp_store_snapshot (node->store);
  if (!sp_raft_compact (node->raft, applied, data, &error))
    {
      g_warning ("snapshot at %" G_GUINT64_FORMAT " failed: %s", applied, error->message);
      return;
    }
  sp_storage_compact (node->storage, sp_raft_snapshot (node->raft), NULL, NULL);
}

static void settle_transfer (SpNode *node, GError *error);

/* Records of a snapshot the rules refuse are left out (as their entries
 * would have been refused), said once and counted. */
static gboolean
restore_store (SpNode *node, const SpRaftSnapshot *snapshot, GError **error)
{
  g_autoptr (GPtrArray) refused = g_ptr_array_new_with_free_func (g_free);

  if (!sp_store_restore (node->store, snapshot->data, refused, error))
    return FALSE;
  for (guint i = 0; i < refused->len; i++)
    g_warning ("snapshot at index %" G_GUINT64_FORMAT " (term %" G_GUINT64_FORMAT
               "): record refused, left out: %s",
               snapshot->index, snapshot->term, (const char *)refused->pdata[i]);
  node->refused += refused->len;
  return TRUE;
}

/* Fail-stop: without durable storage this node must not vote, ack or lead.
 * It gives up its role and lease at once, publishes that, and tells its
 * owner, who stops it (the process then exits for systemd to restart it).
 * A warning, not a critical: the disk failed, not the program. */
static void
fail_node (SpNode *node, const char *what, const GError *error)
{
  if (node->failed)
    return;
  node->failed = TRUE;
  node->failure = g_strdup_printf ("%s: %s", what, error->message);
  g_warning ("%s failed: %s; it gives up its role and lease and stops", node->name, node->failure);
  publish (node);
  if (node->transfer_task)
    settle_transfer (node, g_error_new (SP_NODE_ERROR, SP_NODE_ERROR_STOPPED, "%s failed: %s",
                                        node->name, node->failure));
  /* Nothing will commit here any more: tell whoever waits. */
  while (!g_queue_is_empty (&node->expiring))
    {
      Pending *p = g_queue_peek_head (&node->expiring);

      fail_pending (node, p->index,
                    g_error_new (SP_NODE_ERROR, SP_NODE_ERROR_STOPPED,
                                 "%s failed: %s; the write may or may not be applied", node->name,
                                 error->message));
    }
  g_signal_emit (node, signals[SIGNAL_FAILED], 0, node->failure);
}

static void
send_messages (SpNode *node, SpRaftReady *rd)
{
  for (guint i = 0; i < rd->messages->len; i++)
    sp_transport_send (node->transport, g_ptr_array_index (rd->messages, i));
}

static void serve_transfer_requests (SpNode *node, GArray *requests);

static void
finish_ready (SpNode *node, SpRaftReady *rd)
{
  g_autoptr (GPtrArray) done = g_ptr_array_new_with_free_func ((GDestroyNotify)pending_free);
  g_autoptr (GArray) requests = g_steal_pointer (&rd->transfer_requests);

  if (!rd->send_before_persist)
    send_messages (node, rd);
  if (rd->snapshot)
    {
      g_autoptr (GError) error = NULL;

      if (!restore_store (node, rd->snapshot, &error))
        {
          fail_node (node, "cannot load the snapshot from the leader", error);
          sp_raft_ready_free (rd);
          return;
        }
      g_message ("installed the leader's snapshot at index %" G_GUINT64_FORMAT
                 " (term %" G_GUINT64_FORMAT ")",
                 rd->snapshot->index, rd->snapshot->term);
      node->applied_conf = rd->snapshot->conf;
      sp_store_foreach_member (node->store, on_store_member, node);
      sync_peers (node);
      g_signal_emit (node, signals[SIGNAL_MEMBERS_CHANGED], 0);
    }
  for (guint i = 0; i < rd->committed->len; i++)
    apply_entry (node, &g_array_index (rd->committed, SpRaftEntry, i), done);
  sp_raft_advance (node->raft, rd);
  sp_raft_ready_free (rd);
  answer (node, done);
  node->persisting = FALSE;
  /* A configuration takes effect when appended, before it commits; a
   * member's record may come after it (replayed at start). */
  if (node->learned || !sp_raft_conf_equal (&node->peers_conf, sp_raft_conf (node->raft)))
    sync_peers (node);
  maybe_compact (node);
  publish (node);
  serve_transfer_requests (node, requests);
  /* Only when there is more: an idle pass per batch costs a loop iteration. */
  if (!node->failed && sp_raft_has_ready (node->raft))
    schedule_ready (node);
}

typedef struct
{
  SpNode *node;
  SpRaftReady *rd;
} PersistData;

/* A disk that hangs rather than fails must not leave a node that can
 * neither lead nor vote lingering: it fails as on an error, and systemd
 * restarts it. */
#define STORAGE_STALL_S 10

static gboolean
on_storage_stalled (gpointer user_data)
{
  SpNode *node = user_data;
  g_autoptr (GError) error = g_error_new (SP_NODE_ERROR, SP_NODE_ERROR_STOPPED,
                                          "a write did not complete within %d s", STORAGE_STALL_S);

  node->persist_stall = 0;
  node->storage_stalled = TRUE;
  fail_node (node, "the data directory stalled", error);
  return G_SOURCE_REMOVE;
}

static void
on_persisted (GError *error, gpointer user_data)
{
  PersistData *pd = user_data;
  SpNode *node = pd->node;

  g_clear_handle_id (&node->persist_stall, g_source_remove);
  if (node->failed)
    {
      sp_raft_ready_free (pd->rd);
    }
  else if (error)
    {
      fail_node (node, "cannot write to the data directory", error);
      sp_raft_ready_free (pd->rd);
    }
  else
    {
      finish_ready (node, pd->rd);
    }
  g_object_unref (node);
  g_free (pd);
}

static void
process_ready (SpNode *node)
{
  SpRaftReady *rd;

  /* Before the batch goes to the disk: a lease that ran out is published
   * now, not once the write is durable. */
  publish (node);
  if (node->failed || node->persisting || !sp_raft_has_ready (node->raft))
    return;
  rd = sp_raft_ready (node->raft);
  node->persisting = TRUE;
  /* A leader replicates while it writes (Raft thesis §10.2.1). */
  if (rd->send_before_persist)
    send_messages (node, rd);
  /* Term and vote must be durable before anything is sent; the commit index
   * need not be (Raft keeps it volatile): it rides along with the next write
   * instead of costing a trip through the storage worker of its own. */
  if (rd->snapshot || rd->entries->len > 0 || rd->hard_state.term != node->saved_hs.term
      || rd->hard_state.vote != node->saved_hs.vote)
    {
      PersistData *pd = g_new (PersistData, 1);
      gboolean hs_new = rd->hard_state.term != node->saved_hs.term
                        || rd->hard_state.vote != node->saved_hs.vote
                        || rd->hard_state.commit != node->saved_hs.commit;

      pd->node = g_object_ref (node);
      pd->rd = rd;
      node->saved_hs = rd->hard_state;
      node->persist_stall = g_timeout_add_seconds (STORAGE_STALL_S, on_storage_stalled, node);
      sp_storage_persist (node->storage, rd->snapshot, rd->entries, hs_new ? &rd->hard_state : NULL,
                          on_persisted, pd);
    }
  else
    {
      finish_ready (node, rd);
    }
}

static gboolean
on_ready_idle (gpointer user_data)
{
  SpNode *node = user_data;

  node->ready_source = 0;
  process_ready (node);
  return G_SOURCE_REMOVE;
}

/* A connection's messages are in: a node that does not lead runs the batch
 * now, saving the main loop a pass (and a poll) per heartbeat.  A
 * leader's batch waits for that pass, where the answers of every follower
 * that came meanwhile join it. */
static void
on_read_done (gpointer user_data)
{
  SpNode *node = user_data;

  if (node->ready_source && sp_raft_role (node->raft) != SP_RAFT_LEADER)
    {
      g_clear_handle_id (&node->ready_source, g_source_remove);
      process_ready (node);
    }
}

static void
schedule_ready (SpNode *node)
{
  /* Once per loop iteration: whatever arrives meanwhile joins the batch. */
  if (!node->ready_source && !node->persisting && !node->failed && !node->in_clock)
    node->ready_source = g_idle_add_full (G_PRIORITY_DEFAULT, on_ready_idle, node, NULL);
}

/* ---- the clock ---------------------------------------------------------- */

static guint64
ticks_now (SpNode *node)
{
  return (guint64)(now_usec () - node->clock_start) / (1000 * node->tick_ms);
}

/* Gives the core the ticks that passed.  A node that is not leader and
 * fell more than two election timeouts behind (the process was stopped)
 * skips to two timeouts before now: enough for any election timeout to run
 * out once, while campaigns nobody heard would only be repeated, and
 * skipped ticks only make it wait longer before voting for someone else.
 * (Within two timeouts nothing is skipped: a sleeping follower wakes up
 * that late when its leader is gone.)  A leader gets every tick: its lease
 * and check-quorum count them. */
static gboolean
advance_clock (SpNode *node)
{
  guint64 now = ticks_now (node);

  if (node->failed || node->ticks >= now)
    return FALSE;
  while (node->ticks < now)
    {
      if (now - node->ticks > 2 * (guint64)node->election_ticks
          && sp_raft_role (node->raft) != SP_RAFT_LEADER)
        node->ticks = now - 2 * (guint64)node->election_ticks;
      sp_raft_tick (node->raft);
      node->ticks++;
    }
  return TRUE;
}

/* When the clock must fire next, or -1: a tick that may act, or the oldest
 * request's deadline.  Computed before every poll (the source's prepare),
 * so inputs that move it need not tell the source. */
static gint64
clock_deadline (SpNode *node)
{
  Pending *oldest = g_queue_peek_head (&node->expiring);
  guint due;
  gint64 at = oldest ? oldest->deadline : -1;

  if (node->failed)
    return -1;
  /* The end of the fence is published when it comes. */
  if (sp_fence_started (&node->fence) && !node->holder && node->lease_valid)
    at = at < 0 ? node->fence.until : MIN (at, node->fence.until);
  due = sp_raft_ticks_until_due (node->raft);
  if (due != G_MAXUINT)
    {
      gint64 tick_at = node->clock_start + (gint64)(node->ticks + due) * 1000 * node->tick_ms;

      at = at < 0 ? tick_at : MIN (at, tick_at);
    }
  return at;
}

typedef struct
{
  GSource source;
  SpNode *node;
} ClockSource;

static gboolean
clock_prepare (GSource *source, gint *timeout)
{
  gint64 at = clock_deadline (((ClockSource *)source)->node);
  gint64 now = now_usec ();

  if (at < 0)
    *timeout = -1;
  else
    *timeout = at <= now ? 0 : (gint)MIN ((at - now + 999) / 1000, G_MAXINT);
  return at >= 0 && at <= now;
}

/* After every poll, against the node clock: a poll's timeout does not
 * count a suspend, but any wake-up (a message, a read, the watchdog) then
 * finds the clock due. */
static gboolean
clock_check (GSource *source)
{
  gint64 at = clock_deadline (((ClockSource *)source)->node);

  return at >= 0 && at <= now_usec ();
}

static gboolean
clock_dispatch (GSource *source, GSourceFunc callback, gpointer user_data)
{
  return callback (user_data);
}

static GSourceFuncs clock_funcs = { clock_prepare, clock_check, clock_dispatch, NULL, NULL, NULL };

static gboolean
on_clock (gpointer user_data)
{
  SpNode *node = user_data;

  /* Nothing else would join a batch the clock starts: no idle pass. */
  node->in_clock = TRUE;
  /* The answers a settled leader left unread (see settled ()) first. */
  sp_transport_receive_pending (node->transport);
  advance_clock (node);
  expire_pending (node);
  node->in_clock = FALSE;
  g_clear_handle_id (&node->ready_source, g_source_remove);
  process_ready (node);
  return G_SOURCE_CONTINUE;
}

static void
stop_clock (SpNode *node)
{
  if (node->clock)
    {
      g_source_destroy (node->clock);
      g_clear_pointer (&node->clock, g_source_unref);
    }
}

/* ---- inputs ------------------------------------------------------------- */

/* What the core drops by rule (a non-member, a TimeoutNow or a leader's
 * message not from the leader) is logged, at most SP_DROP_BURST lines per window, then a count:
 * a peer must not grow the log as it likes. */
#define SP_DROP_BURST     10
#define SP_DROP_WINDOW_US (10 * G_USEC_PER_SEC)

static void
log_drop (SpNode *node, const SpRaftMsg *m, const GError *error)
{
  gint64 now = g_get_monotonic_time ();

  if (now - node->drops_since >= SP_DROP_WINDOW_US)
    {
      if (node->drops_suppressed > 0)
        g_message ("(%u similar messages suppressed)", node->drops_suppressed);
      node->drops_since = now;
      node->drops_logged = 0;
      node->drops_suppressed = 0;
    }
  if (node->drops_logged >= SP_DROP_BURST)
    {
      node->drops_suppressed++;
      return;
    }
  node->drops_logged++;
  g_message ("dropped %s from %s%s%016" G_GINT64_MODIFIER "x: %s",
             sp_raft_msg_type_to_string (m->type), id_name (node, m->from),
             *id_name (node, m->from) ? " " : "", m->from, error->message);
}

static void
on_receive (const SpRaftMsg *m, gpointer user_data)
{
  SpNode *node = user_data;
  g_autoptr (GError) error = NULL;

  if (node->failed)
    return;
  advance_clock (node);
  if (m->type == SP_RAFT_MSG_TRANSFER_REQUEST
      && (sp_raft_role (node->raft) != SP_RAFT_LEADER || m->term != sp_raft_term (node->raft)))
    g_debug ("ignored %s's leadership transfer request of term %" G_GUINT64_FORMAT
             ": %s is %s in term %" G_GUINT64_FORMAT,
             id_name (node, m->from), m->term, node->name,
             sp_raft_role_to_string (sp_raft_role (node->raft)), sp_raft_term (node->raft));
  if (!sp_raft_step (node->raft, m, &error))
    {
      if (g_error_matches (error, SP_RAFT_ERROR, SP_RAFT_ERROR_NOT_MEMBER)
          || g_error_matches (error, SP_RAFT_ERROR, SP_RAFT_ERROR_REFUSED))
        log_drop (node, m, error);
      else
        g_warning ("dropped %s from %s: %s", sp_raft_msg_type_to_string (m->type),
                   id_name (node, m->from), error->message);
    }
  schedule_ready (node);
}

/* ---- construction ------------------------------------------------------- */

guint
sp_node_fence_left_ms (SpNode *node, guint extra_ms)
{
  return sp_fence_left_ms (&node->fence, now_usec (), extra_ms);
}

SpNode *
sp_node_new (SpConfig *config, GError **error)
{
  g_autoptr (SpNode) node = g_object_new (SP_TYPE_NODE, NULL);
  g_auto (SpStorageState) state = { 0 };
  g_autoptr (GTlsCertificate) cert = NULL;
  g_autoptr (GTlsDatabase) ca = NULL;
  SpRaftConf bootstrap = { 0 };
  SpRaftOptions opts = { 0 };
  SpRaftRestore restore = { 0 };
  SpTransportOptions topts = { 0 };

  node->config = config;
  node->name = g_strdup (config->node_name);
  node->id = sp_member_id (config->node_name);
  node->tick_ms = sp_fence_tick_ms (config);
  node->election_ticks = config->election_ms / node->tick_ms;
  node->fence_ms = sp_fence_ms (config);

  for (guint i = 0; i < config->initial_members->len; i++)
    {
      SpConfigMember *m = g_ptr_array_index (config->initial_members, i);
      g_autofree char *address = strchr (m->host, ':')
                                     ? g_strdup_printf ("[%s]:%u", m->host, m->port)
                                     : g_strdup_printf ("%s:%u", m->host, m->port);

      learn_member (node, m->name, address);
      if (bootstrap.n_voters < SP_RAFT_MAX_NODES)
        bootstrap.voters[bootstrap.n_voters++] = sp_member_id (m->name);
    }
  learn_member (node, node->name, NULL);
  /* No members listed: a cluster of one, which others may join later. */
  if (bootstrap.n_voters == 0)
    bootstrap.voters[bootstrap.n_voters++] = node->id;

  node->storage = sp_storage_open (config->data_dir, &state, error);
  if (!node->storage)
    return NULL;

  node->store = sp_store_new ();
  sp_store_set_watch (node->store, on_store_changed, node);
  sp_store_set_member_watch (node->store, on_store_member, node);
  sp_store_set_member_check (node->store, is_applied_member, node);
  if (state.snapshot && state.snapshot->data && !restore_store (node, state.snapshot, error))
    {
      g_prefix_error (error, "%s/snapshot: ", config->data_dir);
      return NULL;
    }
  if (state.snapshot)
    node->applied_conf = state.snapshot->conf;

  opts.id = node->id;
  opts.heartbeat_ticks = config->heartbeat_ms / node->tick_ms;
  opts.election_ticks = node->election_ticks;
  opts.seed = g_get_real_time () ^ node->id;
  restore.hard_state = state.hard_state;
  node->saved_hs = state.hard_state;
  restore.snapshot = state.snapshot;
  restore.entries = state.entries;
  restore.bootstrap = config->join ? NULL : &bootstrap;
  node->raft = sp_raft_new (&opts, &restore, error);
  if (!node->raft)
    {
      g_prefix_error (error, "%s: ", config->data_dir);
      return NULL;
    }

  if (!config->insecure && !sp_tls_files_load (config, &cert, &ca, error))
    return NULL;
  topts.id = node->id;
  topts.name = node->name;
  topts.certificate = cert;
  topts.ca = ca;
  topts.revoked = (const char *const *)config->tls_revoked;
  topts.admit = admit_peer;
  topts.read_done = on_read_done;
  node->transport = sp_transport_new (&topts, on_receive, node);

  /* Members added at run time are in the store (restored above). */
  sp_store_foreach_member (node->store, on_store_member, node);
  node->role = sp_raft_role (node->raft);
  return g_steal_pointer (&node);
}

/* Armed, or lost: holder follows at once. */
static void
on_keeper_changed (gpointer user_data)
{
  SpNode *node = user_data;

  if (node->failed)
    return;
  publish (node);
  if (sp_raft_has_ready (node->raft))
    schedule_ready (node);
}

void
sp_node_add_fence_address (SpNode *node, int family, const guint8 *addr, guint prefix,
                           const char *ifname)
{
  if (node->keeper)
    sp_keeper_add_address (node->keeper, family, addr, prefix, ifname);
}

const char *
sp_node_get_fence_state (SpNode *node)
{
  return node->keeper ? sp_keeper_describe (node->keeper) : "off";
}

gboolean
sp_node_start (SpNode *node, GError **error)
{
  const SpConfig *c = node->config;

  if (!sp_transport_listen (node->transport, c->listen_host, c->listen_port, error))
    return FALSE;
  sync_peers (node);
  node->clock = g_source_new (&clock_funcs, sizeof (ClockSource));
  ((ClockSource *)node->clock)->node = node;
  g_source_set_callback (node->clock, on_clock, node, NULL);
  g_source_set_static_name (node->clock, "sparrow clock");
  node->clock_start = now_usec ();
  g_source_attach (node->clock, NULL);
  if (c->fence)
    node->keeper = sp_keeper_new (c->fence_keeper, on_keeper_changed, node);
  schedule_ready (node);
  publish (node);
  return TRUE;
}

static void
sp_node_finalize (GObject *object)
{
  SpNode *node = SP_NODE (object);

  stop_clock (node);
  g_clear_pointer (&node->keeper, sp_keeper_free);
  g_clear_pointer (&node->fence_state, g_free);
  g_clear_handle_id (&node->ready_source, g_source_remove);
  g_clear_handle_id (&node->transfer_timeout, g_source_remove);
  g_clear_handle_id (&node->stop_timeout, g_source_remove);
  g_clear_handle_id (&node->persist_stall, g_source_remove);
  g_clear_pointer (&node->pending, g_hash_table_unref);
  g_clear_pointer (&node->changes, g_variant_builder_unref);
  g_clear_pointer (&node->transport, sp_transport_free);
  g_clear_pointer (&node->storage, sp_storage_free);
  g_clear_pointer (&node->raft, sp_raft_free);
  g_clear_pointer (&node->store, sp_store_free);
  g_clear_pointer (&node->names, g_hash_table_unref);
  g_clear_pointer (&node->addresses, g_hash_table_unref);
  g_clear_pointer (&node->peers, g_hash_table_unref);
  g_clear_object (&node->transfer_task);
  g_clear_object (&node->stop_task);
  g_array_unref (node->holds);
  g_free (node->unreleased);
  g_free (node->name);
  g_free (node->failure);
  g_free (node->leader);
  g_free (node->leader_address);
  G_OBJECT_CLASS (sp_node_parent_class)->finalize (object);
}

static void
sp_node_get_property (GObject *object, guint id, GValue *value, GParamSpec *pspec)
{
  SpNode *node = SP_NODE (object);

  switch (id)
    {
      case PROP_NAME:
        g_value_set_string (value, node->name);
        break;
      case PROP_ROLE:
        g_value_set_string (value, sp_node_get_role (node));
        break;
      case PROP_TERM:
        g_value_set_uint64 (value, node->term);
        break;
      case PROP_LEADER:
        g_value_set_string (value, sp_node_get_leader (node));
        break;
      case PROP_LEADER_ADDRESS:
        g_value_set_string (value, sp_node_get_leader_address (node));
        break;
      case PROP_COMMIT_INDEX:
        g_value_set_uint64 (value, node->commit_index);
        break;
      case PROP_LEASE_VALID:
        g_value_set_boolean (value, node->lease_valid);
        break;
      case PROP_HOLDER:
        g_value_set_boolean (value, node->holder);
        break;
      case PROP_REFUSED_ENTRIES:
        g_value_set_uint64 (value, node->refused_published);
        break;
      case PROP_FENCE_KEEPER:
        g_value_set_string (value, node->fence_state ? node->fence_state : "");
        break;
      default:
        G_OBJECT_WARN_INVALID_PROPERTY_ID (object, id, pspec);
    }
}

static void
sp_node_class_init (SpNodeClass *klass)
{
  GObjectClass *object_class = G_OBJECT_CLASS (klass);
  GParamFlags ro = G_PARAM_READABLE | G_PARAM_STATIC_STRINGS | G_PARAM_EXPLICIT_NOTIFY;

  object_class->finalize = sp_node_finalize;
  object_class->get_property = sp_node_get_property;

  props[PROP_NAME] = g_param_spec_string ("name", NULL, NULL, NULL, ro);
  props[PROP_ROLE] = g_param_spec_string ("role", NULL, NULL, NULL, ro);
  props[PROP_TERM] = g_param_spec_uint64 ("term", NULL, NULL, 0, G_MAXUINT64, 0, ro);
  props[PROP_LEADER] = g_param_spec_string ("leader", NULL, NULL, NULL, ro);
  props[PROP_LEADER_ADDRESS] = g_param_spec_string ("leader-address", NULL, NULL, NULL, ro);
  props[PROP_COMMIT_INDEX]
      = g_param_spec_uint64 ("commit-index", NULL, NULL, 0, G_MAXUINT64, 0, ro);
  props[PROP_LEASE_VALID] = g_param_spec_boolean ("lease-valid", NULL, NULL, FALSE, ro);
  props[PROP_HOLDER] = g_param_spec_boolean ("holder", NULL, NULL, FALSE, ro);
  props[PROP_REFUSED_ENTRIES]
      = g_param_spec_uint64 ("refused-entries", NULL, NULL, 0, G_MAXUINT64, 0, ro);
  props[PROP_FENCE_KEEPER] = g_param_spec_string ("fence-keeper", NULL, NULL, "", ro);
  g_object_class_install_properties (object_class, N_PROPS, props);

  signals[SIGNAL_MEMBERS_CHANGED]
      = g_signal_new ("members-changed", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0, NULL,
                      NULL, NULL, G_TYPE_NONE, 0);
  signals[SIGNAL_STORE_CHANGED]
      = g_signal_new ("store-changed", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0, NULL, NULL,
                      NULL, G_TYPE_NONE, 1, G_TYPE_VARIANT);
  signals[SIGNAL_FAILED] = g_signal_new ("failed", G_TYPE_FROM_CLASS (klass), G_SIGNAL_RUN_LAST, 0,
                                         NULL, NULL, NULL, G_TYPE_NONE, 1, G_TYPE_STRING);
}

static void on_leader_changed (SpNode *node, GParamSpec *pspec, gpointer user_data);

static void
sp_node_init (SpNode *node)
{
  node->names = g_hash_table_new_full (g_int64_hash, g_int64_equal, g_free, g_free);
  node->addresses = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  node->peers = g_hash_table_new_full (g_int64_hash, g_int64_equal, g_free, NULL);
  node->pending
      = g_hash_table_new_full (g_int64_hash, g_int64_equal, g_free, (GDestroyNotify)pending_free);
  node->leader = g_strdup ("");
  node->leader_address = g_strdup ("");
  node->holds = g_array_new (FALSE, FALSE, sizeof (Hold));
  sp_fence_clear (&node->fence);
  g_signal_connect (node, "notify::leader", G_CALLBACK (on_leader_changed), NULL);
}

/* ---- queries ------------------------------------------------------------ */

const char *
sp_node_get_name (SpNode *node)
{
  return node->name;
}

const char *
sp_node_get_role (SpNode *node)
{
  /* The bus speaks four roles; a pre-candidate is campaigning too. */
  if (node->role == SP_RAFT_PRE_CANDIDATE)
    return "candidate";
  return sp_raft_role_to_string (node->role);
}

guint64
sp_node_get_term (SpNode *node)
{
  return node->term;
}

const char *
sp_node_get_leader (SpNode *node)
{
  return node->leader;
}

const char *
sp_node_get_leader_address (SpNode *node)
{
  return node->leader_address;
}

guint64
sp_node_get_commit_index (SpNode *node)
{
  return node->commit_index;
}

gboolean
sp_node_get_lease_valid (SpNode *node)
{
  return node->lease_valid;
}

gboolean
sp_node_get_holder (SpNode *node)
{
  return node->holder;
}

guint64
sp_node_get_refused_entries (SpNode *node)
{
  return node->refused_published;
}

void
sp_node_set_wake_func (SpNode *node, SpNodeWakeFunc func, gpointer user_data)
{
  node->wake_func = func;
  node->wake_data = user_data;
}

void
sp_node_refresh (SpNode *node)
{
  /* Once a tick is enough (a GetAll asks for every property), and a failed
   * node published all it will at once. */
  if (node->failed || node->published_at == ticks_now (node))
    return;
  /* As the clock does: a settled leader's unread answers renew its lease
   * first, so that a read never sees it lapse only for want of reading. */
  sp_transport_receive_pending (node->transport);
  publish (node);
  if (sp_raft_has_ready (node->raft))
    schedule_ready (node);
}

static int
cmp_member (gconstpointer a, gconstpointer b)
{
  const SpNodeMember *x = *(SpNodeMember *const *)a, *y = *(SpNodeMember *const *)b;

  return g_strcmp0 (x->name, y->name);
}

GPtrArray *
sp_node_get_members (SpNode *node)
{
  GPtrArray *out = g_ptr_array_new_with_free_func ((GDestroyNotify)sp_node_member_free);
  const SpRaftConf *conf = sp_raft_conf (node->raft);
  /* the configuration as appended: with the addresses it came with */
  g_autoptr (GHashTable) added = unapplied_addresses (node);
  SpRaftProgress prs[SP_RAFT_MAX_NODES];
  guint n_prs;

  if (advance_clock (node))
    schedule_ready (node);
  n_prs = sp_raft_progress (node->raft, prs);

  for (guint i = 0; i < conf->n_voters + conf->n_learners; i++)
    {
      guint64 id = i < conf->n_voters ? conf->voters[i] : conf->learners[i - conf->n_voters];
      SpNodeMember *m = g_new0 (SpNodeMember, 1);
      const char *address;

      m->name = g_strdup (id_name (node, id));
      address = member_address (node, added, id, m->name);
      if (id == node->id)
        m->address = g_strdup_printf (strchr (node->config->listen_host, ':') ? "[%s]:%u" : "%s:%u",
                                      node->config->listen_host, node->config->listen_port);
      else
        m->address = g_strdup (address ? address : "");
      m->voter = i < conf->n_voters;
      m->reachable = id == node->id || sp_transport_peer_connected (node->transport, id);
      for (guint j = 0; j < n_prs; j++)
        if (prs[j].id == id)
          {
            m->reachable = prs[j].recent;
            m->match = prs[j].match;
          }
      g_ptr_array_add (out, m);
    }
  g_ptr_array_sort (out, cmp_member);
  return out;
}

/* ---- writes ------------------------------------------------------------- */

static GTask *
new_task (SpNode *node, GAsyncReadyCallback callback, gpointer user_data)
{
  return g_task_new (node, NULL, callback, user_data);
}

static GError *
stopped_error (SpNode *node)
{
  if (node->failure)
    return g_error_new (SP_NODE_ERROR, SP_NODE_ERROR_STOPPED, "%s failed and is stopping: %s",
                        node->name, node->failure);
  return g_error_new (SP_NODE_ERROR, SP_NODE_ERROR_STOPPED, "%s is stopping", node->name);
}

static gboolean
check_running (SpNode *node, GTask *task)
{
  if (node->failed || node->stopping)
    {
      g_task_return_error (task, stopped_error (node));
      return FALSE;
    }
  return TRUE;
}

static void
propose (SpNode *node, GTask *task, GBytes *cmd, GError *cmd_error)
{
  g_autoptr (GError) error = cmd_error;
  guint64 index;

  if (!check_running (node, task))
    return;
  if (!cmd)
    {
      error->domain = SP_NODE_ERROR;
      error->code = SP_NODE_ERROR_INVALID_ARGUMENT;
      g_task_return_error (task, g_steal_pointer (&error));
      return;
    }
  /* Appends carry the current tick as their lease stamp. */
  advance_clock (node);
  if (!sp_raft_propose (node->raft, cmd, &index, &error))
    {
      g_task_return_error (task, raft_error_to_node (g_steal_pointer (&error), node));
      return;
    }
  add_pending (node, index, PENDING_WRITE, task);
  schedule_ready (node);
}

void
sp_node_set_async (SpNode *node, const char *key, const char *value, GAsyncReadyCallback callback,
                   gpointer user_data)
{
  g_autoptr (GTask) task = new_task (node, callback, user_data);
  g_autoptr (GBytes) cmd = NULL;
  GError *error = NULL;

  cmd = sp_store_cmd_set (key, value, &error);
  propose (node, task, cmd, error);
}

void
sp_node_delete_async (SpNode *node, const char *key, GAsyncReadyCallback callback,
                      gpointer user_data)
{
  g_autoptr (GTask) task = new_task (node, callback, user_data);
  g_autoptr (GBytes) cmd = NULL;
  GError *error = NULL;

  cmd = sp_store_cmd_delete (key, &error);
  propose (node, task, cmd, error);
}

void
sp_node_cas_async (SpNode *node, const char *key, guint64 expected_revision, const char *value,
                   GAsyncReadyCallback callback, gpointer user_data)
{
  g_autoptr (GTask) task = new_task (node, callback, user_data);
  g_autoptr (GBytes) cmd = NULL;
  GError *error = NULL;

  cmd = sp_store_cmd_cas (key, expected_revision, value, &error);
  propose (node, task, cmd, error);
}

gboolean
sp_node_write_finish (SpNode *node, GAsyncResult *result, guint64 *revision, GError **error)
{
  g_autofree guint64 *rev = g_task_propagate_pointer (G_TASK (result), error);

  if (!rev)
    return FALSE;
  if (revision)
    *revision = *rev;
  return TRUE;
}

/* ---- reads -------------------------------------------------------------- */

/* The store's key rule, as this node's error. */
static gboolean
check_key (const char *key, gboolean prefix, GError **error)
{
  g_autoptr (GError) e = NULL;

  if (prefix ? sp_store_check_prefix (key, &e) : sp_store_check_key (key, &e))
    return TRUE;
  g_set_error_literal (error, SP_NODE_ERROR, SP_NODE_ERROR_INVALID_ARGUMENT, e->message);
  return FALSE;
}

/* A leader may serve a read from local state while its lease holds and it
 * has applied an entry of its own term: every write acknowledged by any
 * leader before is then applied here, and no other leader can exist. */
static gboolean
check_read (SpNode *node, gboolean stale, GError **error)
{
  guint64 applied;

  if (stale)
    return TRUE;
  /* A failed node's core is frozen with whatever lease it had. */
  if (node->failed)
    {
      g_propagate_error (error, stopped_error (node));
      return FALSE;
    }
  /* The lease is counted in ticks: give the core the time that passed
   * (and a settled leader its unread answers, as the clock would). */
  sp_node_refresh (node);
  applied = sp_raft_applied_index (node->raft);
  if (sp_raft_role (node->raft) != SP_RAFT_LEADER)
    {
      g_autoptr (GError) e = g_error_new (SP_RAFT_ERROR, SP_RAFT_ERROR_NOT_LEADER, "-");

      g_propagate_error (error, raft_error_to_node (g_steal_pointer (&e), node));
      return FALSE;
    }
  if (!sp_raft_lease_valid (node->raft)
      || sp_raft_term_at (node->raft, applied) != sp_raft_term (node->raft))
    {
      g_set_error (error, SP_NODE_ERROR, SP_NODE_ERROR_NO_QUORUM,
                   "%s leads without a current quorum lease; retry or read --stale", node->name);
      return FALSE;
    }
  return TRUE;
}

gboolean
sp_node_get (SpNode *node, const char *key, gboolean stale, char **value, guint64 *revision,
             GError **error)
{
  const char *v;

  if (!check_key (key, FALSE, error) || !check_read (node, stale, error))
    return FALSE;
  v = sp_store_get (node->store, key, revision);
  if (!v)
    {
      g_autofree char *echo = sp_text_echo (key);

      g_set_error (error, SP_NODE_ERROR, SP_NODE_ERROR_NOT_FOUND, "%s does not exist", echo);
      return FALSE;
    }
  *value = g_strdup (v);
  return TRUE;
}

GPtrArray *
sp_node_list (SpNode *node, const char *prefix, gboolean stale, GError **error)
{
  if (!check_key (prefix, TRUE, error) || !check_read (node, stale, error))
    return NULL;
  return sp_store_list (node->store, prefix);
}

/* ---- administration ----------------------------------------------------- */

/* Member names follow the configuration's rule, so a name that passes is
 * short and safe to echo as it is. */
static gboolean
check_name (GTask *task, const char *name)
{
  g_autofree char *echo = NULL;

  if (sp_config_valid_name (name))
    return TRUE;
  echo = sp_text_echo (name);
  g_task_return_new_error (task, SP_NODE_ERROR, SP_NODE_ERROR_INVALID_ARGUMENT,
                           "invalid member name \"%s\": expected " SP_CONFIG_NAME_RULE, echo);
  return FALSE;
}

static gboolean
check_leader (SpNode *node, GTask *task)
{
  if (sp_raft_role (node->raft) == SP_RAFT_LEADER)
    return TRUE;
  g_task_return_error (
      task,
      raft_error_to_node (
          g_error_new_literal (SP_RAFT_ERROR, SP_RAFT_ERROR_NOT_LEADER, "not the leader"), node));
  return FALSE;
}

/* The core's refusals name members by id: said again with the name. */
static GError *
conf_error (SpNode *node, GError *error, const char *name)
{
  g_autoptr (GError) e = error;

  if (e->domain != SP_RAFT_ERROR || e->code == SP_RAFT_ERROR_NOT_LEADER)
    return raft_error_to_node (g_steal_pointer (&e), node);
  switch (e->code)
    {
      case SP_RAFT_ERROR_CONF_PENDING:
        return g_error_new (SP_NODE_ERROR, SP_NODE_ERROR_BUSY,
                            "another membership change is not committed yet; retry");
      case SP_RAFT_ERROR_NOT_READY:
        return g_error_new (SP_NODE_ERROR, SP_NODE_ERROR_BUSY,
                            "%s has just been elected and has not committed an entry of its "
                            "term yet; retry",
                            node->name);
      case SP_RAFT_ERROR_NOT_CAUGHT_UP:
        return g_error_new (SP_NODE_ERROR, SP_NODE_ERROR_BUSY,
                            "%s has not caught up with the log, or was not heard from lately; "
                            "retry once it has",
                            name);
      case SP_RAFT_ERROR_TRANSFERRING:
        return g_error_new (SP_NODE_ERROR, SP_NODE_ERROR_BUSY,
                            "a leadership transfer is in progress; retry");
      default:
        return g_error_new (SP_NODE_ERROR, SP_NODE_ERROR_INVALID_ARGUMENT,
                            "cannot change the membership of %s", name);
    }
}

/* data: a store command applied with the change (see apply_entry). */
static void
change_membership (SpNode *node, GTask *task, SpRaftConfOp op, const char *name, GBytes *data)
{
  const SpRaftConf *conf = sp_raft_conf (node->raft);
  guint64 id = sp_member_id (name);
  gboolean voter = sp_raft_conf_is_voter (conf, id);
  gboolean learner = sp_raft_conf_is_learner (conf, id);
  g_autoptr (GError) error = NULL;
  guint64 index;

  if (op != SP_RAFT_CONF_ADD_VOTER && op != SP_RAFT_CONF_ADD_LEARNER && !voter && !learner)
    {
      g_task_return_new_error (task, SP_NODE_ERROR, SP_NODE_ERROR_NOT_FOUND, "%s is not a member",
                               name);
      return;
    }
  if (op == SP_RAFT_CONF_PROMOTE && voter)
    {
      g_task_return_new_error (task, SP_NODE_ERROR, SP_NODE_ERROR_INVALID_ARGUMENT,
                               "%s is already a voter", name);
      return;
    }
  if (op == SP_RAFT_CONF_REMOVE && id == node->id && sp_raft_role (node->raft) == SP_RAFT_LEADER)
    {
      g_task_return_new_error (task, SP_NODE_ERROR, SP_NODE_ERROR_INVALID_ARGUMENT,
                               "%s leads and cannot remove itself: transfer leadership first",
                               name);
      return;
    }
  advance_clock (node);
  if (!sp_raft_change_membership_with_data (node->raft, op, id, data, &index, &error))
    {
      g_task_return_error (task, conf_error (node, g_steal_pointer (&error), name));
      return;
    }
  add_pending (node, index, PENDING_CONF, task);
  schedule_ready (node);
}

/* A member's address: host:port, and no other member's. */
static GError *
check_address (SpNode *node, const char *name, const char *address)
{
  const SpRaftConf *conf = sp_raft_conf (node->raft);
  g_autofree char *echo = sp_text_echo (address);
  g_autofree char *host = NULL;
  guint16 port;

  if (!split_address (address, &host, &port))
    return g_error_new (SP_NODE_ERROR, SP_NODE_ERROR_INVALID_ARGUMENT,
                        "address \"%s\" is not " SP_ADDRESS_EXPECTS, echo);
  for (guint i = 0; i < conf->n_voters + conf->n_learners; i++)
    {
      guint64 other = i < conf->n_voters ? conf->voters[i] : conf->learners[i - conf->n_voters];
      const char *other_name = id_name (node, other);

      if (!g_str_equal (other_name, name)
          && g_strcmp0 (g_hash_table_lookup (node->addresses, other_name), address) == 0)
        return g_error_new (SP_NODE_ERROR, SP_NODE_ERROR_INVALID_ARGUMENT,
                            "%s is the address of %s", echo, other_name);
    }
  return NULL;
}

/* Everything that would refuse the request is checked before anything is
 * proposed.  AddMember is then one CONF entry that carries the address
 * record: both apply together or, if the entry is lost with the
 * leadership, neither.  Moving a member applies only to a member, and
 * only while no membership change is under way. */
static GError *
check_membership (SpNode *node, const char *name, gboolean move)
{
  const SpRaftConf *conf = sp_raft_conf (node->raft);
  guint64 id = sp_member_id (name);
  gboolean member = sp_raft_conf_is_voter (conf, id) || sp_raft_conf_is_learner (conf, id);

  if (member && !move)
    return g_error_new (SP_NODE_ERROR, SP_NODE_ERROR_INVALID_ARGUMENT,
                        "%s is already a member (a %s); nothing was changed. To move it to "
                        "another address, use SetMemberAddress (sparrowctl members "
                        "set-address)",
                        name, sp_raft_conf_is_voter (conf, id) ? "voter" : "learner");
  if (!member && move)
    return g_error_new (SP_NODE_ERROR, SP_NODE_ERROR_NOT_FOUND, "%s is not a member", name);
  if (move && id == node->id)
    return g_error_new (SP_NODE_ERROR, SP_NODE_ERROR_INVALID_ARGUMENT,
                        "%s is the leader, running at its address: hand leadership over, "
                        "stop it, then set its address",
                        name);
  if (!move && conf->n_voters + conf->n_learners >= SP_RAFT_MAX_NODES)
    return g_error_new (SP_NODE_ERROR, SP_NODE_ERROR_INVALID_ARGUMENT,
                        "the cluster is full (%d members)", SP_RAFT_MAX_NODES);
  if (!sp_raft_conf_equal (conf, &node->applied_conf))
    return g_error_new (SP_NODE_ERROR, SP_NODE_ERROR_BUSY,
                        "another membership change is not committed yet; retry");
  return NULL;
}

/* What AddMember and SetMemberAddress check before proposing; returns the
 * record to propose, or NULL with task answered. */
static GBytes *
member_record (SpNode *node, GTask *task, const char *name, const char *address, gboolean move)
{
  GError *error = NULL;
  GBytes *cmd;

  if (!check_running (node, task) || !check_name (task, name) || !check_leader (node, task))
    return NULL;
  error = check_address (node, name, address);
  if (!error)
    error = check_membership (node, name, move);
  if (!error)
    {
      cmd = move ? sp_store_cmd_member_address (name, address, &error)
                 : sp_store_cmd_member (name, address, &error);
      if (cmd)
        return cmd;
      error->domain = SP_NODE_ERROR;
      error->code = SP_NODE_ERROR_INVALID_ARGUMENT;
    }
  g_task_return_error (task, error);
  return NULL;
}

void
sp_node_add_member_async (SpNode *node, const char *name, const char *address, gboolean voter,
                          GAsyncReadyCallback callback, gpointer user_data)
{
  g_autoptr (GTask) task = new_task (node, callback, user_data);
  g_autoptr (GBytes) cmd = member_record (node, task, name, address, FALSE);

  if (cmd)
    change_membership (node, task, voter ? SP_RAFT_CONF_ADD_VOTER : SP_RAFT_CONF_ADD_LEARNER, name,
                       cmd);
}

void
sp_node_remove_member_async (SpNode *node, const char *name, GAsyncReadyCallback callback,
                             gpointer user_data)
{
  g_autoptr (GTask) task = new_task (node, callback, user_data);

  if (check_running (node, task) && check_name (task, name))
    change_membership (node, task, SP_RAFT_CONF_REMOVE, name, NULL);
}

void
sp_node_promote_member_async (SpNode *node, const char *name, GAsyncReadyCallback callback,
                              gpointer user_data)
{
  g_autoptr (GTask) task = new_task (node, callback, user_data);

  if (check_running (node, task) && check_name (task, name))
    change_membership (node, task, SP_RAFT_CONF_PROMOTE, name, NULL);
}

static void
on_address_recorded (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GTask) task = user_data;
  GError *error = NULL;

  if (sp_node_write_finish (SP_NODE (source), result, NULL, &error))
    g_task_return_boolean (task, TRUE);
  else
    g_task_return_error (task, error);
}

void
sp_node_set_member_address_async (SpNode *node, const char *name, const char *address,
                                  GAsyncReadyCallback callback, gpointer user_data)
{
  g_autoptr (GTask) task = new_task (node, callback, user_data);
  g_autoptr (GBytes) cmd = member_record (node, task, name, address, TRUE);
  g_autoptr (GTask) record = NULL;

  if (!cmd)
    return;
  record = g_task_new (node, NULL, on_address_recorded, g_object_ref (task));
  propose (node, record, cmd, NULL);
}

gboolean
sp_node_admin_finish (SpNode *node, GAsyncResult *result, GError **error)
{
  return g_task_propagate_boolean (G_TASK (result), error);
}

/* ---- leadership transfer and stop --------------------------------------- */

static void
settle_transfer (SpNode *node, GError *error)
{
  g_autoptr (GTask) task = g_steal_pointer (&node->transfer_task);
  gboolean forwarded = node->transfer_via != SP_RAFT_NONE;

  g_clear_handle_id (&node->transfer_timeout, g_source_remove);
  node->releasing = 0;
  node->transfer_via = SP_RAFT_NONE;
  if (!task)
    return;
  if (error)
    g_task_return_error (task, error);
  else
    g_task_return_boolean (task, TRUE);
  /* A forwarded transfer released nothing here. */
  for (guint i = 0; i < node->holds->len && !forwarded; i++)
    {
      Hold *h = &g_array_index (node->holds, Hold, i);

      h->releasing = FALSE;
      if (h->resume)
        h->resume (node, h->user_data);
    }
}

static void
start_transfer (SpNode *node)
{
  GError *error = NULL;

  advance_clock (node);
  if (!sp_raft_transfer_leadership (node->raft, node->transfer_to, &error))
    {
      settle_transfer (node, raft_error_to_node (error, node));
      return;
    }
  schedule_ready (node);
}

guint
sp_node_add_handover_hold (SpNode *node, SpNodeHandoverFunc release, SpNodeHandoverFunc resume,
                           gpointer user_data)
{
  Hold h = { ++node->next_hold, FALSE, release, resume, user_data };

  g_array_append_val (node->holds, h);
  return h.id;
}

static void finish_stop (SpNode *node);

static Hold *
find_hold (SpNode *node, guint id, guint *index)
{
  for (guint i = 0; i < node->holds->len; i++)
    if (g_array_index (node->holds, Hold, i).id == id)
      {
        *index = i;
        return &g_array_index (node->holds, Hold, i);
      }
  return NULL;
}

void
sp_node_handover_released (SpNode *node, guint id)
{
  sp_node_handover_failed (node, id, NULL);
}

void
sp_node_handover_failed (SpNode *node, guint id, const char *why)
{
  guint index;
  Hold *h = find_hold (node, id, &index);
  g_autofree char *unreleased = NULL;

  if (!h || !h->releasing)
    return;
  h->releasing = FALSE;
  if (why && !node->unreleased)
    node->unreleased = g_strdup (why);
  if (--node->releasing > 0)
    return;
  unreleased = g_steal_pointer (&node->unreleased);
  if (node->failed)
    {
      if (node->stop_task)
        finish_stop (node);
    }
  else if (unreleased)
    /* The new leader would hold at once, without a fence, beside what is
     * still held here: no handover. */
    settle_transfer (
        node, g_error_new (SP_NODE_ERROR, SP_NODE_ERROR_BUSY, "not handing over: %s", unreleased));
  else
    start_transfer (node);
}

void
sp_node_remove_handover_hold (SpNode *node, guint id)
{
  guint index;

  if (!find_hold (node, id, &index))
    return;
  /* One that goes away has nothing left to release. */
  sp_node_handover_released (node, id);
  g_array_remove_index (node->holds, index);
}

/* Asks every hold to release; FALSE when there is none to wait for. */
static gboolean
release_holds (SpNode *node)
{
  node->releasing = node->holds->len;
  for (guint i = 0; i < node->holds->len; i++)
    g_array_index (node->holds, Hold, i).releasing = TRUE;
  /* A release may answer at once, or remove holds: walk by id. */
  for (guint id = 1; id <= node->next_hold && node->releasing; id++)
    {
      guint index;
      Hold *h = find_hold (node, id, &index);

      if (h && h->releasing)
        h->release (node, h->user_data);
    }
  return node->holds->len > 0;
}

static gboolean
on_transfer_timeout (gpointer user_data)
{
  SpNode *node = user_data;

  node->transfer_timeout = 0;
  if (node->transfer_via != SP_RAFT_NONE)
    settle_transfer (node, g_error_new (SP_NODE_ERROR, SP_NODE_ERROR_BUSY,
                                        "%s did not hand leadership over in time; the leader is "
                                        "%s",
                                        id_name (node, node->transfer_via),
                                        *node->leader ? node->leader : "unknown"));
  else
    settle_transfer (node, g_error_new (SP_NODE_ERROR, SP_NODE_ERROR_BUSY,
                                        "leadership did not move in time; %s is %s", node->name,
                                        sp_node_get_role (node)));
  return G_SOURCE_REMOVE;
}

/* Done: on the leader, once another node leads; forwarded, once the target
 * leads, or (no target) anyone but the leader asked. */
static void
on_leader_changed (SpNode *node, GParamSpec *pspec, gpointer user_data)
{
  guint64 leader = *node->leader ? sp_member_id (node->leader) : SP_RAFT_NONE;
  gboolean moved;

  if (!node->transfer_task || leader == SP_RAFT_NONE)
    return;
  if (node->transfer_via == SP_RAFT_NONE)
    moved = leader != node->id;
  else if (node->transfer_to != SP_RAFT_NONE)
    moved = leader == node->transfer_to;
  else
    moved = leader != node->transfer_via;
  if (moved)
    settle_transfer (node, NULL);
  else if (node->transfer_via != SP_RAFT_NONE && leader == node->id)
    /* Elected meanwhile: the request went to a leader that is gone, and a
     * pending one would keep this leader from handing over when stopped. */
    settle_transfer (node, g_error_new (SP_NODE_ERROR, SP_NODE_ERROR_BUSY,
                                        "%s was elected meanwhile; ask again", node->name));
}

/* A follower asks the leader it knows, which hands over as it would on its
 * own (releasing first); this node only watches the leader change. */
static void
forward_transfer (SpNode *node, GTask *task, guint64 to)
{
  guint64 leader = sp_raft_leader (node->raft);
  GError *error = NULL;

  if (leader != SP_RAFT_NONE && leader == to)
    {
      g_task_return_boolean (task, TRUE);
      return;
    }
  advance_clock (node);
  if (!sp_raft_request_transfer (node->raft, to, &error))
    {
      g_task_return_error (task, raft_error_to_node (error, node));
      return;
    }
  node->transfer_task = g_object_ref (task);
  node->transfer_to = to;
  node->transfer_via = leader;
  node->transfer_timeout = g_timeout_add (4 * node->config->election_ms, on_transfer_timeout, node);
  schedule_ready (node);
}

void
sp_node_transfer_async (SpNode *node, const char *target, GAsyncReadyCallback callback,
                        gpointer user_data)
{
  g_autoptr (GTask) task = new_task (node, callback, user_data);
  guint64 to = target && *target ? sp_member_id (target) : SP_RAFT_NONE;

  if (!check_running (node, task) || (target && *target && !check_name (task, target)))
    return;
  if (node->transfer_task)
    {
      g_task_return_new_error (task, SP_NODE_ERROR, SP_NODE_ERROR_BUSY,
                               "a leadership transfer is already in progress");
      return;
    }
  if (to != SP_RAFT_NONE && !sp_raft_conf_is_voter (sp_raft_conf (node->raft), to))
    {
      g_task_return_new_error (task, SP_NODE_ERROR,
                               sp_raft_conf_is_learner (sp_raft_conf (node->raft), to)
                                   ? SP_NODE_ERROR_INVALID_ARGUMENT
                                   : SP_NODE_ERROR_NOT_FOUND,
                               "%s is not a voting member", target);
      return;
    }
  if (to == node->id && sp_raft_role (node->raft) == SP_RAFT_LEADER)
    {
      g_task_return_boolean (task, TRUE);
      return;
    }
  if (sp_raft_role (node->raft) != SP_RAFT_LEADER && sp_raft_leader (node->raft) != SP_RAFT_NONE)
    {
      forward_transfer (node, task, to);
      return;
    }
  if (!check_leader (node, task))
    return;
  node->transfer_task = g_steal_pointer (&task);
  node->transfer_to = to;
  node->transfer_timeout = g_timeout_add (4 * node->config->election_ms, on_transfer_timeout, node);
  if (!release_holds (node))
    start_transfer (node);
}

static void
on_requested_transfer (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autofree char *from = user_data;
  g_autoptr (GError) error = NULL;

  if (!sp_node_admin_finish (SP_NODE (source), result, &error))
    g_message ("the leadership transfer %s asked for failed: %s", from, error->message);
}

/* Members' requests to this leader (the core took only members' of its
 * term): served as if asked here, plugins releasing first.  The members
 * authenticated themselves to the transport; their callers were authorized
 * where they called. */
static void
serve_transfer_requests (SpNode *node, GArray *requests)
{
  for (guint i = 0; i < requests->len && !node->failed; i++)
    {
      const SpRaftTransferRequest *req = &g_array_index (requests, SpRaftTransferRequest, i);
      const char *from = *id_name (node, req->from) ? id_name (node, req->from) : "a member";
      const char *to = id_name (node, req->to);

      if (sp_raft_role (node->raft) != SP_RAFT_LEADER)
        g_debug ("ignored %s's leadership transfer request: %s no longer leads", from, node->name);
      else if (req->to != SP_RAFT_NONE && !*to)
        g_message ("%s asked to hand leadership over to a member unknown here; ignored", from);
      else
        {
          g_message ("%s asks to hand leadership over to %s", from,
                     *to ? to : "the most up-to-date voter");
          sp_node_transfer_async (node, to, on_requested_transfer, g_strdup (from));
        }
    }
}

static void
finish_stop (SpNode *node)
{
  g_autoptr (GTask) task = g_steal_pointer (&node->stop_task);

  g_clear_handle_id (&node->stop_timeout, g_source_remove);
  stop_clock (node);
  /* The newest applied commit index too (those entries are on disk), so a
   * restart replays everything applied. */
  if (!node->failed && sp_raft_applied_index (node->raft) > node->saved_hs.commit)
    {
      node->saved_hs.commit = sp_raft_applied_index (node->raft);
      sp_storage_persist (node->storage, NULL, NULL, &node->saved_hs, NULL, NULL);
    }
  /* Waits for the storage worker: what was acknowledged stays durable.  A
   * stalled one may never come back: joining it would hang the exit. */
  if (node->storage_stalled)
    node->storage = NULL;
  else
    g_clear_pointer (&node->storage, sp_storage_free);
  node->failed = TRUE;
  g_task_return_boolean (task, TRUE);
}

static void
on_stop_transferred (GObject *source, GAsyncResult *result, gpointer user_data)
{
  SpNode *node = SP_NODE (source);
  g_autoptr (GError) error = NULL;

  if (!sp_node_admin_finish (node, result, &error))
    g_message ("stopping without handing over leadership: %s", error->message);
  if (node->stop_task)
    finish_stop (node);
}

void
sp_node_stop_async (SpNode *node, GAsyncReadyCallback callback, gpointer user_data)
{
  g_autoptr (GTask) task = new_task (node, callback, user_data);

  if (node->stop_task || !node->storage)
    {
      g_task_return_boolean (task, TRUE);
      return;
    }
  node->stop_task = g_steal_pointer (&task);
  if (node->failed && node->holds->len > 0)
    {
      /* Failed: no handover, but what leadership started is stopped
       * before the process goes. */
      node->stopping = TRUE;
      release_holds (node);
      return;
    }
  if (!node->failed && sp_raft_role (node->raft) == SP_RAFT_LEADER && !node->transfer_task)
    {
      /* Hand over first: a planned stop moves leadership in one round trip
       * instead of an election timeout. */
      sp_node_transfer_async (node, NULL, on_stop_transferred, NULL);
      node->stopping = TRUE;
      return;
    }
  node->stopping = TRUE;
  finish_stop (node);
}

gboolean
sp_node_stop_finish (SpNode *node, GAsyncResult *result, GError **error)
{
  return g_task_propagate_boolean (G_TASK (result), error);
}

#ifdef SP_NODE_TESTING
/* ---- tests only (node-testing.h) ---------------------------------------- */

gboolean
sp_node_testing_propose_raw (SpNode *node, const char *add_learner, GBytes *data, guint64 *index,
                             GError **error)
{
  gboolean ok;

  advance_clock (node);
  ok = add_learner ? sp_raft_change_membership_with_data (
           node->raft, SP_RAFT_CONF_ADD_LEARNER, sp_member_id (add_learner), data, index, error)
                   : sp_raft_propose (node->raft, data, index, error);
  schedule_ready (node);
  return ok;
}

GBytes *
sp_node_testing_store_snapshot (SpNode *node)
{
  return sp_store_snapshot (node->store);
}

gboolean
sp_node_testing_compact_raw (SpNode *node, GBytes *data, guint64 *index, GError **error)
{
  *index = sp_raft_applied_index (node->raft);
  if (!sp_raft_compact (node->raft, *index, data, error))
    return FALSE;
  sp_storage_compact (node->storage, sp_raft_snapshot (node->raft), NULL, NULL);
  schedule_ready (node);
  return TRUE;
}
#endif
