/* sparrow — the Raft core.
 *
 * A pure, deterministic state machine in the shape of etcd's raft package.
 * It never reads a clock, a socket or a file and has no global state:
 * time is tick(), input is step(), output is a ready batch.  Randomness comes
 * from the seed in SpRaftOptions.
 *
 * Driving it (one loop, single-threaded):
 *   r = sp_raft_new (&opts, &restore, &err);
 *   loop:
 *     sp_raft_tick (r)             every tick (the unit of all timeouts), or
 *                                  lazily: see sp_raft_ticks_until_due
 *     sp_raft_step (r, msg, &err)  for every message received from a peer
 *     sp_raft_propose (...)        client writes (leader only)
 *     if (sp_raft_has_ready (r)) {
 *       rd = sp_raft_ready (r);
 *       persist rd->snapshot (it replaces the whole stored log: drop every
 *         stored entry), then rd->entries (they replace stored entries from
 *         their first index on), then rd->hard_state;
 *       send rd->messages;         only after the persist completed, unless
 *                                  rd->send_before_persist (then at once)
 *       apply rd->snapshot then rd->committed;
 *       sp_raft_advance (r, rd); sp_raft_ready_free (rd);
 *     }
 *
 * Always on: pre-vote (it never moves anyone's term), check-quorum, leader
 * stickiness (a voter that heard from a leader, started or stopped leading
 * within the minimum election timeout refuses votes and pre-votes of any
 * term, unless a transfer its leader announced forced the campaign), and
 * the leader lease (sp_raft_lease_valid).  Membership changes are
 * single-server and take effect when appended (Raft thesis §4.1); one may
 * be in flight.  Only members speak Raft (sp_raft_step).
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define SP_RAFT_NONE      0  /* node ids are non-zero */
#define SP_RAFT_MAX_NODES 16 /* voters + learners */

#define SP_RAFT_ERROR (sp_raft_error_quark ())
GQuark sp_raft_error_quark (void);

typedef enum
{
  SP_RAFT_ERROR_NOT_LEADER,    /* propose/transfer/change on a non-leader */
  SP_RAFT_ERROR_TRANSFERRING,  /* leadership transfer in progress */
  SP_RAFT_ERROR_CONF_PENDING,  /* a membership change is not committed yet */
  SP_RAFT_ERROR_NOT_READY,     /* leader has not committed in its term yet */
  SP_RAFT_ERROR_INVALID,       /* bad argument: unknown node, bad index... */
  SP_RAFT_ERROR_NOT_CAUGHT_UP, /* learner too far behind to be promoted */
  SP_RAFT_ERROR_CORRUPT,       /* restore state is inconsistent */
  SP_RAFT_ERROR_NOT_MEMBER,    /* step: the sender is not a member (dropped) */
  SP_RAFT_ERROR_REFUSED,       /* step: TimeoutNow or a leader's message not from this
                                * node's leader (dropped) */
} SpRaftError;

typedef enum
{
  SP_RAFT_FOLLOWER,
  SP_RAFT_PRE_CANDIDATE,
  SP_RAFT_CANDIDATE,
  SP_RAFT_LEADER,
  SP_RAFT_LEARNER, /* not a voter in the current configuration */
} SpRaftRole;

const char *sp_raft_role_to_string (SpRaftRole role);

/* A configuration: who votes, who only replicates.  Plain value type. */
typedef struct
{
  guint64 voters[SP_RAFT_MAX_NODES];
  guint n_voters;
  guint64 learners[SP_RAFT_MAX_NODES];
  guint n_learners;
} SpRaftConf;

gboolean sp_raft_conf_is_voter (const SpRaftConf *conf, guint64 id);
gboolean sp_raft_conf_is_learner (const SpRaftConf *conf, guint64 id);
gboolean sp_raft_conf_equal (const SpRaftConf *a, const SpRaftConf *b);

typedef enum
{
  SP_RAFT_ENTRY_NORMAL, /* application data (NULL data: leader's no-op) */
  SP_RAFT_ENTRY_CONF,   /* conf holds the whole configuration from here on;
                           data, if any, goes with the change */
} SpRaftEntryType;

typedef struct
{
  guint64 term;
  guint64 index;
  SpRaftEntryType type;
  GBytes *data;     /* owned ref, may be NULL */
  SpRaftConf *conf; /* CONF: g_rc_box, owned ref; NULL otherwise */
} SpRaftEntry;

