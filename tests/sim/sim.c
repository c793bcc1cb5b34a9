/* The simulator: a discrete-event loop over a binary heap of events, a
 * simulated network and disk per node, and the checkers.  See sim.h. */
#include "sim.h"

#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

#include "raft.h"

#define U64 "%" G_GUINT64_FORMAT

#define MAX_LIVE           9  /* nodes in existence (up or down) at once */
#define MAX_ID             40 /* node ids handed out per schedule */
#define MIN_VOTERS         3
#define TICK_US            10000
#define DRIFT_PPM          20000 /* each node's tick period is off by up to 2 % */
#define ELECTION_TICKS     10
#define HEAL_BOUND_US      (50 * 2 * ELECTION_TICKS * TICK_US) /* 50 longest election timeouts */
#define MAX_BACKLOG        32 /* uncommitted entries a client lets a leader have */
#define TRACE_RING         256
#define NOTE_LEN           112
#define MAX_READIES        1000 /* per event: more means the core never settles */
#define CRASH_IN_WRITE_PPM 5000 /* a leader dies between sending and persisting */
/* After the heal, in one schedule in PACE_ONE_IN, a client writes as fast
 * as the leader lets it for this long; the cluster must commit at least
 * 1/PACE_RATIO of what a fault-free run of the same schedule does. */
#define PACE_ONE_IN 4
#define PACE_US     200000
#define PACE_GAP    5000
#define PACE_RATIO  4
/* A voter refuses other candidates until E of its ticks have passed since
 * it heard a leader (or started); the first may come at once. */
#define PROMISE_TICKS (ELECTION_TICKS - 1)
/* Check-quorum and a transfer's give-up each take E of the leader's ticks,
 * plus one of phase. */
#define GIVE_UP_TICKS (ELECTION_TICKS + 1)

typedef enum
{
  NODE_UNUSED,
  NODE_UP,
  NODE_DOWN,
  NODE_GONE, /* removed from the cluster and shut down for good */
} NodeState;

typedef struct
{
  guint64 id;
  NodeState state;
  SpRaft *raft;
  guint incarnation;
  guint64 period_us;

  /* disk: survives crashes */
  SpRaftHardState hs;
  SpRaftSnapshot *snap;
  GArray *log; /* of SpRaftEntry, following snap */

  /* state machine: applied index and hash chain; lost on a crash */
  guint64 applied;
  guint64 chain;
  guint64 applied_at_crash;

  /* what the checks saw last */
  SpRaftRole role;
  guint64 term;
  guint64 leader;
  guint64 commit;
  guint64 vote_term; /* newest term it voted in, and for whom */
  guint64 vote_for;
  gboolean retire;  /* shut it down after this event */
  gboolean removed; /* its removal committed; it may linger a while */

  /* The promise the lease rests on: when it last took a message as its
   * leader's, started, or stopped leading. */
  guint64 heard_leader;
  guint64 heard_term;
  guint64 heard_at;
  guint64 started_at;
  guint64 led_until; /* when it last stopped being leader */
  /* free_ask[c]: the last term c asked its vote in while this node was
   * free of its promise (it may grant the same vote again). */
  guint64 free_ask[MAX_ID + 1];
  /* As leader: when each member last answered in its term; a transfer in
   * progress and since when. */
  guint64 answered_at[MAX_ID + 1];
  guint64 unheard_since; /* when too few had answered it; 0: enough have */
  guint64 transfer_to;
  guint64 transfer_at;

  /* A write in progress (asynchronous disk): completes at EV_WRITTEN. */
  SpRaftReady *writing;
  guint64 writing_prev_term;
} Node;

typedef enum
{
  EV_TICK,
  EV_DELIVER,
  EV_CHAOS,
  EV_RESTART,
  EV_UNCUT,
  EV_HEAL,
  EV_WRITTEN,
  EV_RETIRE,
  EV_LOAD,
} EventKind;

typedef struct
{
  guint64 time;
  guint64 seq; /* ties in time go in scheduling order */
  EventKind kind;
  guint64 node;
  guint incarnation;
  gboolean dup;
  SpRaftMsg *msg;
} Event;

typedef struct
{
  guint64 term;
  guint64 chain;
  guint64 node;        /* who applied it first: the leader that committed it */
  guint64 commit_term; /* and that leader's term */
} Committed;

/* One (index, term) stored by some node: what it holds and follows. */
typedef struct
{
  guint64 term;
  guint64 hash;
  guint64 prev_term;
  guint64 node;
  guint next; /* next sighting at the same index; 0 ends */
} Sighting;

typedef struct
{
  SpRaftConfOp op;
  guint64 node;
  guint64 index;
  guint64 term;
} PendingChange;

/* Chaos actions.  Each schedule draws its own mix (swarm testing): a
 * schedule without writes, say, is where lease bugs show. */
typedef enum
{
  ACT_PROPOSE,
  ACT_COMPACT,
  ACT_CRASH,
  ACT_PARTITION,
  ACT_ISOLATE,
  ACT_CUT,
  ACT_UNCUT,
  ACT_ADD,
  ACT_PROMOTE,
  ACT_REMOVE,
  ACT_TRANSFER,
  ACT_FORGE, /* not in plain schedules: they replay as recorded */
  N_ACTIONS
} Action;

static const guint base_weight[N_ACTIONS] = { 40, 10, 5, 3, 2, 3, 3, 3, 4, 3, 4, 3 };

/* Event.dup of a message no node sent: made up by ACT_FORGE. */
#define FORGED 2

typedef enum
{
  REC_NOTE,
  REC_RECV,
  REC_LOST,
  REC_STATE,
} RecKind;

/* A trace line, formatted only when printed: recording must stay cheap. */
typedef struct
{
  guint64 time;
  guint64 node;
  RecKind kind;
  const char *why; /* LOST: the reason; STATE: the event that caused it */
  /* RECV, LOST */
  SpRaftMsgType type;
  guint64 from, to, term, log_term, index, commit, hint, context;
  guint n_entries;
  gboolean reject, force, dup;
  /* STATE */
  SpRaftRole role, old_role;
  guint64 old_term, leader, applied;
  char note[NOTE_LEN];
} Rec;

struct _SpSim
{
  SpSimOptions opts;
  SpSimStats stats;
  guint64 rng;
  guint64 knob_rng;
  guint64 now;
  guint64 seq;
  GArray *heap; /* of Event: a binary min-heap on (time, seq) */

  Node nodes[MAX_ID + 1];
  guint64 next_id;
  gboolean cut[MAX_ID + 1][MAX_ID + 1]; /* cut[a][b]: a's messages to b are lost */
  guint drop_ppm;
  guint dup_ppm;
  guint64 max_delay_us; /* delays are uniform in [1 ms, this] */
  guint max_inflight;
  guint max_msg_entries;
  guint heartbeat_ticks;
  guint64 batch_us;        /* deliveries this close together are read as one batch */
  guint quick_restart_ppm; /* crashes that come back within 50 ms */
  guint weight[N_ACTIONS];
  guint weight_sum;
  guint64 chaos_gap_us; /* mean time between chaos actions */
  guint64 disk_us;      /* writes take up to this long; 0: done at once */
  guint linger;         /* a removed node shuts down: 0 at once, 1 later, 2 never */
  gboolean leased;      /* some node held a valid lease after the last event */

  gboolean healing;
  guint64 heal_at;
  guint64 marker_index; /* the liveness probe: a write made after the heal */
  guint64 marker_term;
  guint64 marker_leader;
  gboolean pace;       /* measure the pace of commits after the heal */
  gboolean fault_free; /* the reference run: no chaos, healed from the start */
  guint64 pace_from;   /* the pace window: when it began, commits before it */
  guint64 pace_base;
  guint64 pace_commits;
  gboolean done;

  GArray *leaders;   /* guint64 leader by term */
  GArray *committed; /* Committed by index; [0] is the empty state */
  SpRaftConf committed_conf;
  GArray *sightings;  /* Sighting; [0] is unused */
  GArray *sight_head; /* guint first sighting by index */
  GArray *pending;    /* PendingChange awaiting the verdict of the log */
  /* (voter, pre, candidate, term) -> how many (pre-)votes the voter may
   * grant: one per request it took while free of its promise */
  GHashTable *grants;
  GHashTable *timeouts; /* (target, term) of every TimeoutNow a node sent */
  guint64 payload_seq;

  Rec ring[TRACE_RING];
  guint64 n_recs;
  char *failure;
};

/* ---- randomness and hashing --------------------------------------------- */

static guint64
mix64 (guint64 z)
{
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static guint64
combine (guint64 h, guint64 v)
{
  return mix64 (h ^ (v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2)));
}

/* splitmix64 */
static guint64
rnd (SpSim *s)
{
  return mix64 (s->rng += 0x9e3779b97f4a7c15ULL);
}

/* What was modelled after schedules were first recorded (write latency,
 * removed nodes lingering, the pace window) draws from a stream of its
 * own: with those off (SpSimOptions.plain) a seed replays the schedule it
 * always did. */
static guint64
rnd_knob (SpSim *s, guint64 lo, guint64 hi)
{
  return lo + mix64 (s->knob_rng += 0x9e3779b97f4a7c15ULL) % (hi - lo + 1);
}

static guint64
rnd_below (SpSim *s, guint64 n)
{
  return rnd (s) % n;
}

static guint64
rnd_between (SpSim *s, guint64 lo, guint64 hi)
{
  return lo + rnd (s) % (hi - lo + 1);
}

static gboolean
chance (SpSim *s, guint ppm)
{
  return rnd (s) % 1000000 < ppm;
}

static guint64
entry_hash (const SpRaftEntry *e)
{
  guint64 h = combine (0x5350, e->type);
  gsize len = 0;
  const guint8 *p = e->data ? g_bytes_get_data (e->data, &len) : NULL;

  h = combine (h, e->data ? len : G_MAXUINT64);
  for (gsize i = 0; i < len; i++)
    h = (h ^ p[i]) * 0x100000001b3ULL;
  if (e->conf)
    {
      for (guint i = 0; i < e->conf->n_voters; i++)
        h = combine (h, e->conf->voters[i]);
      h = combine (h, 0);
      for (guint i = 0; i < e->conf->n_learners; i++)
        h = combine (h, e->conf->learners[i]);
    }
  return mix64 (h);
}

static guint64
chain_next (guint64 chain, const SpRaftEntry *e)
{
  return combine (combine (combine (chain, e->index), e->term), entry_hash (e));
}

/* Snapshot data: the state machine, i.e. (applied index, chain hash). */
static GBytes *
snap_encode (guint64 index, guint64 chain)
{
  guint64 v[2] = { GUINT64_TO_LE (index), GUINT64_TO_LE (chain) };

  return g_bytes_new (v, sizeof v);
}

static gboolean
snap_decode (const SpRaftSnapshot *snap, guint64 *index, guint64 *chain)
{
  guint64 v[2];

  if (!snap->data || g_bytes_get_size (snap->data) != sizeof v)
    return FALSE;
  memcpy (v, g_bytes_get_data (snap->data, NULL), sizeof v);
  *index = GUINT64_FROM_LE (v[0]);
  *chain = GUINT64_FROM_LE (v[1]);
  return TRUE;
}