/* Copy with new references / release references (for GArray clear funcs). */
void sp_raft_entry_copy (SpRaftEntry *dst, const SpRaftEntry *src);
void sp_raft_entry_clear (SpRaftEntry *e);
/* A GArray of SpRaftEntry that releases its elements. */
GArray *sp_raft_entries_new (guint reserve);

typedef struct
{
  guint64 index; /* last index the snapshot covers; 0 = none */
  guint64 term;
  SpRaftConf conf; /* configuration as of index */
  GBytes *data;    /* application state, owned ref */
} SpRaftSnapshot;

SpRaftSnapshot *sp_raft_snapshot_copy (const SpRaftSnapshot *s);
void sp_raft_snapshot_free (SpRaftSnapshot *s);

typedef struct
{
  guint64 term;
  guint64 vote;
  guint64 commit;
} SpRaftHardState;

typedef enum
{
  SP_RAFT_MSG_PREVOTE,
  SP_RAFT_MSG_PREVOTE_RESP,
  SP_RAFT_MSG_VOTE,
  SP_RAFT_MSG_VOTE_RESP,
  SP_RAFT_MSG_APPEND,
  SP_RAFT_MSG_APPEND_RESP,
  SP_RAFT_MSG_HEARTBEAT,
  SP_RAFT_MSG_HEARTBEAT_RESP,
  SP_RAFT_MSG_SNAPSHOT,
  SP_RAFT_MSG_TIMEOUT_NOW,
  SP_RAFT_MSG_TRANSFER_REQUEST, /* last: older versions drop it as malformed */
  SP_RAFT_MSG_N_TYPES
} SpRaftMsgType;

const char *sp_raft_msg_type_to_string (SpRaftMsgType type);

/* One message.  Field meaning per type:
 *  (PRE)VOTE:       index/log_term = candidate's last log entry; force = the
 *                   campaign follows a leadership transfer (ignores stickiness
 *                   where the transfer is known: see sp_raft_step)
 *  (PRE)VOTE_RESP:  reject, and hint_index = the leader the voter follows
 *                   (SP_RAFT_NONE: none, or an older version); a granted
 *                   VOTE_RESP: context = ticks since the voter last heard
 *                   a leader (0 from older versions)
 *  APPEND:          index/log_term = entry preceding entries; commit
 *  APPEND_RESP:     !reject: index = last index now matching the leader;
 *                   reject: index = the rejected prev index, hint_index and
 *                   log_term = follower's conflict hint (fast back-off);
 *                   context echoed, 0 when answering a stale term
 *  HEARTBEAT:       commit; context = leader's tick stamp (lease); force =
 *                   the leader just sent TimeoutNow to hint_index
 *  HEARTBEAT_RESP:  context echoed
 *  SNAPSHOT:        snapshot
 *  TIMEOUT_NOW:     —
 *  TRANSFER_REQUEST: a member asks its leader for a transfer; context = the
 *                   target (SP_RAFT_NONE: the leader picks) */
typedef struct
{
  SpRaftMsgType type;
  guint64 from;
  guint64 to;
  guint64 term;
  guint64 log_term;
  guint64 index;
  guint64 commit;
  guint64 hint_index;
  guint64 context;
  gboolean reject;
  gboolean force;
  GArray *entries;          /* of SpRaftEntry, APPEND only, else NULL */
  SpRaftSnapshot *snapshot; /* SNAPSHOT only, else NULL */
} SpRaftMsg;

SpRaftMsg *sp_raft_msg_copy (const SpRaftMsg *m);
void sp_raft_msg_free (SpRaftMsg *m);

typedef struct
{
  guint64 id;            /* this node, non-zero */
  guint heartbeat_ticks; /* leader heartbeat interval; default 1 */
  guint election_ticks;  /* minimum election timeout E; actual is random in [E, 2E) */
  guint lease_ticks;     /* leader lease; must be < election_ticks; 0 = default */
  guint max_inflight;    /* append messages in flight per follower; 0 = 64 */
  guint max_msg_entries; /* entries per append message; 0 = 256 */
  guint64 seed;          /* PRNG seed for election timeouts */
} SpRaftOptions;

/* Default lease for an election timeout: leaves room for 5 % clock drift
 * between nodes and one tick of phase on each side. */
guint sp_raft_default_lease_ticks (guint election_ticks);

/* What was persisted.  All-zero for a node that has never run; bootstrap
 * (non-NULL, n_voters > 0) makes a brand-new cluster member write the
 * initial configuration as entry 1 of term 1, identically on every initial
 * member.  A node joining an existing cluster starts with neither. */
typedef struct
{
  SpRaftHardState hard_state;
  const SpRaftSnapshot *snapshot; /* may be NULL */
  const GArray *entries;          /* of SpRaftEntry following the snapshot; may be NULL */
  const SpRaftConf *bootstrap;    /* may be NULL */
} SpRaftRestore;

typedef struct _SpRaft SpRaft;

/* A member's request, received by the leader, to hand leadership over. */
typedef struct
{
  guint64 from;
  guint64 to; /* SP_RAFT_NONE: the leader picks */
} SpRaftTransferRequest;

typedef struct
{
  /* soft state, always filled; *_changed tell what moved since last ready */
  SpRaftRole role;
  guint64 leader;
  gboolean soft_changed;

  gboolean hard_state_changed;
  SpRaftHardState hard_state;

  SpRaftSnapshot *snapshot; /* received from the leader: persist, then apply */
  GArray *entries;          /* to persist; replace any stored entry at >= first index */
  GPtrArray *messages;      /* of SpRaftMsg*, to send after persisting */
  GArray *committed;        /* of SpRaftEntry, to apply in order */
  /* A leader's batch: messages may be sent before or while the rest is
   * persisted (its own entries count toward commit only after advance). */
  gboolean send_before_persist;
  /* Leader: members' requests (of SpRaftTransferRequest), from members of
   * the configuration in this term.  The core does not act on them: the
   * application hands over as it would on its own, releasing first (see
   * sp_raft_request_transfer). */
  GArray *transfer_requests;
} SpRaftReady;

SpRaft *sp_raft_new (const SpRaftOptions *opts, const SpRaftRestore *restore, GError **error);
void sp_raft_free (SpRaft *r);

void sp_raft_tick (SpRaft *r);
/* Ticks until tick() may act on its own: the first n - 1 calls only move
 * time on (no message, no change of role, leader, transfer or lease), the
 * n-th may do something.  n >= 1; G_MAXUINT when no tick ever will (a node
 * that does not vote waits for its leader).  Other input (step, propose...)
 * may bring the moment forward: ask again after it.  A driver can sleep
 * that long and then catch up with that many ticks in a row. */
guint sp_raft_ticks_until_due (const SpRaft *r);
/* Messages for another node, from a stale term or malformed are dropped
 * (returns FALSE with error set for malformed ones, to be logged).  So are,
 * returning FALSE with NOT_MEMBER, messages from a node outside the
 * configuration in force and the committed one (but see
 * sp_raft_accepts_stranger), and, with REFUSED, a
 * TimeoutNow that does not come from the leader this node follows in its
 * term, and an Append, Heartbeat or Snapshot of that term from another
 * node than that leader (a member).  A (pre-)vote's force counts only from the candidate this
 * node's leader named in a Heartbeat (force, hint_index = target) sent with its TimeoutNow, or that
 * this node sent TimeoutNow to itself; one forced Vote that comes first waits for that notice until
 * the lease ends. */
gboolean sp_raft_step (SpRaft *r, const SpRaftMsg *m, GError **error);
/* Whether step takes a leader's Append, Heartbeat and Snapshot from id,
 * a node outside the configuration, now: this node has none (it is
 * joining), or it has heard no leader within the election timeout and a
 * member, refusing its (pre-)vote, named id as the leader it follows
 * (this node missed the entry that added it), or it is a learner (it never
 * campaigns, so no one names a leader to it).  Members' refusals carry
 * that name in hint_index. */
gboolean sp_raft_accepts_stranger (const SpRaft *r, guint64 id);
/* Whether id is in the configuration in force or the committed one. */
gboolean sp_raft_is_member (const SpRaft *r, guint64 id);

/* Appends data (ref taken) to the leader's log; index_out gets its index. */
gboolean sp_raft_propose (SpRaft *r, GBytes *data, guint64 *index_out, GError **error);

typedef enum
{
  SP_RAFT_CONF_ADD_VOTER,
  SP_RAFT_CONF_ADD_LEARNER,
  SP_RAFT_CONF_PROMOTE, /* learner -> voter, once caught up */
  SP_RAFT_CONF_REMOVE,  /* not the leader itself: transfer first */
} SpRaftConfOp;

gboolean sp_raft_change_membership (SpRaft *r, SpRaftConfOp op, guint64 node, guint64 *index_out,
                                    GError **error);
/* The same, the CONF entry carrying data (ref taken; may be NULL): the
 * application applies it with the change, so both are one decision. */
gboolean sp_raft_change_membership_with_data (SpRaft *r, SpRaftConfOp op, guint64 node,
                                              GBytes *data, guint64 *index_out, GError **error);