/* ---- trace -------------------------------------------------------------- */

static void
format_rec (const Rec *r, GString *out)
{
  g_string_append_printf (out, "[%3" G_GUINT64_FORMAT ".%06" G_GUINT64_FORMAT "] ",
                          r->time / 1000000, r->time % 1000000);
  if (r->node)
    g_string_append_printf (out, "n" U64 " ", r->node);
  else
    g_string_append (out, "-- ");

  switch (r->kind)
    {
      case REC_NOTE:
        g_string_append (out, r->note);
        return;
      case REC_STATE:
        g_string_append (out, sp_raft_role_to_string (r->old_role));
        if (r->role != r->old_role)
          g_string_append_printf (out, " -> %s", sp_raft_role_to_string (r->role));
        g_string_append_printf (out, ", term " U64, r->old_term);
        if (r->term != r->old_term)
          g_string_append_printf (out, " -> " U64, r->term);
        g_string_append_printf (out, ", leader n" U64 ", commit " U64 ", applied " U64 " (%s)",
                                r->leader, r->commit, r->applied, r->why);
        return;
      case REC_RECV:
        g_string_append (out, r->dup ? "recv dup " : "recv ");
        break;
      case REC_LOST:
        g_string_append (out, "lost ");
        break;
    }

  g_string_append_printf (out, "%s " U64 "->" U64 " t" U64, sp_raft_msg_type_to_string (r->type),
                          r->from, r->to, r->term);
  switch (r->type)
    {
      case SP_RAFT_MSG_PREVOTE:
      case SP_RAFT_MSG_VOTE:
        g_string_append_printf (out, " last " U64 "/t" U64 "%s", r->index, r->log_term,
                                r->force ? " force" : "");
        break;
      case SP_RAFT_MSG_PREVOTE_RESP:
      case SP_RAFT_MSG_VOTE_RESP:
        g_string_append (out, r->reject ? " rejected" : " granted");
        break;
      case SP_RAFT_MSG_APPEND:
        g_string_append_printf (out, " prev " U64 "/t" U64 " entries %u commit " U64, r->index,
                                r->log_term, r->n_entries, r->commit);
        break;
      case SP_RAFT_MSG_APPEND_RESP:
        if (r->reject)
          g_string_append_printf (out, " reject " U64 " hint " U64 "/t" U64, r->index, r->hint,
                                  r->log_term);
        else
          g_string_append_printf (out, " match " U64, r->index);
        break;
      case SP_RAFT_MSG_HEARTBEAT:
        g_string_append_printf (out, " commit " U64 " stamp " U64, r->commit, r->context);
        break;
      case SP_RAFT_MSG_HEARTBEAT_RESP:
        g_string_append_printf (out, " stamp " U64, r->context);
        break;
      case SP_RAFT_MSG_SNAPSHOT:
        g_string_append_printf (out, " snapshot " U64 "/t" U64, r->index, r->log_term);
        break;
      case SP_RAFT_MSG_TRANSFER_REQUEST:
        g_string_append_printf (out, " to n" U64, r->context);
        break;
      case SP_RAFT_MSG_TIMEOUT_NOW:
      case SP_RAFT_MSG_N_TYPES:
      default:
        break;
    }
  if (r->kind == REC_LOST)
    g_string_append_printf (out, " (%s)", r->why);
}

static Rec *
rec_new (SpSim *s, RecKind kind, guint64 node)
{
  Rec *r = &s->ring[s->n_recs++ % TRACE_RING];

  r->time = s->now;
  r->kind = kind;
  r->node = node;
  return r;
}

static void
rec_done (SpSim *s, const Rec *r)
{
  g_autoptr (GString) line = NULL;

  if (!s->opts.print_trace)
    return;
  line = g_string_new (NULL);
  format_rec (r, line);
  g_print ("%s\n", line->str);
}

static void G_GNUC_PRINTF (3, 4) note (SpSim *s, guint64 node, const char *fmt, ...)
{
  Rec *r = rec_new (s, REC_NOTE, node);
  va_list ap;

  va_start (ap, fmt);
  g_vsnprintf (r->note, sizeof r->note, fmt, ap);
  va_end (ap);
  rec_done (s, r);
}

static void
rec_msg (SpSim *s, RecKind kind, guint64 node, const SpRaftMsg *m, const char *why, gboolean dup)
{
  Rec *r = rec_new (s, kind, node);

  r->why = why;
  r->dup = dup;
  r->type = m->type;
  r->from = m->from;
  r->to = m->to;
  r->term = m->term;
  r->log_term = m->snapshot ? m->snapshot->term : m->log_term;
  r->index = m->snapshot ? m->snapshot->index : m->index;
  r->commit = m->commit;
  r->hint = m->hint_index;
  r->context = m->context;
  r->n_entries = m->entries ? m->entries->len : 0;
  r->reject = m->reject;
  r->force = m->force;
  rec_done (s, r);
}

static void G_GNUC_PRINTF (2, 3) fail (SpSim *s, const char *fmt, ...)
{
  va_list ap;

  if (s->failure)
    return;
  va_start (ap, fmt);
  s->failure = g_strdup_vprintf (fmt, ap);
  va_end (ap);
  /* Just the property: the whole message does not fit a trace line. */
  note (s, 0, "FAILED: %.*s", (int)strcspn (s->failure, ":"), s->failure);
}

/* ---- event queue -------------------------------------------------------- */

static gboolean
before (const Event *a, const Event *b)
{
  return a->time < b->time || (a->time == b->time && a->seq < b->seq);
}

static void
push (SpSim *s, guint64 delay, EventKind kind, guint64 node, SpRaftMsg *msg, gboolean dup)
{
  Event e = {
    .time = s->now + delay,
    .seq = s->seq++,
    .kind = kind,
    .node = node,
    .incarnation = node ? s->nodes[node].incarnation : 0,
    .dup = dup,
    .msg = msg,
  };
  Event *h;
  guint i;

  g_array_append_val (s->heap, e);
  h = (Event *)s->heap->data;
  for (i = s->heap->len - 1; i > 0 && before (&e, &h[(i - 1) / 2]); i = (i - 1) / 2)
    h[i] = h[(i - 1) / 2];
  h[i] = e;
}

static gboolean
pop (SpSim *s, Event *out)
{
  Event *h = (Event *)s->heap->data;
  guint n = s->heap->len, i = 0;
  Event last;

  if (n == 0)
    return FALSE;
  *out = h[0];
  last = h[--n];
  for (;;)
    {
      guint c = 2 * i + 1;

      if (c >= n)
        break;
      if (c + 1 < n && before (&h[c + 1], &h[c]))
        c++;
      if (!before (&h[c], &last))
        break;
      h[i] = h[c];
      i = c;
    }
  if (n > 0)
    h[i] = last;
  g_array_set_size (s->heap, n);
  return TRUE;
}

/* ---- helpers ------------------------------------------------------------ */

static Node *
node_get (SpSim *s, guint64 id)
{
  if (id == 0 || id > MAX_ID || s->nodes[id].state == NODE_UNUSED)
    return NULL;
  return &s->nodes[id];
}

static guint
count_existing (SpSim *s)
{
  guint n = 0;

  for (guint64 id = 1; id < s->next_id; id++)
    if (s->nodes[id].state == NODE_UP || s->nodes[id].state == NODE_DOWN)
      n++;
  return n;
}

static Node *
pick_up (SpSim *s)
{
  Node *up[MAX_ID];
  guint n = 0;

  for (guint64 id = 1; id < s->next_id; id++)
    if (s->nodes[id].state == NODE_UP)
      up[n++] = &s->nodes[id];
  return n ? up[rnd_below (s, n)] : NULL;
}

static Node *
pick_leader (SpSim *s)
{
  Node *leaders[MAX_ID];
  guint n = 0;

  for (guint64 id = 1; id < s->next_id; id++)
    if (s->nodes[id].state == NODE_UP && sp_raft_role (s->nodes[id].raft) == SP_RAFT_LEADER)
      leaders[n++] = &s->nodes[id];
  return n ? leaders[rnd_below (s, n)] : NULL;
}

static guint64
disk_snap_index (const Node *n)
{
  return n->snap ? n->snap->index : 0;
}

static guint64
durable_commit (const Node *n)
{
  return MAX (n->hs.commit, disk_snap_index (n));
}

/* ---- checks ------------------------------------------------------------- */

/* Log matching: one (index, term) always holds the same entry after the
 * same previous term, whoever stores it. */
static void
check_sighting (SpSim *s, const Node *n, const SpRaftEntry *e, guint64 prev_term)
{
  guint64 hash = entry_hash (e);
  Sighting new = { e->term, hash, prev_term, n->id, 0 };
  guint *head;

  if (s->sight_head->len <= e->index)
    g_array_set_size (s->sight_head, e->index + 1);
  head = &g_array_index (s->sight_head, guint, e->index);
  for (guint i = *head; i; i = g_array_index (s->sightings, Sighting, i).next)
    {
      const Sighting *o = &g_array_index (s->sightings, Sighting, i);

      if (o->term != e->term)
        continue;
      if (o->hash != hash || o->prev_term != prev_term)
        fail (s,
              "log matching: n" U64 " stores index " U64 " term " U64
              " (content %016" G_GINT64_MODIFIER "x, after term " U64 ") but n" U64
              " stored it with content %016" G_GINT64_MODIFIER "x after term " U64,
              n->id, e->index, e->term, hash, prev_term, o->node, o->hash, o->prev_term);
      return;
    }
  new.next = *head;
  *head = s->sightings->len;
  g_array_append_val (s->sightings, new);
}

/* Election safety. */
static void
check_leader (SpSim *s, const Node *n, guint64 term)
{
  guint64 *leader;

  if (s->leaders->len <= term)
    g_array_set_size (s->leaders, term + 1);
  leader = &g_array_index (s->leaders, guint64, term);
  if (*leader == 0)
    {
      *leader = n->id;
      s->stats.elections++;
    }
  else if (*leader != n->id)
    {
      fail (s, "election safety: n" U64 " and n" U64 " were both leader in term " U64, *leader,
            n->id, term);
    }
}

/* Leader completeness: a leader holds every entry committed in an earlier
 * term.  (A stale candidate may still win a lower term after a later term
 * committed entries: those it need not have.) */
static void
check_completeness (SpSim *s, const Node *n)
{
  guint64 first = sp_raft_first_index (n->raft);
  guint64 term = sp_raft_term (n->raft);

  for (guint64 i = MAX (first, 1); i < s->committed->len; i++)
    {
      const Committed *c = &g_array_index (s->committed, Committed, i);
      guint64 t = sp_raft_term_at (n->raft, i);

      if (c->commit_term < term && t != c->term)
        {
          fail (s,
                "leader completeness: n" U64 " leads term " U64 " but holds term " U64
                " at index " U64 ", where n" U64 " committed an entry of term " U64 " in term " U64,
                n->id, term, t, i, c->node, c->term, c->commit_term);
          return;
        }
    }
}