/* to = SP_RAFT_NONE picks the most up-to-date voter.  A lagging target is
 * caught up first; when it matches, the leader sends TIMEOUT_NOW and steps
 * down (its lease ends at once).  Aborted after an election timeout. */
gboolean sp_raft_transfer_leadership (SpRaft *r, guint64 to, GError **error);
/* A non-leader asks the leader it knows to transfer leadership to `to`
 * (SP_RAFT_NONE: the leader picks), as etcd forwards MsgTransferLeader.
 * It reaches the leader's application through its ready batch, which
 * decides; nothing comes back but the leader's change.  NOT_LEADER when no
 * leader is known, INVALID on the leader itself. */
gboolean sp_raft_request_transfer (SpRaft *r, guint64 to, GError **error);

/* The application's state covers [1, index] (index <= applied): keep it as
 * the snapshot and drop log entries up to index. */
gboolean sp_raft_compact (SpRaft *r, guint64 index, GBytes *data, GError **error);

gboolean sp_raft_has_ready (SpRaft *r);
SpRaftReady *sp_raft_ready (SpRaft *r);
void sp_raft_advance (SpRaft *r, SpRaftReady *rd);
void sp_raft_ready_free (SpRaftReady *rd);

/* Queries. */
guint64 sp_raft_id (const SpRaft *r);
SpRaftRole sp_raft_role (const SpRaft *r);
guint64 sp_raft_term (const SpRaft *r);
guint64 sp_raft_leader (const SpRaft *r);
guint64 sp_raft_commit_index (const SpRaft *r);
guint64 sp_raft_applied_index (const SpRaft *r);
guint64 sp_raft_last_index (const SpRaft *r);
guint64 sp_raft_first_index (const SpRaft *r); /* first entry held in memory */
/* Term of entry index; 0 when unknown (compacted or beyond the log). */
guint64 sp_raft_term_at (const SpRaft *r, guint64 index);
/* Entry at index or NULL when not held; valid until the next call. */
const SpRaftEntry *sp_raft_entry_at (const SpRaft *r, guint64 index);
const SpRaftConf *sp_raft_conf (const SpRaft *r);
const SpRaftSnapshot *sp_raft_snapshot (const SpRaft *r); /* NULL before the first */
guint64 sp_raft_transfer_target (const SpRaft *r);        /* SP_RAFT_NONE if none */
/* The target of the last transfer this node started as leader, or was told
 * of by its leader's notice, and the term it was in (*term may be NULL):
 * whose forced vote in the next term counts.  SP_RAFT_NONE if none. */
guint64 sp_raft_transfer_notice (const SpRaft *r, guint64 *term);

/* Leader only: a quorum of voters (counting itself) acknowledged, within
 * the last lease_ticks ticks, a heartbeat sent in this term.  While it
 * holds, no other node can become leader (given bounded clock drift). */
gboolean sp_raft_lease_valid (const SpRaft *r);
/* Leader only: ticks from now until the lease stops being valid (0 when it
 * is not; G_MAXUINT when it never ends: this node is the only voter).  The
 * answers that arrive meanwhile may move it later. */
guint sp_raft_lease_ticks_left (const SpRaft *r);
/* Leader only (else G_MAXUINT): ticks since any voter that elected it may
 * last have heard another leader, at most (each voter's count scaled for
 * 5 % drift; itself included).  The previous leader's lease and what it
 * held were renewed no later than that. */
guint sp_raft_heard_age (const SpRaft *r);
/* How a candidate folds a granted vote into that moment: heard_at and now
 * in its ticks, voter_age the ticks since the voter heard a leader, on the
 * voter's clock.  Returns the later of heard_at and the voter's hearing. */
guint64 sp_raft_fold_vote_age (guint64 heard_at, guint64 now, guint64 voter_age);
/* Leader only: it won a campaign forced by a leadership transfer, which
 * the previous leader started after letting go of what it held. */
gboolean sp_raft_won_by_transfer (const SpRaft *r);

typedef struct
{
  guint64 id;
  gboolean voter;
  guint64 match;   /* leader only: highest index known replicated */
  guint64 next;    /* leader only */
  gboolean recent; /* leader only: heard within an election timeout */
} SpRaftProgress;

/* Leader only: fills out with one row per member of the configuration
 * (including this node), returns the row count. */
guint sp_raft_progress (const SpRaft *r, SpRaftProgress out[SP_RAFT_MAX_NODES]);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (SpRaftReady, sp_raft_ready_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (SpRaftMsg, sp_raft_msg_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC (SpRaftSnapshot, sp_raft_snapshot_free)

G_END_DECLS