/* A node votes at most once per term, crashes notwithstanding. */
static void
check_vote (SpSim *s, Node *n, guint64 term, guint64 candidate)
{
  if (term == n->vote_term && candidate != n->vote_for)
    fail (s, "vote uniqueness: n" U64 " voted for n" U64 " and for n" U64 " in term " U64, n->id,
          n->vote_for, candidate, term);
  if (term >= n->vote_term)
    {
      n->vote_term = term;
      n->vote_for = candidate;
    }
}

/* Whether v is still bound by the promise the lease rests on: it heard a
 * leader (or started, or stopped leading) less than its minimum election
 * timeout ago, measured on its own clock.  With a leader given, only
 * hearing that leader in that term (or starting) counts. */
static gboolean
promised (const SpSim *s, const Node *v, guint64 leader, guint64 term)
{
  guint64 span = PROMISE_TICKS * v->period_us;

  if (s->now < v->started_at + span || (leader == 0 && s->now < v->led_until + span))
    return TRUE;
  return v->heard_leader != 0 && s->now < v->heard_at + span
         && (leader == 0 || (v->heard_leader == leader && v->heard_term == term));
}

static guint
quorum_of (const SpRaftConf *c)
{
  return c->n_voters / 2 + 1;
}

static guint64
grant_key (guint64 voter, gboolean pre, guint64 candidate, guint64 term)
{
  return term << 13 | voter << 7 | (guint64)pre << 6 | candidate;
}

static guint
grants_left (SpSim *s, guint64 key)
{
  return GPOINTER_TO_UINT (g_hash_table_lookup (s->grants, &key));
}

static void
set_grants (SpSim *s, guint64 key, guint n)
{
  if (n == 0)
    g_hash_table_remove (s->grants, &key);
  else
    g_hash_table_insert (s->grants, g_memdup2 (&key, sizeof key), GUINT_TO_POINTER (n));
}

/* The lease's premise, not only its consequence: while a leader holds a
 * lease, a quorum of its voters heard from it in its term within their
 * election timeout (so they refuse anyone else), or are down. */
static void
check_lease_premise (SpSim *s, const Node *l)
{
  const SpRaftConf *c = sp_raft_conf (l->raft);
  guint64 term = sp_raft_term (l->raft);
  guint bound = 0;

  for (guint i = 0; i < c->n_voters; i++)
    {
      const Node *v = node_get (s, c->voters[i]);

      if (v == l || !v || v->state != NODE_UP || promised (s, v, l->id, term))
        bound++;
    }
  if (bound < quorum_of (c))
    fail (s,
          "lease premise: n" U64 " holds a lease in term " U64 " but only %u of its %u voters "
          "heard from it in that term within their election timeout, or are down",
          l->id, term, bound, c->n_voters);
}

/* Check-quorum: a leader that no quorum of its voters answered within an
 * election timeout (its clock) steps down, at its next tick when a
 * membership change left too few. */
static void
check_quorum_heard (SpSim *s, Node *l)
{
  const SpRaftConf *c = sp_raft_conf (l->raft);
  guint64 bound = GIVE_UP_TICKS * l->period_us;
  guint heard = 0;

  for (guint i = 0; i < c->n_voters; i++)
    if (c->voters[i] == l->id || s->now - l->answered_at[c->voters[i]] < bound)
      heard++;
  if (heard >= quorum_of (c))
    l->unheard_since = 0;
  else if (l->unheard_since == 0)
    l->unheard_since = s->now;
  else if (s->now - l->unheard_since > l->period_us)
    fail (s,
          "check-quorum: n" U64 " still leads term " U64 " though only %u of its %u voters "
          "answered it in the last " U64 " ms",
          l->id, sp_raft_term (l->raft), heard, c->n_voters, bound / 1000);
}

/* Lease safety: at no instant do two live nodes hold a valid lease. */
static void
check_leases (SpSim *s)
{
  const Node *holder = NULL;

  s->leased = FALSE;

  for (guint64 id = 1; id < s->next_id; id++)
    {
      Node *n = &s->nodes[id];

      if (n->state != NODE_UP || sp_raft_role (n->raft) != SP_RAFT_LEADER)
        continue;
      check_quorum_heard (s, n);
      if (!sp_raft_lease_valid (n->raft))
        continue;
      check_lease_premise (s, n);
      if (holder)
        {
          fail (s,
                "lease safety: n" U64 " (term " U64 ") and n" U64 " (term " U64
                ") both hold a valid leader lease",
                holder->id, sp_raft_term (holder->raft), n->id, sp_raft_term (n->raft));
          return;
        }
      holder = n;
      s->leased = TRUE;
    }
}

static void
resolve_changes (SpSim *s, const SpRaftEntry *e)
{
  for (guint i = 0; i < s->pending->len;)
    {
      const PendingChange *p = &g_array_index (s->pending, PendingChange, i);
      gboolean ok = p->term == e->term;
      Node *n = node_get (s, p->node);

      if (p->index != e->index)
        {
          i++;
          continue;
        }
      /* One whose addition was lost has no future.  A removed node is shut
       * down by its admin, at once, a while later or never: until then it
       * runs on, unaware, and must not disturb anyone. */
      if (n && !ok && p->op == SP_RAFT_CONF_ADD_LEARNER)
        n->retire = TRUE;
      if (n && ok && p->op == SP_RAFT_CONF_REMOVE)
        {
          n->removed = TRUE;
          if (s->linger == 0)
            n->retire = TRUE;
          else if (s->linger == 1)
            push (s, rnd_knob (s, 100000, 2000000), EV_RETIRE, n->id, NULL, FALSE);
        }
      note (s, 0, "membership change for n" U64 " at index " U64 " term " U64 " %s", p->node,
            p->index, p->term, ok ? "committed" : "lost");
      g_array_remove_index_fast (s->pending, i);
    }
}

/* State-machine safety: every application of an index anywhere yields the
 * same chain hash.  The first one defines it. */
static void
commit_global (SpSim *s, const Node *n, const SpRaftEntry *e, guint64 chain)
{
  Committed c = { e->term, chain, n->id, sp_raft_term (n->raft) };

  if (e->index < s->committed->len)
    {
      const Committed *o = &g_array_index (s->committed, Committed, e->index);

      if (o->term != e->term || o->chain != chain)
        fail (s,
              "state-machine safety: n" U64 " applied index " U64 " of term " U64
              " (chain %016" G_GINT64_MODIFIER "x) but n" U64 " applied term " U64
              " (chain %016" G_GINT64_MODIFIER "x) there",
              n->id, e->index, e->term, chain, o->node, o->term, o->chain);
      return;
    }
  g_array_append_val (s->committed, c);
  if (e->type == SP_RAFT_ENTRY_NORMAL && e->data)
    s->stats.committed++;
  if (e->type == SP_RAFT_ENTRY_CONF)
    {
      s->committed_conf = *e->conf;
      if (e->index > 1)
        s->stats.conf_changes++;
    }
  resolve_changes (s, e);
}

/* A state machine restored from a snapshot must be one that existed. */
static void
check_snapshot_state (SpSim *s, const Node *n, const SpRaftSnapshot *snap, guint64 index,
                      guint64 chain)
{
  const Committed *c;

  if (index != snap->index)
    {
      fail (s, "state-machine safety: n" U64 " got a snapshot at " U64 " holding the state at " U64,
            n->id, snap->index, index);
      return;
    }
  if (index >= s->committed->len)
    {
      fail (s,
            "state-machine safety: n" U64 " got a snapshot at " U64 " but nobody applied that far",
            n->id, index);
      return;
    }
  c = &g_array_index (s->committed, Committed, index);
  if (c->term != snap->term || c->chain != chain)
    fail (s,
          "state-machine safety: n" U64 " got a snapshot at " U64 " of term " U64
          " that differs from what n" U64 " applied there (term " U64 ")",
          n->id, index, snap->term, c->node, c->term);
}

/* ---- a node's ready ----------------------------------------------------- */

/* prev_term: the term of the entry before rd's first, when it was made. */
static void
persist (SpSim *s, Node *n, const SpRaftReady *rd, guint64 prev_term)
{
  if (rd->snapshot)
    {
      sp_raft_snapshot_free (n->snap);
      n->snap = sp_raft_snapshot_copy (rd->snapshot);
      g_array_set_size (n->log, 0);
    }
  if (rd->entries->len > 0)
    {
      const SpRaftEntry *first = &g_array_index (rd->entries, SpRaftEntry, 0);
      guint64 base = disk_snap_index (n);

      if (first->index <= base || first->index > base + n->log->len + 1)
        {
          fail (s,
                "durability: n" U64 " must store entries from " U64 " but its disk holds (" U64
                ", " U64 "]",
                n->id, first->index, base, base + n->log->len);
          return;
        }
      g_array_set_size (n->log, first->index - base - 1);
      for (guint i = 0; i < rd->entries->len; i++)
        {
          const SpRaftEntry *e = &g_array_index (rd->entries, SpRaftEntry, i);
          SpRaftEntry copy;

          check_sighting (s, n, e, prev_term);
          prev_term = e->term;
          sp_raft_entry_copy (&copy, e);
          g_array_append_val (n->log, copy);
        }
    }
  if (rd->hard_state_changed)
    n->hs = rd->hard_state;
}

static void
apply (SpSim *s, Node *n, const SpRaftReady *rd)
{
  if (rd->snapshot)
    {
      guint64 index, chain;

      if (!snap_decode (rd->snapshot, &index, &chain))
        {
          fail (s, "state-machine safety: n" U64 " got a snapshot without its data", n->id);
          return;
        }
      if (index < n->applied)
        {
          fail (s,
                "state-machine safety: n" U64 " installs a snapshot at " U64
                " after applying up to " U64,
                n->id, index, n->applied);
          return;
        }
      check_snapshot_state (s, n, rd->snapshot, index, chain);
      n->applied = index;
      n->chain = chain;
      s->stats.snapshots++;
      note (s, n->id, "installed snapshot " U64 "/t" U64, index, rd->snapshot->term);
    }
  for (guint i = 0; i < rd->committed->len && !s->failure; i++)
    {
      const SpRaftEntry *e = &g_array_index (rd->committed, SpRaftEntry, i);
      guint64 chain;

      if (e->index != n->applied + 1)
        {
          fail (s, "state-machine safety: n" U64 " applies index " U64 " right after " U64, n->id,
                e->index, n->applied);
          return;
        }
      /* Applied but not durably committed would be un-applied by a crash. */
      if (durable_commit (n) < e->index)
        {
          fail (s, "durability: n" U64 " applies index " U64 " but its disk says commit " U64,
                n->id, e->index, durable_commit (n));
          return;
        }
      chain = chain_next (n->chain, e);
      commit_global (s, n, e, chain);
      n->applied = e->index;
      n->chain = chain;
    }
}

static void net_send (SpSim *s, const SpRaftMsg *m);
static void node_crash (SpSim *s, Node *n);

/* A leadership transfer completes or is given up within an election
 * timeout of the leader's clock (each request starts the clock anew). */
static void
check_transfer (SpSim *s, Node *n)
{
  guint64 to = sp_raft_role (n->raft) == SP_RAFT_LEADER ? sp_raft_transfer_target (n->raft) : 0;

  if (to != n->transfer_to)
    {
      n->transfer_to = to;
      n->transfer_at = s->now;
    }
  else if (to && s->now - n->transfer_at > GIVE_UP_TICKS * n->period_us)
    fail (s,
          "transfer: n" U64 " has been handing leadership over to n" U64 " for " U64
          " ms, neither done nor given up",
          n->id, to, (s->now - n->transfer_at) / 1000);
}

/* After every event that touched a node: role, term and commit moves. */
static void
observe (SpSim *s, Node *n, const char *cause)
{
  SpRaftRole role = sp_raft_role (n->raft);
  guint64 term = sp_raft_term (n->raft);
  guint64 leader = sp_raft_leader (n->raft);
  guint64 commit = sp_raft_commit_index (n->raft);

  if (term < n->term)
    fail (s, "sanity: n" U64 " went back from term " U64 " to " U64, n->id, n->term, term);
  if (commit < n->commit)
    fail (s, "sanity: n" U64 " commit index went back from " U64 " to " U64, n->id, n->commit,
          commit);
  if (role != n->role || term != n->term || leader != n->leader)
    {
      Rec *r = rec_new (s, REC_STATE, n->id);

      r->why = cause;
      r->old_role = n->role;
      r->role = role;
      r->old_term = n->term;
      r->term = term;
      r->leader = leader;
      r->commit = commit;
      r->applied = n->applied;
      rec_done (s, r);
    }
  /* Membership: only a voter of its own configuration campaigns or leads,
   * and a node whose removal committed never leads again. */
  if ((role == SP_RAFT_PRE_CANDIDATE || role == SP_RAFT_CANDIDATE || role == SP_RAFT_LEADER)
      && !sp_raft_conf_is_voter (sp_raft_conf (n->raft), n->id))
    fail (s, "membership: n" U64 " is %s in term " U64 " but not a voter of its configuration",
          n->id, sp_raft_role_to_string (role), term);
  if (role == SP_RAFT_LEADER && n->removed)
    fail (s, "membership: n" U64 ", whose removal committed, leads term " U64, n->id, term);
  if (role == SP_RAFT_LEADER)
    {
      check_leader (s, n, term);
      if (n->role != SP_RAFT_LEADER || n->term != term)
        {
          check_completeness (s, n);
          for (guint64 id = 1; id <= MAX_ID; id++)
            n->answered_at[id] = s->now;
          n->unheard_since = 0;
        }
    }
  else if (n->role == SP_RAFT_LEADER)
    {
      /* A leader that steps down refuses other candidates for a while. */
      n->led_until = s->now;
    }
  check_transfer (s, n);
  n->role = role;
  n->term = term;
  n->leader = leader;
  n->commit = commit;
}

/* A leader hands over when a member asks, as sparrowd does (its plugins
 * release at once here, unless it stepped down during the write). */
static void
serve_requests (SpSim *s, Node *n, const SpRaftReady *rd)
{
  for (guint i = 0; i < rd->transfer_requests->len && !s->failure; i++)
    {
      const SpRaftTransferRequest *req
          = &g_array_index (rd->transfer_requests, SpRaftTransferRequest, i);
      g_autoptr (GError) error = NULL;

      if (rd->role != SP_RAFT_LEADER)
        fail (s, "transfer request: n" U64 " surfaced n" U64 "'s request as %s", n->id, req->from,
              sp_raft_role_to_string (rd->role));
      else if (sp_raft_role (n->raft) != SP_RAFT_LEADER)
        note (s, n->id, "no longer leads: n" U64 "'s transfer request ignored", req->from);
      else if (sp_raft_transfer_leadership (n->raft, req->to, &error))
        {
          s->stats.transfers++;
          s->stats.forwarded++;
          n->transfer_to = 0;
          note (s, n->id, "transfer leadership to n" U64 " as n" U64 " asked", req->to, req->from);
        }
      else
        {
          note (s, n->id, "transfer to n" U64 " asked by n" U64 " refused: %s", req->to, req->from,
                error->message);
        }
    }
}

static guint64 timeout_key (guint64 to, guint64 term);

/* The write of a ready is done: send what waited for it, apply, advance. */
static void
finish_write (SpSim *s, Node *n, SpRaftReady *rd, guint64 prev_term)
{
  persist (s, n, rd, prev_term);
  for (guint i = 0; i < rd->messages->len && !s->failure && !rd->send_before_persist; i++)
    net_send (s, g_ptr_array_index (rd->messages, i));
  apply (s, n, rd);
  sp_raft_advance (n->raft, rd);
  serve_requests (s, n, rd);
}

/* Persist, send, apply, advance: in that order, until nothing is left.  A
 * write may take a while (as sparrowd's storage worker does): the node
 * steps what arrives meanwhile, a leader having already sent its batch. */
static void
drain (SpSim *s, Node *n, const char *cause)
{
  guint rounds = 0;

  while (!s->failure && !n->writing && sp_raft_has_ready (n->raft))
    {
      g_autoptr (SpRaftReady) rd = sp_raft_ready (n->raft);
      guint64 prev_term
          = rd->entries->len > 0
                ? sp_raft_term_at (n->raft, g_array_index (rd->entries, SpRaftEntry, 0).index - 1)
                : 0;

      if (++rounds > MAX_READIES)
        {
          fail (s, "sanity: n" U64 " keeps producing readies", n->id);
          return;
        }
      /* A transfer counts from when the leader decides it, not when its
       * TimeoutNow leaves after the write: the leader itself expects the
       * target's forced vote from then on. */
      for (guint i = 0; i < rd->messages->len; i++)
        {
          const SpRaftMsg *m = g_ptr_array_index (rd->messages, i);
          guint64 key = timeout_key (m->to, m->term);

          if (m->type == SP_RAFT_MSG_TIMEOUT_NOW)
            g_hash_table_add (s->timeouts, g_memdup2 (&key, sizeof key));
        }
      if (rd->send_before_persist)
        {
          for (guint i = 0; i < rd->messages->len && !s->failure; i++)
            net_send (s, g_ptr_array_index (rd->messages, i));
          /* The leader's disk write may never finish: its appends are out. */
          if (rd->entries->len > 0 && !s->healing && chance (s, CRASH_IN_WRITE_PPM))
            {
              note (s, n->id, "crash while writing entries it already sent");
              node_crash (s, n);
              return;
            }
        }
      if (s->disk_us > 0 && (rd->snapshot || rd->entries->len > 0 || rd->hard_state_changed))
        {
          n->writing = g_steal_pointer (&rd);
          n->writing_prev_term = prev_term;
          push (s, rnd_knob (s, 100, s->disk_us), EV_WRITTEN, n->id, NULL, FALSE);
          break;
        }
      finish_write (s, n, rd, prev_term);
    }
  if (!s->failure)
    observe (s, n, cause);
}

/* ---- network ------------------------------------------------------------ */

static guint64
timeout_key (guint64 to, guint64 term)
{
  return term << 8 | to;
}

/* A (pre-)vote's force may override the promise only for the target of a
 * TimeoutNow some node (a leader handing over) sent in the term before. */
static gboolean
force_sent (SpSim *s, const SpRaftMsg *m)
{
  guint64 key = timeout_key (m->from, m->term - 1);

  return m->force && m->term > 0 && g_hash_table_contains (s->timeouts, &key);
}

/* A forced vote with the identity of the target of a transfer the node
 * decided as leader, or was told of by its leader: expected, perhaps before
 * the TimeoutNow is out (stepped in the batch that decided the transfer, or
 * waiting for the leader's write), and a forgery of it is the real thing. */
static gboolean
handing_over_to (const Node *n, const SpRaftMsg *m)
{
  guint64 term;
  guint64 to = sp_raft_transfer_notice (n->raft, &term);

  return m->force && to != SP_RAFT_NONE && m->from == to && m->term == term + 1;
}

static void
net_send (SpSim *s, const SpRaftMsg *m)
{
  Node *to = node_get (s, m->to);
  Node *from = node_get (s, m->from);
  const char *lost = NULL;

  /* Stickiness: a voter bound by its promise when the request came grants
   * nothing (a forced campaign after a transfer aside). */
  if ((m->type == SP_RAFT_MSG_VOTE_RESP || m->type == SP_RAFT_MSG_PREVOTE_RESP) && !m->reject
      && from)
    {
      guint64 key = grant_key (from->id, m->type == SP_RAFT_MSG_PREVOTE_RESP, m->to, m->term);
      guint left = grants_left (s, key);

      guint64 transfer = timeout_key (m->to, m->term - 1);

      if (left > 0)
        set_grants (s, key, left - 1);
      /* A forced Vote that came before its leader's notice of the transfer
       * is answered when the notice comes. */
      else if (m->type == SP_RAFT_MSG_VOTE_RESP && g_hash_table_contains (s->timeouts, &transfer))
        ;
      else
        fail (s,
              "stickiness: n" U64 " granted a %s to n" U64 " for term " U64
              " though it was bound by its promise when asked (last leader heard: n" U64
              " in term " U64 ", or it had just started)",
              from->id, sp_raft_msg_type_to_string (m->type - 1), m->to, m->term,
              from->heard_leader, from->heard_term);
    }
  /* A vote counts once it is out (it was written first), a candidate's for
   * itself included. */
  if (m->type == SP_RAFT_MSG_VOTE_RESP && !m->reject && from)
    check_vote (s, from, m->term, m->to);
  if (m->type == SP_RAFT_MSG_VOTE && from)
    check_vote (s, from, m->term, from->id);
  if (!to || to->state == NODE_GONE)
    lost = "no such node";
  else if (m->from <= MAX_ID && s->cut[m->from][m->to])
    lost = "partition";
  else if (chance (s, s->drop_ppm))
    lost = "dropped";
  if (lost)
    {
      rec_msg (s, REC_LOST, m->from, m, lost, FALSE);
      return;
    }
  push (s, rnd_between (s, 1000, s->max_delay_us), EV_DELIVER, 0, sp_raft_msg_copy (m), FALSE);
  if (chance (s, s->dup_ppm))
    push (s, rnd_between (s, 1000, s->max_delay_us), EV_DELIVER, 0, sp_raft_msg_copy (m), TRUE);
}

/* What the checks need to know of a message before the node takes it. */
static void
before_step (SpSim *s, Node *n, const SpRaftMsg *m)
{
  gboolean pre = m->type == SP_RAFT_MSG_PREVOTE;

  if (sp_raft_role (n->raft) == SP_RAFT_LEADER && m->term == sp_raft_term (n->raft)
      && (m->type == SP_RAFT_MSG_APPEND_RESP || m->type == SP_RAFT_MSG_HEARTBEAT_RESP)
      && m->from <= MAX_ID)
    n->answered_at[m->from] = s->now;
  if ((pre || m->type == SP_RAFT_MSG_VOTE) && m->from <= MAX_ID)
    {
      /* The same vote again may be granted again. */
      gboolean repeat = force_sent (s, m) || handing_over_to (n, m)
                        || (!pre && n->free_ask[m->from] == m->term);

      guint64 key = grant_key (n->id, pre, m->from, m->term);

      if (repeat || !promised (s, n, 0, 0))
        {
          set_grants (s, key, grants_left (s, key) + 1);
          if (!pre)
            n->free_ask[m->from] = m->term;
        }
    }
}

/* What the checks learn from how the node took a message. */
static void
after_step (SpSim *s, Node *n, const SpRaftMsg *m, guint64 old_term, guint64 old_commit)
{
  guint64 term = sp_raft_term (n->raft);
  guint64 commit = sp_raft_commit_index (n->raft);
  SpRaftRole role = sp_raft_role (n->raft);
  const Node *from = node_get (s, m->from);

  /* Pre-vote moves no term: only a granted answer may start the
   * pre-candidate's own campaign. */
  if ((m->type == SP_RAFT_MSG_PREVOTE || m->type == SP_RAFT_MSG_PREVOTE_RESP) && term != old_term
      && !(m->type == SP_RAFT_MSG_PREVOTE_RESP && !m->reject && term == old_term + 1
           && (role == SP_RAFT_CANDIDATE || role == SP_RAFT_LEADER)))
    fail (s, "pre-vote: the %s from n" U64 " moved n" U64 " from term " U64 " to " U64,
          sp_raft_msg_type_to_string (m->type), m->from, n->id, old_term, term);
  /* A follower commits no further than the leader's commit index and the
   * last entry the message vouched for: what follows may be stale. */
  if (commit > old_commit
      && ((m->type == SP_RAFT_MSG_APPEND
           && commit > MIN (m->commit, m->index + (m->entries ? m->entries->len : 0)))
          || (m->type == SP_RAFT_MSG_HEARTBEAT && commit > m->commit)))
    fail (s,
          "follower commit: the %s from n" U64 " (prev " U64 ", %u entries, commit " U64
          ") moved n" U64 "'s commit index from " U64 " to " U64,
          sp_raft_msg_type_to_string (m->type), m->from, m->index, m->entries ? m->entries->len : 0,
          m->commit, n->id, old_commit, commit);
  /* A removed node, running on, cannot disturb a leased cluster. */
  if (from && from->removed && !n->removed && term != old_term && s->leased)
    fail (s,
          "membership: the %s from n" U64 ", whose removal committed, moved n" U64 " from term " U64
          " to " U64 " while a lease was held",
          sp_raft_msg_type_to_string (m->type), m->from, n->id, old_term, term);
  if ((m->type == SP_RAFT_MSG_APPEND || m->type == SP_RAFT_MSG_HEARTBEAT
       || m->type == SP_RAFT_MSG_SNAPSHOT)
      && term == m->term && sp_raft_leader (n->raft) == m->from)
    {
      n->heard_leader = m->from;
      n->heard_term = m->term;
      n->heard_at = s->now;
    }
}

static gboolean
step_received (SpSim *s, Node *n, const Event *ev)
{
  const SpRaftMsg *m = ev->msg;
  guint64 old_term = sp_raft_term (n->raft);
  guint64 old_commit = sp_raft_commit_index (n->raft);
  g_autoptr (GError) error = NULL;

  /* A forged message (a member's or a stranger's identity, no transfer
   * behind it) must not move a node bound by its promise: a forced vote
   * or a TimeoutNow from anyone but its leader. */
  gboolean bound = ev->dup == FORGED && !force_sent (s, m) && !handing_over_to (n, m);

  /* A TimeoutNow in its leader's name, in its term, is that leader's to
   * send: the transport binds every identity to a certificate, so only a
   * leader that breaks its own lease could send it without stepping down
   * (its forger was no leader when it made it up). */
  if (ev->dup == FORGED && m->type == SP_RAFT_MSG_TIMEOUT_NOW && m->from == sp_raft_leader (n->raft)
      && m->term == sp_raft_term (n->raft))
    {
      rec_msg (s, REC_LOST, m->to, m, "forged in its leader's name", FALSE);
      return TRUE;
    }

  /* Made up only against nodes bound by their promise: a member's
   * identity may move the others' terms (as any member's votes may). */
  if (ev->dup == FORGED && !promised (s, n, 0, 0))
    {
      rec_msg (s, REC_LOST, m->to, m, "forged, receiver not bound", FALSE);
      return TRUE;
    }
  rec_msg (s, REC_RECV, m->to, m, NULL, ev->dup);
  before_step (s, n, m);
  /* The core drops, by design, what a non-member sends and a TimeoutNow
   * that its leader no longer vouches for (it arrived late). */
  if (!sp_raft_step (n->raft, m, &error)
      && !g_error_matches (error, SP_RAFT_ERROR, SP_RAFT_ERROR_NOT_MEMBER)
      && !g_error_matches (error, SP_RAFT_ERROR, SP_RAFT_ERROR_REFUSED))
    {
      fail (s, "well-formed messages: n" U64 " rejected a %s from n" U64 ": %s", n->id,
            sp_raft_msg_type_to_string (m->type), m->from, error->message);
      return FALSE;
    }
  if (bound && sp_raft_term (n->raft) != old_term)
    fail (s,
          "forged messages: a %s of term " U64 " made up with n" U64 "'s identity moved n" U64
          " from term " U64 " to " U64 " while it was bound",
          sp_raft_msg_type_to_string (m->type), m->term, m->from, n->id, old_term,
          sp_raft_term (n->raft));
  after_step (s, n, m, old_term, old_commit);
  return TRUE;
}

static int
cmp_event (gconstpointer a, gconstpointer b)
{
  return before (a, b) ? -1 : before (b, a) ? 1 : 0;
}

/* A node reads what has arrived before it acts on it, as sparrowd reads
 * several frames at once: the deliveries to it due within the schedule's
 * batch window are taken out of the queue (they arrive a little early,
 * which any network may do) and stepped with this one, in order, before
 * the node acts once. */
static void
take_deliveries_to (SpSim *s, guint64 id, GArray *out)
{
  Event *h = (Event *)s->heap->data;
  guint n = s->heap->len, kept = 0;

  if (s->batch_us == 0)
    return;
  for (guint i = 0; i < n; i++)
    if (h[i].kind == EV_DELIVER && h[i].msg->to == id && h[i].time <= s->now + s->batch_us)
      g_array_append_val (out, h[i]);
    else
      h[kept++] = h[i];
  if (out->len == 0)
    return;
  g_array_set_size (s->heap, kept);
  /* what is left is a heap again once sorted */
  g_array_sort (s->heap, cmp_event);
  g_array_sort (out, cmp_event);
}

static void
deliver (SpSim *s, const Event *ev)
{
  Node *n = node_get (s, ev->msg->to);
  g_autoptr (GArray) more = g_array_new (FALSE, FALSE, sizeof (Event));
  gboolean ok;

  if (!n || n->state != NODE_UP)
    {
      rec_msg (s, REC_LOST, ev->msg->to, ev->msg, "receiver down", ev->dup);
      return;
    }
  take_deliveries_to (s, n->id, more);
  ok = step_received (s, n, ev);
  for (guint i = 0; i < more->len; i++)
    {
      Event *e = &g_array_index (more, Event, i);

      if (ok && !s->failure)
        ok = step_received (s, n, e);
      sp_raft_msg_free (e->msg);
    }
  if (ok)
    drain (s, n, "recv");
}

/* ---- node lifecycle ----------------------------------------------------- */

static void
node_init (SpSim *s, guint64 id)
{
  Node *n = &s->nodes[id];
  gint64 drift = (gint64)rnd_below (s, 2 * DRIFT_PPM + 1) - DRIFT_PPM;

  *n = (Node){ 0 };
  n->id = id;
  n->state = NODE_DOWN;
  n->period_us = (guint64)(TICK_US + TICK_US * drift / 1000000);
  n->log = sp_raft_entries_new (0);
}

/* Boots a node from what its disk holds (plus bootstrap for a founder). */
static void
node_start (SpSim *s, Node *n, const SpRaftConf *bootstrap)
{
  SpRaftOptions o = {
    .id = n->id,
    .heartbeat_ticks = s->heartbeat_ticks,
    .election_ticks = ELECTION_TICKS,
    .lease_ticks = sp_raft_default_lease_ticks (ELECTION_TICKS),
    .max_inflight = s->max_inflight,
    .max_msg_entries = s->max_msg_entries,
    .seed = combine (combine (s->opts.seed, n->id), n->incarnation + 1),
  };
  SpRaftRestore rs = {
    .hard_state = n->hs,
    .snapshot = n->snap,
    .entries = n->log,
    .bootstrap = bootstrap,
  };
  g_autoptr (GError) error = NULL;
  guint64 index = 0, chain = 0;

  n->incarnation++;
  n->started_at = s->now;
  n->transfer_to = 0;
  n->raft = sp_raft_new (&o, &rs, &error);
  if (!n->raft)
    {
      fail (s, "durability: n" U64 " cannot start from its disk: %s", n->id, error->message);
      return;
    }
  n->state = NODE_UP;
  note (s, n->id,
        "%s (incarnation %u): disk term " U64 " vote n" U64 " commit " U64 ", snapshot " U64
        ", " U64 " entries",
        n->incarnation > 1 ? "restart" : "start", n->incarnation, n->hs.term, n->hs.vote,
        n->hs.commit, disk_snap_index (n), (guint64)n->log->len);

  /* Nothing applied may be lost, and terms only move forward. */
  if (durable_commit (n) < n->applied_at_crash)
    fail (s,
          "durability: n" U64 " applied up to " U64 " before crashing, but its disk commits " U64,
          n->id, n->applied_at_crash, durable_commit (n));
  if (sp_raft_term (n->raft) < n->term)
    fail (s, "sanity: n" U64 " restarted in term " U64 " after term " U64, n->id,
          sp_raft_term (n->raft), n->term);

  if (n->snap && !snap_decode (n->snap, &index, &chain))
    fail (s, "durability: n" U64 " stored a snapshot without its data", n->id);
  else if (n->snap)
    check_snapshot_state (s, n, n->snap, index, chain);
  n->applied = index;
  n->chain = chain;
  n->role = sp_raft_role (n->raft);
  n->term = sp_raft_term (n->raft);
  n->leader = sp_raft_leader (n->raft);
  n->commit = sp_raft_commit_index (n->raft);

  push (s, rnd_between (s, 1, n->period_us), EV_TICK, n->id, NULL, FALSE);
  drain (s, n, "start");
}

static void
node_crash (SpSim *s, Node *n)
{
  guint64 down = chance (s, s->quick_restart_ppm) ? rnd_between (s, 1000, 50000)
                                                  : rnd_between (s, 100000, 2000000);

  g_clear_pointer (&n->writing, sp_raft_ready_free);
  g_clear_pointer (&n->raft, sp_raft_free);
  /* A term not yet written is forgotten: nothing was sent in it. */
  n->term = n->hs.term;
  n->state = NODE_DOWN;
  n->applied_at_crash = n->applied;
  n->applied = n->chain = 0;
  s->stats.crashes++;
  note (s, n->id, "crash, down for %" G_GUINT64_FORMAT " ms", down / 1000);
  push (s, down, EV_RESTART, n->id, NULL, FALSE);
}

static void
node_retire (SpSim *s, Node *n)
{
  g_clear_pointer (&n->writing, sp_raft_ready_free);
  g_clear_pointer (&n->raft, sp_raft_free);
  g_clear_pointer (&n->snap, sp_raft_snapshot_free);
  g_clear_pointer (&n->log, g_array_unref);
  n->state = NODE_GONE;
  n->retire = FALSE;
  note (s, n->id, "shut down for good");
}

/* ---- client and fault actions ------------------------------------------- */

static GBytes *
make_payload (SpSim *s)
{
  guint8 buf[64];
  gsize len = rnd_between (s, 8, sizeof buf);
  guint64 seq = GUINT64_TO_LE (++s->payload_seq);

  memcpy (buf, &seq, sizeof seq);
  for (gsize i = sizeof seq; i < len; i++)
    buf[i] = (guint8)rnd (s);
  return g_bytes_new (buf, len);
}

static void
client_propose (SpSim *s)
{
  /* Mostly through a leader; non-leaders refusing is part of the game. */
  Node *n = chance (s, 850000) ? pick_leader (s) : NULL;
  guint k = rnd_between (s, 1, 4), ok = 0;
  guint64 index = 0;

  if (!n && !(n = pick_up (s)))
    return;
  /* Clients wait for commits: a backlog the cluster cannot ship would
   * only make the heal phase slow, not find bugs. */
  if (sp_raft_role (n->raft) == SP_RAFT_LEADER
      && sp_raft_last_index (n->raft) - sp_raft_commit_index (n->raft) >= MAX_BACKLOG)
    return;
  for (guint i = 0; i < k; i++)
    {
      g_autoptr (GBytes) data = make_payload (s);

      if (sp_raft_propose (n->raft, data, &index, NULL))
        ok++;
    }
  s->stats.proposals += ok;
  s->stats.refused += k - ok;
  if (ok)
    note (s, n->id, "propose %u: %u accepted, up to index " U64, k, ok, index);
  else
    note (s, n->id, "propose %u: refused (%s)", k, sp_raft_role_to_string (sp_raft_role (n->raft)));
  drain (s, n, "propose");
}

/* The pace window's client: keeps the leader's backlog full. */
static void
client_load (SpSim *s)
{
  Node *l = pick_leader (s);

  if (!l)
    return;
  for (guint i = 0;
       i < 4 && sp_raft_last_index (l->raft) - sp_raft_commit_index (l->raft) < MAX_BACKLOG; i++)
    {
      g_autoptr (GBytes) data = make_payload (s);

      if (!sp_raft_propose (l->raft, data, NULL, NULL))
        break;
    }
  drain (s, l, "load");
}

static void
client_membership (SpSim *s, SpRaftConfOp op)
{
  static const char *const names[] = { "add voter", "add learner", "promote", "remove" };
  Node *l = pick_leader (s);
  const SpRaftConf *conf;
  guint64 ids[SP_RAFT_MAX_NODES], target, index = 0;
  guint n_ids = 0;
  g_autoptr (GError) error = NULL;

  if (!l)
    return;
  conf = sp_raft_conf (l->raft);
  switch (op)
    {
      case SP_RAFT_CONF_ADD_LEARNER:
        if (count_existing (s) >= MAX_LIVE || s->next_id > MAX_ID)
          return;
        ids[n_ids++] = s->next_id;
        break;
      case SP_RAFT_CONF_PROMOTE:
        for (guint i = 0; i < conf->n_learners; i++)
          ids[n_ids++] = conf->learners[i];
        break;
      case SP_RAFT_CONF_REMOVE:
        for (guint i = 0; i < conf->n_learners; i++)
          ids[n_ids++] = conf->learners[i];
        for (guint i = 0; i < conf->n_voters && conf->n_voters > MIN_VOTERS; i++)
          if (conf->voters[i] != l->id)
            ids[n_ids++] = conf->voters[i];
        break;
      case SP_RAFT_CONF_ADD_VOTER:
      default:
        return;
    }
  if (n_ids == 0)
    return;
  target = ids[rnd_below (s, n_ids)];
  if (!sp_raft_change_membership (l->raft, op, target, &index, &error))
    {
      s->stats.refused++;
      note (s, l->id, "%s n" U64 " refused: %s", names[op], target, error->message);
      return;
    }
  note (s, l->id, "%s n" U64 " at index " U64, names[op], target, index);
  g_array_append_vals (s->pending, &(PendingChange){ op, target, index, sp_raft_term (l->raft) },
                       1);
  if (op == SP_RAFT_CONF_ADD_LEARNER)
    {
      /* A brand-new node: nothing persisted, no bootstrap. */
      s->next_id++;
      node_init (s, target);
      node_start (s, &s->nodes[target], NULL);
    }
  drain (s, l, "membership");
}

/* A member that is not the leader asks the leader it knows (sparrowd's
 * TransferLeadership on a follower): a voter of its configuration, often
 * itself, no one (the leader picks), or now and then anyone, learners and
 * strangers included, whom the leader must refuse. */
static void
request_transfer (SpSim *s)
{
  Node *up[MAX_ID];
  guint n = 0;
  Node *f;
  const SpRaftConf *conf;
  guint64 to = SP_RAFT_NONE;
  guint pick = (guint)rnd_knob (s, 0, 9);
  g_autoptr (GError) error = NULL;

  for (guint64 id = 1; id < s->next_id; id++)
    if (s->nodes[id].state == NODE_UP && sp_raft_role (s->nodes[id].raft) != SP_RAFT_LEADER)
      up[n++] = &s->nodes[id];
  if (n == 0)
    return;
  f = up[rnd_knob (s, 0, n - 1)];
  conf = sp_raft_conf (f->raft);
  if (pick < 4)
    to = f->id;
  else if (pick < 8 && conf->n_voters > 0)
    to = conf->voters[rnd_knob (s, 0, conf->n_voters - 1)];
  else if (pick == 8)
    to = rnd_knob (s, 1, s->next_id);
  s->stats.requests++;
  if (sp_raft_request_transfer (f->raft, to, &error))
    note (s, f->id, "ask n" U64 " to transfer leadership to n" U64, sp_raft_leader (f->raft), to);
  else
    note (s, f->id, "transfer request to n" U64 " not sent: %s", to, error->message);
  drain (s, f, "transfer request");
}

/* Messages no node sent: forced (pre-)votes and a TimeoutNow with the
 * identity of a member (any state) or a stranger, as a hostile peer with a
 * valid certificate would send them. */
static void
forge (SpSim *s)
{
  static const SpRaftMsgType types[]
      = { SP_RAFT_MSG_PREVOTE, SP_RAFT_MSG_VOTE, SP_RAFT_MSG_TIMEOUT_NOW };
  Node *to = pick_up (s);
  guint64 from, term, last;

  if (!to)
    return;
  from = chance (s, 250000) ? MAX_ID + 1 + rnd_below (s, 100) : 1 + rnd_below (s, s->next_id - 1);
  term = sp_raft_term (to->raft);
  last = sp_raft_last_index (to->raft);
  if (from == to->id || from == sp_raft_leader (to->raft))
    return;
  note (s, to->id, "forged messages from n" U64, from);
  for (guint i = 0; i < G_N_ELEMENTS (types); i++)
    {
      SpRaftMsg *m = g_new0 (SpRaftMsg, 1);

      m->type = types[i];
      m->from = from;
      m->to = to->id;
      m->term = types[i] == SP_RAFT_MSG_TIMEOUT_NOW ? term : term + 1;
      m->force = types[i] != SP_RAFT_MSG_TIMEOUT_NOW;
      m->index = last;
      m->log_term = sp_raft_term_at (to->raft, last);
      push (s, rnd_between (s, 1000, s->max_delay_us), EV_DELIVER, 0, m, FORGED);
    }
}

static void
client_transfer (SpSim *s)
{
  Node *l;
  const SpRaftConf *conf;
  guint64 to = SP_RAFT_NONE;
  g_autoptr (GError) error = NULL;

  /* Plain schedules replay as recorded: they never ask a follower. */
  if (!s->opts.plain && rnd_knob (s, 0, 1) == 0)
    {
      request_transfer (s);
      return;
    }
  l = pick_leader (s);
  if (!l)
    return;
  conf = sp_raft_conf (l->raft);
  if (chance (s, 750000) && conf->n_voters > 0)
    to = conf->voters[rnd_below (s, conf->n_voters)];
  if (sp_raft_transfer_leadership (l->raft, to, &error))
    {
      s->stats.transfers++;
      l->transfer_to = 0;
      note (s, l->id, "transfer leadership to n" U64, to);
    }
  else
    {
      s->stats.refused++;
      note (s, l->id, "transfer to n" U64 " refused: %s", to, error->message);
    }
  drain (s, l, "transfer");
}

static void
compact (SpSim *s, Node *n)
{
  guint64 base, index;
  g_autoptr (GBytes) data = NULL;
  g_autoptr (GError) error = NULL;

  /* sparrowd compacts between writes, not during one. */
  if (!n || n->writing)
    return;
  base = sp_raft_first_index (n->raft) - 1;
  if (n->applied <= base)
    return;
  index = chance (s, 700000) ? n->applied : rnd_between (s, base + 1, n->applied);
  data = snap_encode (index, g_array_index (s->committed, Committed, index).chain);
  if (!sp_raft_compact (n->raft, index, data, &error))
    {
      fail (s, "sanity: n" U64 " cannot compact at " U64 " (applied " U64 "): %s", n->id, index,
            n->applied, error->message);
      return;
    }
  /* The application stores its own snapshot; entries it covers go. */
  g_array_remove_range (n->log, 0, (guint)MIN (index - disk_snap_index (n), n->log->len));
  sp_raft_snapshot_free (n->snap);
  n->snap = sp_raft_snapshot_copy (sp_raft_snapshot (n->raft));
  s->stats.compactions++;
  note (s, n->id, "compact at " U64, index);
  drain (s, n, "compact");
}

static void
partition (SpSim *s)
{
  guint64 ids[MAX_ID];
  gboolean side[MAX_ID + 1] = { FALSE };
  guint n = 0, n_a = 0;
  g_autoptr (GString) a = g_string_new (NULL);
  g_autoptr (GString) b = g_string_new (NULL);

  for (guint64 id = 1; id < s->next_id; id++)
    if (s->nodes[id].state == NODE_UP || s->nodes[id].state == NODE_DOWN)
      ids[n++] = id;
  if (n < 2)
    return;
  for (guint i = 0; i < n; i++)
    if ((side[ids[i]] = rnd_below (s, 2) == 1))
      n_a++;
  if (n_a == 0 || n_a == n)
    side[ids[rnd_below (s, n)]] = n_a == 0;
  for (guint i = 0; i < n; i++)
    {
      g_string_append_printf (side[ids[i]] ? a : b, " n" U64, ids[i]);
      for (guint j = 0; j < n; j++)
        if (side[ids[i]] != side[ids[j]])
          s->cut[ids[i]][ids[j]] = TRUE;
    }
  note (s, 0, "partition {%s } | {%s }", a->str, b->str);
  push (s, rnd_between (s, 100000, 2000000), EV_UNCUT, 0, NULL, FALSE);
}

static void
cut_one_way (SpSim *s)
{
  /* From a leader, often: a follower that stops hearing it campaigns while
   * the others still ack the leader's lease. */
  Node *a = chance (s, 500000) ? pick_leader (s) : NULL, *b = pick_up (s);

  if (!a)
    a = pick_up (s);

  if (!a || !b || a == b)
    return;
  s->cut[a->id][b->id] = TRUE;
  note (s, 0, "cut n" U64 " -> n" U64, a->id, b->id);
  push (s, rnd_between (s, 100000, 2000000), EV_UNCUT, 0, NULL, FALSE);
}

/* Cuts the leader off: both ways, or only what it sends or receives. */
static void
isolate_leader (SpSim *s)
{
  static const char *const modes[] = { "both ways", "outgoing", "incoming" };
  Node *l = pick_leader (s);
  guint mode = (guint)rnd_below (s, 3);

  if (!l)
    return;
  for (guint64 id = 1; id < s->next_id; id++)
    {
      if (id == l->id)
        continue;
      if (mode != 2)
        s->cut[l->id][id] = TRUE;
      if (mode != 1)
        s->cut[id][l->id] = TRUE;
    }
  note (s, 0, "isolate leader n" U64 " (%s)", l->id, modes[mode]);
  push (s, rnd_between (s, 100000, 2000000), EV_UNCUT, 0, NULL, FALSE);
}

static void
uncut (SpSim *s)
{
  memset (s->cut, 0, sizeof s->cut);
  note (s, 0, "network healed");
}

static void
crash_one (SpSim *s)
{
  /* Leaders are the interesting victims. */
  Node *n = chance (s, 400000) ? pick_leader (s) : NULL;

  if (n || (n = pick_up (s)))
    node_crash (s, n);
}

static void
chaos (SpSim *s)
{
  if (s->healing)
    {
      /* Keep compacting, leaders above all: restarted nodes must be
       * caught up by snapshot. */
      if (chance (s, 100000))
        {
          Node *n = chance (s, 500000) ? pick_leader (s) : NULL;

          compact (s, n ? n : pick_up (s));
        }
    }
  else if (s->weight_sum > 0)
    {
      guint roll = (guint)rnd_below (s, s->weight_sum);
      Action a = 0;

      while (roll >= s->weight[a])
        roll -= s->weight[a++];
      switch (a)
        {
          case ACT_PROPOSE:
            client_propose (s);
            break;
          case ACT_COMPACT:
            compact (s, pick_up (s));
            break;
          case ACT_CRASH:
            crash_one (s);
            break;
          case ACT_PARTITION:
            partition (s);
            break;
          case ACT_ISOLATE:
            isolate_leader (s);
            break;
          case ACT_CUT:
            cut_one_way (s);
            break;
          case ACT_UNCUT:
            uncut (s);
            break;
          case ACT_ADD:
            client_membership (s, SP_RAFT_CONF_ADD_LEARNER);
            break;
          case ACT_PROMOTE:
            client_membership (s, SP_RAFT_CONF_PROMOTE);
            break;
          case ACT_REMOVE:
            client_membership (s, SP_RAFT_CONF_REMOVE);
            break;
          case ACT_TRANSFER:
            client_transfer (s);
            break;
          case ACT_FORGE:
            forge (s);
            break;
          case N_ACTIONS:
          default:
            g_assert_not_reached ();
        }
    }
  push (s, rnd_between (s, 1, 2 * s->chaos_gap_us), EV_CHAOS, 0, NULL, FALSE);
}

static void
heal (SpSim *s)
{
  s->healing = TRUE;
  s->heal_at = s->now;
  s->drop_ppm = s->dup_ppm = 0;
  memset (s->cut, 0, sizeof s->cut);
  note (s, 0, "heal: no more loss, partitions or crashes; every node restarts");
  for (guint64 id = 1; id < s->next_id && !s->failure; id++)
    if (s->nodes[id].state == NODE_DOWN)
      node_start (s, &s->nodes[id], NULL);
}

/* ---- liveness ----------------------------------------------------------- */

static gboolean
all_applied (SpSim *s, guint64 index)
{
  const SpRaftConf *c = &s->committed_conf;

  for (guint i = 0; i < c->n_voters + c->n_learners; i++)
    {
      guint64 id = i < c->n_voters ? c->voters[i] : c->learners[i - c->n_voters];
      Node *n = node_get (s, id);

      if (!n || n->state != NODE_UP || n->applied < index)
        return FALSE;
    }
  return TRUE;
}

static void
fail_liveness (SpSim *s)
{
  g_autoptr (GString) d = g_string_new (NULL);

  for (guint64 id = 1; id < s->next_id; id++)
    {
      const Node *n = &s->nodes[id];

      if (n->state == NODE_UP)
        g_string_append_printf (d,
                                "; n" U64 " %s term " U64 " leader n" U64 " last " U64
                                " commit " U64 " applied " U64 "%s",
                                id, sp_raft_role_to_string (sp_raft_role (n->raft)),
                                sp_raft_term (n->raft), sp_raft_leader (n->raft),
                                sp_raft_last_index (n->raft), sp_raft_commit_index (n->raft),
                                n->applied, sp_raft_lease_valid (n->raft) ? " (lease)" : "");
    }
  fail (s,
        "liveness: %.1f s after the heal no write made through a leased leader was applied by "
        "every member (probe index " U64 " term " U64 ")%s",
        HEAL_BOUND_US / 1e6, s->marker_index, s->marker_term, d->str);
}

/* Commits resume at full pace after the heal: a fault-free run of the same
 * schedule (same cluster, network, disk and client) is the yardstick. */
static void
check_pace (SpSim *s)
{
  SpSimOptions o = { .seed = s->opts.seed, .n_nodes = s->opts.n_nodes, .plain = s->opts.plain };
  g_autoptr (SpSim) ref = NULL;

  s->pace_commits = s->stats.committed - s->pace_base;
  note (s, 0, "pace: " U64 " writes committed in %u ms", s->pace_commits, PACE_US / 1000);
  if (s->fault_free)
    return;
  ref = sp_sim_new (&o);
  ref->fault_free = TRUE;
  if (!sp_sim_run (ref))
    fail (s, "pace: the fault-free run of this schedule failed: %s", ref->failure);
  else if (s->pace_commits * PACE_RATIO < ref->pace_commits)
    fail (s,
          "pace: after the heal the cluster committed " U64 " writes in %u ms, a fault-free run "
          "of this schedule " U64,
          s->pace_commits, PACE_US / 1000, ref->pace_commits);
}

static void
check_liveness (SpSim *s)
{
  if (s->pace_from)
    {
      if (s->now >= s->pace_from + PACE_US)
        {
          check_pace (s);
          s->done = TRUE;
        }
      return;
    }
  if (s->marker_index && s->marker_index < s->committed->len)
    {
      if (g_array_index (s->committed, Committed, s->marker_index).term != s->marker_term)
        {
          note (s, 0, "liveness probe at " U64 " lost", s->marker_index);
          s->marker_index = 0;
        }
      else if (all_applied (s, s->marker_index))
        {
          s->stats.heal_us = s->now - s->heal_at;
          note (s, 0, "liveness: probe at " U64 " applied by every member", s->marker_index);
          s->done = !s->pace;
          s->pace_from = s->now;
          s->pace_base = s->stats.committed;
          push (s, 0, EV_LOAD, 0, NULL, FALSE);
          return;
        }
    }
  else if (s->marker_index)
    {
      Node *l = node_get (s, s->marker_leader);

      /* Its leader is gone: try again through the next one. */
      if (!l || l->state != NODE_UP || sp_raft_role (l->raft) != SP_RAFT_LEADER
          || sp_raft_term (l->raft) != s->marker_term)
        s->marker_index = 0;
    }

  if (!s->marker_index)
    {
      for (guint64 id = 1; id < s->next_id; id++)
        {
          Node *n = &s->nodes[id];
          g_autoptr (GBytes) data = NULL;

          if (n->state != NODE_UP || !sp_raft_lease_valid (n->raft))
            continue;
          data = make_payload (s);
          if (sp_raft_propose (n->raft, data, &s->marker_index, NULL))
            {
              s->marker_term = sp_raft_term (n->raft);
              s->marker_leader = id;
              note (s, id, "liveness probe proposed at " U64, s->marker_index);
              drain (s, n, "probe");
            }
          break;
        }
    }
  if (!s->failure && s->now - s->heal_at > HEAL_BOUND_US)
    fail_liveness (s);
}

/* ---- a crash names its schedule ----------------------------------------- */

/* A core that crashes (a planted bug, an assertion) must still name the
 * schedule that made it: the handler says so, puts back the handlers it
 * found and returns, so the fault recurs and they report it as usual. */
static const int crash_signals[] = { SIGSEGV, SIGBUS, SIGFPE, SIGABRT };
static struct sigaction crash_prev[G_N_ELEMENTS (crash_signals)];
static char crash_note[160];
static gsize crash_note_len;

static void
on_crash (int sig)
{
  if (write (STDERR_FILENO, crash_note, crash_note_len) < 0)
    crash_note_len = 0;
  for (guint i = 0; i < G_N_ELEMENTS (crash_signals); i++)
    sigaction (crash_signals[i], &crash_prev[i], NULL);
}

static void
name_crashes (const SpSimOptions *o)
{
  static gboolean installed;
  struct sigaction sa = { .sa_handler = on_crash };

  crash_note_len
      = (gsize)g_snprintf (crash_note, sizeof crash_note,
                           "seed %" G_GUINT64_FORMAT ", %u nodes: crashed; replay: "
                           "sparrow-sim --seed %" G_GUINT64_FORMAT " --nodes %u%s\n",
                           o->seed, o->n_nodes, o->seed, o->n_nodes, o->plain ? " --plain" : "");
  crash_note_len = MIN (crash_note_len, sizeof crash_note - 1);
  if (installed)
    return;
  installed = TRUE;
  for (guint i = 0; i < G_N_ELEMENTS (crash_signals); i++)
    sigaction (crash_signals[i], &sa, &crash_prev[i]);
}

/* ---- the loop ----------------------------------------------------------- */

/* sparrowd sleeps until sp_raft_ticks_until_due says a tick may act: a
 * tick before that must change nothing a driver would see. */
static void
tick (SpSim *s, Node *n)
{
  guint due = sp_raft_ticks_until_due (n->raft);
  SpRaftRole role = sp_raft_role (n->raft);
  guint64 leader = sp_raft_leader (n->raft);
  guint64 transfer = sp_raft_transfer_target (n->raft);
  gboolean lease = sp_raft_lease_valid (n->raft);

  if (due == 0)
    fail (s, "tick schedule: n" U64 " says a tick is due in 0 ticks", n->id);
  sp_raft_tick (n->raft);
  if (due > 1
      && (sp_raft_has_ready (n->raft) || sp_raft_role (n->raft) != role
          || sp_raft_leader (n->raft) != leader || sp_raft_transfer_target (n->raft) != transfer
          || sp_raft_lease_valid (n->raft) != lease))
    fail (s,
          "tick schedule: n" U64
          " acted on a tick %u ticks before the one it announced (ready %d role %d/%d lease %d/%d)",
          n->id, due - 1, sp_raft_has_ready (n->raft), role, sp_raft_role (n->raft), lease,
          sp_raft_lease_valid (n->raft));
}

static void
handle (SpSim *s, const Event *ev)
{
  Node *n = ev->node ? &s->nodes[ev->node] : NULL;

  switch (ev->kind)
    {
      case EV_TICK:
        if (n->state != NODE_UP || n->incarnation != ev->incarnation)
          break;
        tick (s, n);
        drain (s, n, "tick");
        push (s, n->period_us, EV_TICK, n->id, NULL, FALSE);
        break;
      case EV_DELIVER:
        deliver (s, ev);
        break;
      case EV_CHAOS:
        chaos (s);
        break;
      case EV_RESTART:
        if (n->state == NODE_DOWN && n->incarnation == ev->incarnation)
          node_start (s, n, NULL);
        break;
      case EV_UNCUT:
        if (!s->healing)
          uncut (s);
        break;
      case EV_HEAL:
        heal (s);
        break;
      case EV_WRITTEN:
        if (n->state == NODE_UP && n->incarnation == ev->incarnation && n->writing)
          {
            g_autoptr (SpRaftReady) rd = g_steal_pointer (&n->writing);

            finish_write (s, n, rd, n->writing_prev_term);
            drain (s, n, "written");
          }
        break;
      case EV_RETIRE:
        if (n->state == NODE_UP || n->state == NODE_DOWN)
          n->retire = TRUE;
        break;
      case EV_LOAD:
        client_load (s);
        push (s, PACE_GAP, EV_LOAD, 0, NULL, FALSE);
        break;
    }
}

SpSim *
sp_sim_new (const SpSimOptions *opts)
{
  SpSim *s = g_new0 (SpSim, 1);

  s->opts = *opts;
  s->rng = mix64 (opts->seed ^ 0x73706172726f77ULL);
  s->knob_rng = mix64 (opts->seed ^ 0x6b6e6f6273ULL);
  s->heap = g_array_new (FALSE, FALSE, sizeof (Event));
  s->leaders = g_array_new (FALSE, TRUE, sizeof (guint64));
  s->committed = g_array_new (FALSE, TRUE, sizeof (Committed));
  g_array_set_size (s->committed, 1);
  s->sightings = g_array_new (FALSE, TRUE, sizeof (Sighting));
  g_array_set_size (s->sightings, 1);
  s->sight_head = g_array_new (FALSE, TRUE, sizeof (guint));
  s->pending = g_array_new (FALSE, FALSE, sizeof (PendingChange));
  s->grants = g_hash_table_new_full (g_int64_hash, g_int64_equal, g_free, NULL);
  s->timeouts = g_hash_table_new_full (g_int64_hash, g_int64_equal, g_free, NULL);
  return s;
}

void
sp_sim_free (SpSim *s)
{
  if (!s)
    return;
  for (guint i = 0; i < s->heap->len; i++)
    sp_raft_msg_free (g_array_index (s->heap, Event, i).msg);
  for (guint64 id = 1; id <= MAX_ID; id++)
    {
      Node *n = &s->nodes[id];

      sp_raft_ready_free (n->writing);
      sp_raft_free (n->raft);
      sp_raft_snapshot_free (n->snap);
      if (n->log)
        g_array_unref (n->log);
    }
  g_array_unref (s->heap);
  g_array_unref (s->leaders);
  g_array_unref (s->committed);
  g_array_unref (s->sightings);
  g_array_unref (s->sight_head);
  g_array_unref (s->pending);
  g_hash_table_unref (s->grants);
  g_hash_table_unref (s->timeouts);
  g_free (s->failure);
  g_free (s);
}

gboolean
sp_sim_run (SpSim *s)
{
  SpRaftConf conf = { 0 };
  g_autoptr (GString) mix = g_string_new (NULL);
  guint64 chaos_us;

  g_return_val_if_fail (s->opts.n_nodes >= 1 && s->opts.n_nodes <= MAX_LIVE, FALSE);

  if (!s->fault_free)
    name_crashes (&s->opts);
  s->drop_ppm = (guint)rnd_below (s, 200001);
  s->dup_ppm = (guint)rnd_below (s, 30001);
  /* A fast network is where an overlong lease shows; small appends make
   * leaders commit entries of older terms one by one. */
  s->max_delay_us = (guint64[]){ 2000, 5000, 10000, 30000, 30000 }[rnd_below (s, 5)];
  s->max_inflight = (guint)rnd_between (s, 1, 4);
  s->max_msg_entries = (guint)rnd_between (s, 1, 8);
  /* A node back at once must not help anyone take over a leased leader. */
  s->quick_restart_ppm = (guint[]){ 100000, 300000, 900000 }[rnd_below (s, 3)];
  chaos_us = rnd_between (s, 3000000, 8000000);
  s->chaos_gap_us = (guint64[]){ 5000, 20000, 60000 }[rnd_below (s, 3)];
  for (guint a = 0; a < ACT_FORGE; a++)
    {
      /* off, normal, twice or three times as often */
      s->weight[a] = base_weight[a] * (guint)rnd_below (s, 4);
      s->weight_sum += s->weight[a];
      g_string_append_printf (mix, " %u", s->weight[a]);
    }
  if (!s->opts.plain)
    {
      s->weight[ACT_FORGE] = base_weight[ACT_FORGE] * (guint)rnd_knob (s, 0, 3);
      s->weight_sum += s->weight[ACT_FORGE];
      g_string_append_printf (mix, " %u", s->weight[ACT_FORGE]);
    }
  /* sparrowd ticks in milliseconds: heartbeats are many ticks apart. */
  s->heartbeat_ticks = (guint)rnd_between (s, 1, 4);
  s->batch_us = (guint64[]){ 0, 0, 2000, 10000 }[rnd_below (s, 4)];
  if (!s->opts.plain)
    {
      s->disk_us = (guint64[]){ 0, 0, 2000, 10000 }[rnd_knob (s, 0, 3)];
      s->linger = (guint)rnd_knob (s, 0, 2);
      s->pace = rnd_knob (s, 1, PACE_ONE_IN) == 1;
    }
  if (s->fault_free)
    {
      s->drop_ppm = s->dup_ppm = 0;
      s->weight_sum = 0;
      chaos_us = 1000;
    }
  note (s, 0, "seed " U64 ": %u nodes, %.1f %% loss, %.1f %% duplication, %.1f s of chaos",
        s->opts.seed, s->opts.n_nodes, s->drop_ppm / 1e4, s->dup_ppm / 1e4, chaos_us / 1e6);
  note (s, 0, "delays 1-" U64 " ms, %u appends in flight of up to %u entries, %u %% quick restarts",
        s->max_delay_us / 1000, s->max_inflight, s->max_msg_entries, s->quick_restart_ppm / 10000);
  note (s, 0, "an action every %" G_GUINT64_FORMAT " ms on average, weights%s",
        s->chaos_gap_us / 1000, mix->str);
  note (s, 0, "heartbeat every %u ticks, election timeout %u ticks, batches of %u ms",
        s->heartbeat_ticks, ELECTION_TICKS, (guint)(s->batch_us / 1000));
  note (s, 0, "writes take up to %u ms; removed nodes shut down %s; pace after the heal %s",
        (guint)(s->disk_us / 1000),
        (const char *[]){ "at once", "a while later", "never" }[s->linger],
        s->pace ? "measured" : "not measured");

  for (guint i = 1; i <= s->opts.n_nodes; i++)
    conf.voters[conf.n_voters++] = i;
  s->committed_conf = conf;
  s->next_id = s->opts.n_nodes + 1;
  for (guint64 id = 1; id < s->next_id; id++)
    node_init (s, id);
  for (guint64 id = 1; id < s->next_id && !s->failure; id++)
    node_start (s, &s->nodes[id], &conf);
  push (s, rnd_between (s, 1000, 50000), EV_CHAOS, 0, NULL, FALSE);
  push (s, chaos_us, EV_HEAL, 0, NULL, FALSE);

  while (!s->failure && !s->done)
    {
      Event ev;

      if (!pop (s, &ev))
        {
          fail (s, "sanity: nothing left to simulate");
          break;
        }
      if (s->leased)
        s->stats.leased_us += ev.time - s->now;
      s->now = ev.time;
      s->stats.events++;
      handle (s, &ev);
      sp_raft_msg_free (ev.msg);
      for (guint64 id = 1; id < s->next_id; id++)
        if (s->nodes[id].retire)
          node_retire (s, &s->nodes[id]);
      if (!s->failure)
        check_leases (s);
      if (!s->failure && s->healing)
        check_liveness (s);
    }
  s->stats.sim_us = s->now;
  return s->failure == NULL;
}

const SpSimStats *
sp_sim_get_stats (const SpSim *s)
{
  return &s->stats;
}

const char *
sp_sim_get_failure (const SpSim *s)
{
  return s->failure;
}

char *
sp_sim_get_trace (const SpSim *s, guint max_lines)
{
  GString *out = g_string_new (NULL);
  guint64 n = MIN (MIN (s->n_recs, (guint64)TRACE_RING), (guint64)max_lines);

  for (guint64 i = s->n_recs - n; i < s->n_recs; i++)
    {
      format_rec (&s->ring[i % TRACE_RING], out);
      g_string_append_c (out, '\n');
    }
  return g_string_free (out, FALSE);
}

void
sp_sim_stats_add (SpSimStats *sum, const SpSimStats *s)
{
  sum->events += s->events;
  sum->sim_us += s->sim_us;
  sum->elections += s->elections;
  sum->proposals += s->proposals;
  sum->refused += s->refused;
  sum->committed += s->committed;
  sum->snapshots += s->snapshots;
  sum->compactions += s->compactions;
  sum->conf_changes += s->conf_changes;
  sum->transfers += s->transfers;
  sum->forwarded += s->forwarded;
  sum->requests += s->requests;
  sum->crashes += s->crashes;
  sum->leased_us += s->leased_us;
  sum->heal_us = MAX (sum->heal_us, s->heal_us);
}
