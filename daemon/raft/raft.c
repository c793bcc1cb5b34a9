/* The Raft core.  See raft.h for the contract; the structure follows etcd's
 * raft package (step functions per role, progress tracking, ready batches). */
#include "raft.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "progress.h"

typedef enum
{
  STATE_FOLLOWER,
  STATE_PRE_CANDIDATE,
  STATE_CANDIDATE,
  STATE_LEADER,
} State;

struct _SpRaft
{
  SpRaftOptions opts;
  guint64 id;
  guint64 rng;

  /* persistent */
  guint64 term;
  guint64 vote;
  SpLog log;

  /* volatile */
  State state;
  guint64 lead;
  SpRaftConf conf;
  guint64 conf_index; /* index and term of the entry conf came from; 0 = snapshot */
  guint64 conf_term;

  guint64 now; /* local ticks since start, >= 1: heartbeat stamps */
  guint election_elapsed;
  guint heartbeat_elapsed;
  guint randomized_timeout;
  guint since_leader; /* ticks since a leader was heard (or since start) */

  /* candidate, then leader: the latest moment (in now) any voter of the
   * election may have heard another leader, and whether a transfer forced
   * the election */
  guint64 heard_at;
  gboolean forced;

  /* The latest leadership transfer this node knows its leader (or itself,
   * leading) started: TimeoutNow went to notice_to in notice_term.  Only
   * that candidate's forced campaign, in the next term, may override the
   * promise of stickiness. */
  guint64 notice_to;
  guint64 notice_term;
  /* A forced Vote that came before its notice (it travels two hops, the
   * notice one, on other connections): answered when the notice comes,
   * dropped when the lease ends or another replaces it. */
  SpRaftMsg pending_vote;
  gboolean has_pending_vote;
  /* The leader a member named, answering this node's pre-vote or vote,
   * while this node heard none: the one stranger it may follow (see
   * check_member).  Cleared when it hears a leader. */
  guint64 vouched;

  /* (pre-)candidate */
  guint64 votes_from[SP_RAFT_MAX_NODES];
  gboolean votes_granted[SP_RAFT_MAX_NODES];
  guint n_votes;

  /* leader */
  SpProgress prs[SP_RAFT_MAX_NODES];
  guint n_prs;
  guint64 pending_conf_index;
  guint64 transferee;
  guint transfer_elapsed;
  gboolean need_bcast;

  /* output */
  GPtrArray *msgs;
  GArray *transfer_requests; /* of SpRaftTransferRequest, for the next ready */
  gboolean ready_outstanding;
  SpRaftHardState prev_hs;
  SpRaftRole prev_role;
  guint64 prev_lead;
};

GQuark
sp_raft_error_quark (void)
{
  return g_quark_from_static_string ("sp-raft-error-quark");
}

/* ---- value types -------------------------------------------------------- */

static const char *const role_names[] = {
  [SP_RAFT_FOLLOWER] = "follower",   [SP_RAFT_PRE_CANDIDATE] = "pre-candidate",
  [SP_RAFT_CANDIDATE] = "candidate", [SP_RAFT_LEADER] = "leader",
  [SP_RAFT_LEARNER] = "learner",
};

const char *
sp_raft_role_to_string (SpRaftRole role)
{
  return role <= SP_RAFT_LEARNER ? role_names[role] : "invalid";
}

static const char *const msg_names[] = {
  [SP_RAFT_MSG_PREVOTE] = "PreVote",
  [SP_RAFT_MSG_PREVOTE_RESP] = "PreVoteResp",
  [SP_RAFT_MSG_VOTE] = "Vote",
  [SP_RAFT_MSG_VOTE_RESP] = "VoteResp",
  [SP_RAFT_MSG_APPEND] = "Append",
  [SP_RAFT_MSG_APPEND_RESP] = "AppendResp",
  [SP_RAFT_MSG_HEARTBEAT] = "Heartbeat",
  [SP_RAFT_MSG_HEARTBEAT_RESP] = "HeartbeatResp",
  [SP_RAFT_MSG_SNAPSHOT] = "Snapshot",
  [SP_RAFT_MSG_TIMEOUT_NOW] = "TimeoutNow",
  [SP_RAFT_MSG_TRANSFER_REQUEST] = "TransferRequest",
};

const char *
sp_raft_msg_type_to_string (SpRaftMsgType type)
{
  return type < SP_RAFT_MSG_N_TYPES ? msg_names[type] : "invalid";
}

static gboolean
id_in (const guint64 *ids, guint n, guint64 id)
{
  for (guint i = 0; i < n; i++)
    if (ids[i] == id)
      return TRUE;
  return FALSE;
}

gboolean
sp_raft_conf_is_voter (const SpRaftConf *conf, guint64 id)
{
  return id_in (conf->voters, conf->n_voters, id);
}

gboolean
sp_raft_conf_is_learner (const SpRaftConf *conf, guint64 id)
{
  return id_in (conf->learners, conf->n_learners, id);
}

gboolean
sp_raft_conf_equal (const SpRaftConf *a, const SpRaftConf *b)
{
  if (a->n_voters != b->n_voters || a->n_learners != b->n_learners)
    return FALSE;
  for (guint i = 0; i < a->n_voters; i++)
    if (!sp_raft_conf_is_voter (b, a->voters[i]))
      return FALSE;
  for (guint i = 0; i < a->n_learners; i++)
    if (!sp_raft_conf_is_learner (b, a->learners[i]))
      return FALSE;
  return TRUE;
}

static gboolean
remove_id (guint64 *ids, guint *n, guint64 id)
{
  for (guint i = 0; i < *n; i++)
    if (ids[i] == id)
      {
        ids[i] = ids[--*n];
        return TRUE;
      }
  return FALSE;
}

void
sp_raft_entry_copy (SpRaftEntry *dst, const SpRaftEntry *src)
{
  *dst = *src;
  if (dst->data)
    g_bytes_ref (dst->data);
  if (dst->conf)
    g_rc_box_acquire (dst->conf);
}

void
sp_raft_entry_clear (SpRaftEntry *e)
{
  g_clear_pointer (&e->data, g_bytes_unref);
  if (e->conf)
    g_rc_box_release (g_steal_pointer (&e->conf));
}

GArray *
sp_raft_entries_new (guint reserve)
{
  GArray *a = g_array_sized_new (FALSE, FALSE, sizeof (SpRaftEntry), reserve);

  g_array_set_clear_func (a, (GDestroyNotify)sp_raft_entry_clear);
  return a;
}

static GArray *
entries_dup (const GArray *src)
{
  GArray *a = sp_raft_entries_new (src->len);

  for (guint i = 0; i < src->len; i++)
    {
      SpRaftEntry e;

      sp_raft_entry_copy (&e, &g_array_index (src, SpRaftEntry, i));
      g_array_append_val (a, e);
    }
  return a;
}

SpRaftSnapshot *
sp_raft_snapshot_copy (const SpRaftSnapshot *s)
{
  SpRaftSnapshot *c = g_new (SpRaftSnapshot, 1);

  *c = *s;
  if (c->data)
    g_bytes_ref (c->data);
  return c;
}

void
sp_raft_snapshot_free (SpRaftSnapshot *s)
{
  if (!s)
    return;
  g_clear_pointer (&s->data, g_bytes_unref);
  g_free (s);
}

SpRaftMsg *
sp_raft_msg_copy (const SpRaftMsg *m)
{
  SpRaftMsg *c = g_new (SpRaftMsg, 1);

  *c = *m;
  c->entries = m->entries ? entries_dup (m->entries) : NULL;
  c->snapshot = m->snapshot ? sp_raft_snapshot_copy (m->snapshot) : NULL;
  return c;
}

void
sp_raft_msg_free (SpRaftMsg *m)
{
  if (!m)
    return;
  g_clear_pointer (&m->entries, g_array_unref);
  g_clear_pointer (&m->snapshot, sp_raft_snapshot_free);
  g_free (m);
}

guint
sp_raft_default_lease_ticks (guint election_ticks)
{
  /* A voter refuses other candidates for E of its ticks after hearing a
   * heartbeat; the first of them may come at once (phase), so it promises
   * (E - 1) ticks.  Scale by (1 - 5 %) / (1 + 5 %) for drift both ways. */
  return election_ticks > 1 ? (election_ticks - 1) * 19 / 21 : 0;
}

/* ---- helpers ------------------------------------------------------------ */

static guint64
rng_next (SpRaft *r)
{
  /* splitmix64: tiny, seedable, good enough for election jitter */
  guint64 z = (r->rng += 0x9e3779b97f4a7c15ULL);

  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static void
reset_randomized_timeout (SpRaft *r)
{
  guint e = r->opts.election_ticks;

  r->randomized_timeout = e + (guint)(rng_next (r) % e);
}

static guint
quorum (const SpRaft *r)
{
  return r->conf.n_voters / 2 + 1;
}

static gboolean
is_voter (const SpRaft *r)
{
  return sp_raft_conf_is_voter (&r->conf, r->id);
}

static SpProgress *
progress (SpRaft *r, guint64 id)
{
  for (guint i = 0; i < r->n_prs; i++)
    if (r->prs[i].id == id)
      return &r->prs[i];
  return NULL;
}

static void
clear_progress (SpRaft *r)
{
  for (guint i = 0; i < r->n_prs; i++)
    sp_progress_clear (&r->prs[i]);
  r->n_prs = 0;
}

static SpRaftMsg *
new_msg (SpRaft *r, SpRaftMsgType type, guint64 to)
{
  SpRaftMsg *m = g_new0 (SpRaftMsg, 1);

  m->type = type;
  m->from = r->id;
  m->to = to;
  m->term = r->term;
  return m;
}

static void
send (SpRaft *r, SpRaftMsg *m)
{
  g_ptr_array_add (r->msgs, m);
}

static SpRaftMsg *
reply (SpRaft *r, const SpRaftMsg *to, SpRaftMsgType type)
{
  SpRaftMsg *m = new_msg (r, type, to->from);

  m->context = to->context;
  send (r, m);
  return m;
}

/* The configuration in force: the newest CONF entry in the log, else the
 * snapshot's (thesis §4.1: servers use the latest configuration they have,
 * committed or not). */
static void
recompute_conf (const SpRaft *r, SpRaftConf *out, guint64 *index, guint64 *term, guint64 upto)
{
  const SpLog *log = &r->log;

  for (guint64 i = MIN (upto, sp_log_last_index (log)); i > log->snapshot->index; i--)
    {
      const SpRaftEntry *e = sp_log_entry (log, i);

      if (e->type == SP_RAFT_ENTRY_CONF)
        {
          *out = *e->conf;
          *index = i;
          *term = e->term;
          return;
        }
    }
  *out = log->snapshot->conf;
  *index = 0;
  *term = 0;
}

static void become_follower (SpRaft *r, guint64 term, guint64 lead);
static gboolean maybe_commit (SpRaft *r);

static void
sync_progress (SpRaft *r)
{
  SpProgress old[SP_RAFT_MAX_NODES];
  guint n_old = r->n_prs;
  guint64 last = sp_log_last_index (&r->log);

  memcpy (old, r->prs, sizeof (SpProgress) * n_old);
  r->n_prs = 0;
  for (guint i = 0; i < r->conf.n_voters + r->conf.n_learners; i++)
    {
      gboolean voter = i < r->conf.n_voters;
      guint64 id = voter ? r->conf.voters[i] : r->conf.learners[i - r->conf.n_voters];
      SpProgress *p = &r->prs[r->n_prs++];
      guint j;

      for (j = 0; j < n_old && old[j].id != id; j++)
        ;
      if (j < n_old)
        {
          *p = old[j];
          old[j].inflight = NULL;
        }
      else
        {
          sp_progress_init (p, id, voter, last + 1, r->opts.max_inflight);
          p->last_heard = r->now;
        }
      p->voter = voter;
      if (id == r->id)
        p->match = last;
    }
  for (guint j = 0; j < n_old; j++)
    sp_progress_clear (&old[j]);
}

static void
set_conf (SpRaft *r, const SpRaftConf *conf, guint64 index, guint64 term)
{
  r->conf = *conf;
  r->conf_index = index;
  r->conf_term = term;
  if (r->state == STATE_LEADER)
    {
      sync_progress (r);
      if (r->transferee != SP_RAFT_NONE && !sp_raft_conf_is_voter (conf, r->transferee))
        r->transferee = SP_RAFT_NONE;
      if (maybe_commit (r))
        r->need_bcast = TRUE;
    }
  else if (r->state != STATE_FOLLOWER && !is_voter (r))
    {
      become_follower (r, r->term, SP_RAFT_NONE);
    }
}

/* After the log changed under a follower (append, truncation, snapshot). */
static void
refresh_conf (SpRaft *r)
{
  SpRaftConf conf;
  guint64 index, term;

  recompute_conf (r, &conf, &index, &term, G_MAXUINT64);
  if (index != r->conf_index || term != r->conf_term || !sp_raft_conf_equal (&conf, &r->conf))
    set_conf (r, &conf, index, term);
}

/* After an append: the configuration in force changes only if a CONF entry
 * came, or the entry it came from was cut off or replaced (then another
 * entry sits at its index, with another term).  Otherwise there is no need
 * to look back through the log for the newest CONF entry. */
static gboolean
conf_may_have_moved (const SpRaft *r, const GArray *entries)
{
  for (guint i = 0; entries && i < entries->len; i++)
    if (g_array_index (entries, SpRaftEntry, i).type == SP_RAFT_ENTRY_CONF)
      return TRUE;
  return r->conf_index > 0
         && (r->conf_index > sp_log_last_index (&r->log)
             || sp_log_term (&r->log, r->conf_index) != r->conf_term);
}

/* ---- role changes ------------------------------------------------------- */

static void
reset (SpRaft *r, guint64 term)
{
  if (term != r->term)
    {
      r->term = term;
      r->vote = SP_RAFT_NONE;
    }
  r->lead = SP_RAFT_NONE;
  r->election_elapsed = 0;
  r->heartbeat_elapsed = 0;
  reset_randomized_timeout (r);
  r->transferee = SP_RAFT_NONE;
  /* Asked of the leader this node no longer is. */
  g_array_set_size (r->transfer_requests, 0);
  r->n_votes = 0;
  r->need_bcast = FALSE;
  clear_progress (r);
}

static void
become_follower (SpRaft *r, guint64 term, guint64 lead)
{
  /* A leader that steps down counts as having just heard from a leader:
   * its followers may still refuse other candidates for a while. */
  if (r->state == STATE_LEADER)
    r->since_leader = 0;
  reset (r, term);
  r->state = STATE_FOLLOWER;
  r->lead = lead;
}

static void
become_pre_candidate (SpRaft *r)
{
  /* Pre-vote asks for term + 1 without moving the term: a node that cannot
   * win never disturbs the cluster. */
  r->state = STATE_PRE_CANDIDATE;
  r->lead = SP_RAFT_NONE;
  r->n_votes = 0;
  r->election_elapsed = 0;
  reset_randomized_timeout (r);
}

static void
become_candidate (SpRaft *r)
{
  reset (r, r->term + 1);
  r->vote = r->id;
  r->state = STATE_CANDIDATE;
}

static void
append_entry (SpRaft *r, SpRaftEntryType type, GBytes *data, const SpRaftConf *conf)
{
  SpRaftEntry e = {
    .term = r->term,
    .index = sp_log_last_index (&r->log) + 1,
    .type = type,
    .data = data,
  };

  if (conf)
    {
      e.conf = g_rc_box_new (SpRaftConf);
      *e.conf = *conf;
    }
  sp_log_append (&r->log, &e, 1);
  if (e.conf)
    g_rc_box_release (e.conf);
  progress (r, r->id)->match = e.index;
  r->need_bcast = TRUE;
}

static void
become_leader (SpRaft *r)
{
  reset (r, r->term);
  r->state = STATE_LEADER;
  r->lead = r->id;
  r->since_leader = 0;
  sync_progress (r);
  for (guint i = 0; i < r->n_prs; i++)
    r->prs[i].last_heard = r->now;
  /* Any configuration entry not yet committed counts as pending. */
  r->pending_conf_index = r->conf_index;
  /* The no-op commits everything of earlier terms (Raft §5.4.2). */
  append_entry (r, SP_RAFT_ENTRY_NORMAL, NULL, NULL);
  maybe_commit (r);
}

/* ---- sending ------------------------------------------------------------ */

static gboolean
send_append (SpRaft *r, SpProgress *pr, gboolean send_if_empty)
{
  SpLog *log = &r->log;
  guint64 prev = pr->next - 1;
  SpRaftMsg *m;

  if (sp_progress_is_paused (pr))
    return FALSE;

  if (prev < log->snapshot->index)
    {
      m = new_msg (r, SP_RAFT_MSG_SNAPSHOT, pr->id);
      m->snapshot = sp_raft_snapshot_copy (log->snapshot);
      send (r, m);
      sp_progress_become_snapshot (pr, log->snapshot->index, r->now);
      return TRUE;
    }

  if (pr->next > sp_log_last_index (log) && !send_if_empty)
    return FALSE;

  m = new_msg (r, SP_RAFT_MSG_APPEND, pr->id);
  m->index = prev;
  m->log_term = sp_log_term (log, prev);
  m->entries = sp_log_slice (log, pr->next, r->opts.max_msg_entries);
  m->commit = log->committed;
  m->context = r->now;
  send (r, m);
  sp_progress_sent (pr, prev + m->entries->len, m->entries->len);
  return TRUE;
}

/* Fills the window: as many appends as flow control allows. */
static void
send_appends (SpRaft *r, SpProgress *pr, gboolean send_if_empty)
{
  if (!send_append (r, pr, send_if_empty))
    return;
  while (pr->state == SP_PROGRESS_REPLICATE && pr->next <= sp_log_last_index (&r->log)
         && send_append (r, pr, FALSE))
    ;
}

static void
bcast_append (SpRaft *r)
{
  for (guint i = 0; i < r->n_prs; i++)
    if (r->prs[i].id != r->id)
      send_appends (r, &r->prs[i], TRUE);
}

static void
bcast_heartbeat (SpRaft *r)
{
  for (guint i = 0; i < r->n_prs; i++)
    {
      SpProgress *pr = &r->prs[i];
      SpRaftMsg *m;

      if (pr->id == r->id)
        continue;
      m = new_msg (r, SP_RAFT_MSG_HEARTBEAT, pr->id);
      /* Only what the follower is known to match may be committed there:
       * its log may still hold uncommitted entries of an old term. */
      m->commit = MIN (pr->match, r->log.committed);
      m->context = r->now;
      send (r, m);
    }
}

static void
send_timeout_now (SpRaft *r, guint64 to)
{
  send (r, new_msg (r, SP_RAFT_MSG_TIMEOUT_NOW, to));
  /* The other voters learn of the transfer in the same batch, on a
   * heartbeat (force, hint_index = the target): only then may they grant
   * its forced campaign.  The old leader knows it itself. */
  for (guint i = 0; i < r->n_prs; i++)
    {
      SpProgress *pr = &r->prs[i];
      SpRaftMsg *m;

      if (pr->id == r->id || pr->id == to || !pr->voter)
        continue;
      m = new_msg (r, SP_RAFT_MSG_HEARTBEAT, pr->id);
      m->commit = MIN (pr->match, r->log.committed);
      m->context = r->now;
      m->force = TRUE;
      m->hint_index = to;
      send (r, m);
    }
  r->notice_to = to;
  r->notice_term = r->term;
  /* Step down at once: the target campaigns ignoring stickiness, so this
   * leader's lease must end now, not when the new leader is heard of. */
  become_follower (r, r->term, SP_RAFT_NONE);
}

/* ---- elections ---------------------------------------------------------- */

static void
campaign (SpRaft *r, gboolean pre, gboolean force)
{
  SpRaftMsgType type = pre ? SP_RAFT_MSG_PREVOTE : SP_RAFT_MSG_VOTE;
  guint64 term;

  if (pre)
    become_pre_candidate (r);
  else
    become_candidate (r);
  term = pre ? r->term + 1 : r->term;

  r->votes_from[0] = r->id;
  r->votes_granted[0] = TRUE;
  r->n_votes = 1;
  if (!pre)
    {
      r->heard_at = r->now - MIN (r->since_leader, r->now);
      r->forced = force;
    }
  if (quorum (r) == 1)
    {
      if (pre)
        campaign (r, FALSE, force);
      else
        become_leader (r);
      return;
    }
  for (guint i = 0; i < r->conf.n_voters; i++)
    {
      SpRaftMsg *m;

      if (r->conf.voters[i] == r->id)
        continue;
      m = new_msg (r, type, r->conf.voters[i]);
      m->term = term;
      m->index = sp_log_last_index (&r->log);
      m->log_term = sp_log_last_term (&r->log);
      m->force = force;
      send (r, m);
    }
}

static void
record_vote (SpRaft *r, guint64 from, gboolean granted, guint *yes, guint *no)
{
  if (!id_in (r->votes_from, r->n_votes, from) && r->n_votes < SP_RAFT_MAX_NODES)
    {
      r->votes_from[r->n_votes] = from;
      r->votes_granted[r->n_votes] = granted;
      r->n_votes++;
    }
  *yes = *no = 0;
  for (guint i = 0; i < r->n_votes; i++)
    {
      if (!sp_raft_conf_is_voter (&r->conf, r->votes_from[i]))
        continue;
      if (r->votes_granted[i])
        (*yes)++;
      else
        (*no)++;
    }
}

static gboolean
in_lease (const SpRaft *r)
{
  /* Leader stickiness: a voter that heard from a leader within the minimum
   * election timeout (or started less than that ago, having perhaps heard
   * from one just before a crash) does not help anyone else win. */
  return r->state == STATE_LEADER || r->since_leader < r->opts.election_ticks;
}

/* A (pre-)vote request's force counts only from the candidate this node's
 * leader (or itself) sent TimeoutNow to, for the term that follows: any
 * member could set the flag, and it overrides the promise the leader's
 * lease rests on. */
static gboolean
force_counts (const SpRaft *r, const SpRaftMsg *m)
{
  return m->force && r->notice_to != SP_RAFT_NONE && m->from == r->notice_to
         && m->term == r->notice_term + 1;
}

static void
handle_vote_request (SpRaft *r, const SpRaftMsg *m, gboolean force)
{
  gboolean pre = m->type == SP_RAFT_MSG_PREVOTE;
  gboolean can_vote = r->vote == m->from || (r->vote == SP_RAFT_NONE && r->lead == SP_RAFT_NONE)
                      || (pre && m->term > r->term);
  SpRaftMsg *resp;

  /* The promise the leader's lease rests on, kept here where every vote is
   * granted rather than where terms move: whatever moved this node's term
   * or made it forget its leader (a higher-term answer, a step-down, a
   * configuration change), it helps no one else while it is in lease.  A
   * repeated vote for the same candidate changes nothing. */
  if (!force && in_lease (r) && (pre || r->vote != m->from))
    can_vote = FALSE;

  resp = reply (r, m, pre ? SP_RAFT_MSG_PREVOTE_RESP : SP_RAFT_MSG_VOTE_RESP);
  if (can_vote && sp_log_is_up_to_date (&r->log, m->index, m->log_term))
    {
      /* A pre-vote answer carries the term asked about, so the
       * pre-candidate can tell it from stale ones. */
      resp->term = m->term;
      if (!pre)
        {
          r->vote = m->from;
          r->election_elapsed = 0;
          /* How long ago this voter heard a leader: the new leader's
           * fence counts from the latest of its voters'. */
          resp->context = r->since_leader;
        }
    }
  else
    {
      resp->reject = TRUE;
      /* Perhaps a leader the candidate missed the addition of. */
      resp->hint_index = r->lead;
    }
}

static void
step_candidate (SpRaft *r, const SpRaftMsg *m)
{
  gboolean pre = r->state == STATE_PRE_CANDIDATE;
  SpRaftMsgType resp_type = pre ? SP_RAFT_MSG_PREVOTE_RESP : SP_RAFT_MSG_VOTE_RESP;
  guint yes, no;

  if (m->type != resp_type)
    return;
  /* A granted pre-vote answers term + 1; a rejection carries the voter's. */
  if (pre && !m->reject && m->term != r->term + 1)
    return;

  if (!pre && !m->reject)
    {
      r->heard_at = sp_raft_fold_vote_age (r->heard_at, r->now, m->context);
    }
  record_vote (r, m->from, !m->reject, &yes, &no);
  if (yes >= quorum (r))
    {
      if (pre)
        campaign (r, FALSE, FALSE);
      else
        become_leader (r);
    }
  else if (no >= quorum (r))
    {
      become_follower (r, r->term, SP_RAFT_NONE);
    }
}

/* ---- follower ----------------------------------------------------------- */

/* Appends that arrive together are answered together: an acceptance says
 * everything an earlier one to the same leader in the same batch said (its
 * index and its echoed stamp are at least as high), so the earlier one is
 * dropped rather than sent.  Under load this is most of a follower's
 * answers.  Rejections carry hints and always go. */
static void
supersede_previous_ack (SpRaft *r, const SpRaftMsg *resp)
{
  SpRaftMsg *prev;

  if (r->msgs->len < 2)
    return;
  prev = g_ptr_array_index (r->msgs, r->msgs->len - 2);
  if (prev->type == SP_RAFT_MSG_APPEND_RESP && !prev->reject && prev->to == resp->to
      && prev->term == resp->term && prev->index <= resp->index && prev->context <= resp->context)
    g_ptr_array_remove_index (r->msgs, r->msgs->len - 2);
}

static void
handle_append (SpRaft *r, const SpRaftMsg *m)
{
  SpLog *log = &r->log;
  SpRaftMsg *resp = reply (r, m, SP_RAFT_MSG_APPEND_RESP);
  guint64 last_new;

  if (m->index < log->committed)
    {
      resp->index = log->committed;
      return;
    }
  if (sp_log_maybe_append (log, m->index, m->log_term, m->entries, &last_new))
    {
      sp_log_commit_to (log, MIN (m->commit, last_new));
      resp->index = last_new;
      if (conf_may_have_moved (r, m->entries))
        refresh_conf (r);
      supersede_previous_ack (r, resp);
      return;
    }

  /* Fast back-off (etcd's findConflictByTerm): tell the leader the last
   * index whose term is at most the term it assumed, so it can skip a whole
   * term of mismatching entries in one round trip. */
  resp->reject = TRUE;
  resp->index = m->index;
  resp->hint_index
      = sp_log_find_conflict_by_term (log, MIN (m->index, sp_log_last_index (log)), m->log_term);
  resp->log_term = sp_log_term (log, resp->hint_index);
}

static void
handle_heartbeat (SpRaft *r, const SpRaftMsg *m)
{
  sp_log_commit_to (&r->log, m->commit);
  reply (r, m, SP_RAFT_MSG_HEARTBEAT_RESP);
}

static void
handle_snapshot (SpRaft *r, const SpRaftMsg *m)
{
  SpLog *log = &r->log;
  const SpRaftSnapshot *s = m->snapshot;
  SpRaftMsg *resp = reply (r, m, SP_RAFT_MSG_APPEND_RESP);

  if (s->index <= log->committed)
    {
      resp->index = log->committed;
      return;
    }
  if (sp_log_match_term (log, s->index, s->term))
    {
      /* We hold the entry the snapshot ends with: everything before it is
       * the same, so just commit it. */
      sp_log_commit_to (log, s->index);
      resp->index = log->committed;
      return;
    }
  sp_log_restore (log, s);
  refresh_conf (r);
  resp->index = s->index;
}

/* The leader names the target of its transfer: a forced Vote that was
 * waiting for this is answered now. */
static void
take_notice (SpRaft *r, const SpRaftMsg *m)
{
  SpRaftMsg vote;

  r->notice_to = m->hint_index;
  r->notice_term = m->term;
  if (!r->has_pending_vote || !force_counts (r, &r->pending_vote))
    return;
  vote = r->pending_vote;
  r->has_pending_vote = FALSE;
  sp_raft_step (r, &vote, NULL);
}

static void
step_follower (SpRaft *r, const SpRaftMsg *m)
{
  switch (m->type)
    {
      case SP_RAFT_MSG_APPEND:
      case SP_RAFT_MSG_HEARTBEAT:
      case SP_RAFT_MSG_SNAPSHOT:
        r->election_elapsed = 0;
        r->since_leader = 0;
        r->lead = m->from;
        r->vouched = SP_RAFT_NONE;
        if (m->type == SP_RAFT_MSG_APPEND)
          handle_append (r, m);
        else if (m->type == SP_RAFT_MSG_HEARTBEAT)
          handle_heartbeat (r, m);
        else
          handle_snapshot (r, m);
        if (m->type == SP_RAFT_MSG_HEARTBEAT && m->force && m->hint_index != SP_RAFT_NONE)
          take_notice (r, m);
        break;
      case SP_RAFT_MSG_TIMEOUT_NOW:
        if (is_voter (r))
          campaign (r, FALSE, TRUE);
        break;
      default:
        break;
    }
}

/* ---- leader ------------------------------------------------------------- */

static int
cmp_desc (gconstpointer a, gconstpointer b)
{
  guint64 x = *(const guint64 *)a, y = *(const guint64 *)b;

  return x < y ? 1 : x > y ? -1 : 0;
}

static gboolean
maybe_commit (SpRaft *r)
{
  guint64 matches[SP_RAFT_MAX_NODES];
  guint n = 0;
  guint64 index;

  /* The leader's own entries count once persisted (advanced): it sends
   * them while writing them (Raft thesis §10.2.1). */
  for (guint i = 0; i < r->n_prs; i++)
    if (r->prs[i].voter)
      matches[n++] = r->prs[i].id == r->id ? MIN (r->prs[i].match, r->log.unstable_from - 1)
                                           : r->prs[i].match;
  if (n == 0)
    return FALSE;
  qsort (matches, n, sizeof (guint64), cmp_desc);
  index = matches[quorum (r) - 1];
  /* Only entries of the current term commit by counting (Raft §5.4.2). */
  if (index <= r->log.committed || sp_log_term (&r->log, index) != r->term)
    return FALSE;
  sp_log_commit_to (&r->log, index);
  return TRUE;
}

static void
handle_append_resp (SpRaft *r, SpProgress *pr, const SpRaftMsg *m)
{
  SpLog *log = &r->log;

  if (m->reject)
    {
      guint64 hint = m->hint_index;

      if (m->log_term > 0)
        hint = sp_log_find_conflict_by_term (log, hint, m->log_term);
      if (sp_progress_reject (pr, m->index, hint))
        send_appends (r, pr, FALSE);
      return;
    }

  if (m->index > sp_log_last_index (log))
    return;
  if (sp_progress_update (pr, m->index))
    {
      if (pr->state == SP_PROGRESS_PROBE
          || (pr->state == SP_PROGRESS_SNAPSHOT && pr->match >= pr->pending_snapshot))
        sp_progress_become_replicate (pr);
      if (maybe_commit (r))
        r->need_bcast = TRUE;
      if (pr->id == r->transferee && pr->match == sp_log_last_index (log))
        {
          send_timeout_now (r, pr->id);
          return;
        }
    }
  send_appends (r, pr, FALSE);
}

static void
handle_heartbeat_resp (SpRaft *r, SpProgress *pr, const SpRaftMsg *m)
{
  if (pr->state == SP_PROGRESS_SNAPSHOT)
    {
      /* An InstallSnapshot may have been lost: try again after a while. */
      if (r->now - pr->snapshot_sent_at < r->opts.election_ticks)
        return;
      sp_progress_become_probe (pr);
    }
  pr->probe_sent = FALSE;
  if (pr->match < sp_log_last_index (&r->log))
    {
      /* Lost appends leave the window full; free a slot so an append goes
       * out, whose rejection (if there is a gap) restarts probing. */
      if (pr->state == SP_PROGRESS_REPLICATE && pr->inflight_count == pr->inflight_cap)
        {
          pr->inflight_start = (pr->inflight_start + 1) % pr->inflight_cap;
          pr->inflight_count--;
        }
      send_append (r, pr, TRUE);
    }
}

static void
step_leader (SpRaft *r, const SpRaftMsg *m)
{
  SpProgress *pr;

  if (m->type == SP_RAFT_MSG_TRANSFER_REQUEST)
    {
      SpRaftTransferRequest req = { m->from, m->context };

      if (!sp_raft_conf_is_voter (&r->conf, m->from)
          && !sp_raft_conf_is_learner (&r->conf, m->from))
        return;
      /* One per member and batch, its latest: a member repeating itself
       * cannot grow the batch. */
      for (guint i = 0; i < r->transfer_requests->len; i++)
        if (g_array_index (r->transfer_requests, SpRaftTransferRequest, i).from == m->from)
          {
            g_array_index (r->transfer_requests, SpRaftTransferRequest, i) = req;
            return;
          }
      g_array_append_val (r->transfer_requests, req);
      return;
    }
  if (m->type != SP_RAFT_MSG_APPEND_RESP && m->type != SP_RAFT_MSG_HEARTBEAT_RESP)
    return;
  pr = progress (r, m->from);
  if (!pr)
    return;
  pr->last_heard = r->now;
  /* Every response echoes the stamp of the message it answers; the
   * follower reset its election timer when that message arrived. */
  if (m->context <= r->now && m->context > pr->lease_stamp)
    pr->lease_stamp = m->context;
  if (m->type == SP_RAFT_MSG_APPEND_RESP)
    handle_append_resp (r, pr, m);
  else
    handle_heartbeat_resp (r, pr, m);
}

/* ---- inputs ------------------------------------------------------------- */

static gboolean
validate (const SpRaft *r, const SpRaftMsg *m, GError **error)
{
  if (m->type >= SP_RAFT_MSG_N_TYPES)
    {
      g_set_error (error, SP_RAFT_ERROR, SP_RAFT_ERROR_INVALID, "unknown message type %u", m->type);
      return FALSE;
    }
  if (m->to != r->id || m->from == SP_RAFT_NONE || m->from == r->id)
    {
      g_set_error (error, SP_RAFT_ERROR, SP_RAFT_ERROR_INVALID,
                   "%s from %" G_GUINT64_FORMAT " to %" G_GUINT64_FORMAT
                   " is not for node %" G_GUINT64_FORMAT,
                   sp_raft_msg_type_to_string (m->type), m->from, m->to, r->id);
      return FALSE;
    }
  if (m->type == SP_RAFT_MSG_APPEND && m->entries)
    {
      guint64 prev_term = m->log_term;

      for (guint i = 0; i < m->entries->len; i++)
        {
          const SpRaftEntry *e = &g_array_index (m->entries, SpRaftEntry, i);

          if (e->index != m->index + 1 + i || e->term < prev_term || e->term > m->term
              || (e->type == SP_RAFT_ENTRY_CONF) != (e->conf != NULL)
              || e->type > SP_RAFT_ENTRY_CONF
              || (e->conf && e->conf->n_voters + e->conf->n_learners > SP_RAFT_MAX_NODES))
            {
              g_set_error (error, SP_RAFT_ERROR, SP_RAFT_ERROR_INVALID,
                           "Append from %" G_GUINT64_FORMAT " has a bad entry at position %u",
                           m->from, i);
              return FALSE;
            }
          prev_term = e->term;
        }
    }
  if (m->type == SP_RAFT_MSG_SNAPSHOT
      && (!m->snapshot || m->snapshot->index == 0 || m->snapshot->term > m->term
          || m->snapshot->conf.n_voters + m->snapshot->conf.n_learners > SP_RAFT_MAX_NODES))
    {
      g_set_error (error, SP_RAFT_ERROR, SP_RAFT_ERROR_INVALID,
                   "Snapshot from %" G_GUINT64_FORMAT " is malformed", m->from);
      return FALSE;
    }
  return TRUE;
}

static gboolean
conf_has (const SpRaftConf *conf, guint64 id)
{
  return sp_raft_conf_is_voter (conf, id) || sp_raft_conf_is_learner (conf, id);
}

gboolean
sp_raft_is_member (const SpRaft *r, guint64 id)
{
  SpRaftConf committed;
  guint64 index, term;

  if (conf_has (&r->conf, id))
    return TRUE;
  if (r->conf_index <= r->log.committed)
    return FALSE;
  recompute_conf (r, &committed, &index, &term, r->log.committed);
  return conf_has (&committed, id);
}

gboolean
sp_raft_accepts_stranger (const SpRaft *r, guint64 id)
{
  /* A learner never campaigns, so no member names it a leader: it takes
   * one on its own word, as it cannot be elected with it. */
  return r->conf.n_voters + r->conf.n_learners == 0
         || (!in_lease (r) && id != SP_RAFT_NONE && (id == r->vouched || !is_voter (r)));
}

/* Only members speak Raft: the sender must be in the configuration in
 * force or, while a change is pending, the committed one.  Except a
 * leader's Append, Heartbeat and Snapshot, taken from anyone by a node
 * with no configuration (joining: nothing replicated yet), from the
 * stranger a member named as its leader to a node that heard none within
 * the election timeout (it missed the entry that added its new leader),
 * and then from that leader: the transport vouches for who sends, and a
 * member for whom it follows. */
static gboolean
check_member (const SpRaft *r, const SpRaftMsg *m, GError **error)
{
  if (sp_raft_is_member (r, m->from))
    return TRUE;
  if ((m->type == SP_RAFT_MSG_APPEND || m->type == SP_RAFT_MSG_HEARTBEAT
       || m->type == SP_RAFT_MSG_SNAPSHOT)
      && (m->from == r->lead || sp_raft_accepts_stranger (r, m->from)))
    return TRUE;
  g_set_error (error, SP_RAFT_ERROR, SP_RAFT_ERROR_NOT_MEMBER,
               "%s from %" G_GUINT64_FORMAT ", not a member of the configuration",
               sp_raft_msg_type_to_string (m->type), m->from);
  return FALSE;
}

gboolean
sp_raft_step (SpRaft *r, const SpRaftMsg *m, GError **error)
{
  gboolean vote_req = m->type == SP_RAFT_MSG_VOTE || m->type == SP_RAFT_MSG_PREVOTE;
  gboolean force;

  if (!validate (r, m, error) || !check_member (r, m, error))
    return FALSE;
  /* A member that refuses this node's (pre-)vote names its leader. */
  if ((m->type == SP_RAFT_MSG_PREVOTE_RESP || m->type == SP_RAFT_MSG_VOTE_RESP) && m->reject
      && m->term >= r->term && m->hint_index != SP_RAFT_NONE && m->hint_index != r->id)
    r->vouched = m->hint_index;
  /* Only the leader this node follows, in its term, makes it campaign: a
   * TimeoutNow from anyone else would move its term and, through it, its
   * leader's. */
  if (m->type == SP_RAFT_MSG_TIMEOUT_NOW && (m->term != r->term || m->from != r->lead))
    {
      g_set_error (error, SP_RAFT_ERROR, SP_RAFT_ERROR_REFUSED,
                   "TimeoutNow from %" G_GUINT64_FORMAT " of term %" G_GUINT64_FORMAT
                   ", not this node's leader (%" G_GUINT64_FORMAT ") in term %" G_GUINT64_FORMAT,
                   m->from, m->term, r->lead, r->term);
      return FALSE;
    }
  /* One leader per term (Raft §5.2): a leader's message of this term from
   * another node than the member this node follows is forged, and would
   * make its sender the leader, free to announce a transfer to itself
   * (take_notice) or to send TimeoutNow. */
  if ((m->type == SP_RAFT_MSG_APPEND || m->type == SP_RAFT_MSG_HEARTBEAT
       || m->type == SP_RAFT_MSG_SNAPSHOT)
      && m->term == r->term && r->lead != SP_RAFT_NONE && m->from != r->lead
      && sp_raft_is_member (r, r->lead))
    {
      g_set_error (error, SP_RAFT_ERROR, SP_RAFT_ERROR_REFUSED,
                   "%s from %" G_GUINT64_FORMAT " of term %" G_GUINT64_FORMAT
                   ", whose leader is %" G_GUINT64_FORMAT,
                   sp_raft_msg_type_to_string (m->type), m->from, m->term, r->lead);
      return FALSE;
    }
  force = vote_req && force_counts (r, m);

  if (m->term > r->term)
    {
      if (vote_req && !force && in_lease (r))
        {
          /* Perhaps the transfer's notice is still on its way. */
          if (m->type == SP_RAFT_MSG_VOTE && m->force)
            {
              /* A header: no pointer into what the caller frees. */
              r->pending_vote = *m;
              r->pending_vote.entries = NULL;
              r->pending_vote.snapshot = NULL;
              r->has_pending_vote = TRUE;
            }
          /* A pre-candidate learns who leads (it may not know it as a
           * member yet); the term asked about, as pre-vote answers carry,
           * moves nothing. */
          if (m->type == SP_RAFT_MSG_PREVOTE && r->lead != SP_RAFT_NONE)
            {
              SpRaftMsg *resp = reply (r, m, SP_RAFT_MSG_PREVOTE_RESP);

              resp->term = m->term;
              resp->reject = TRUE;
              resp->hint_index = r->lead;
            }
          return TRUE;
        }
      /* From a member of a newer term: this node is not the leader it
       * means, and a request is no sign of a newer leader: the term stays. */
      if (m->type == SP_RAFT_MSG_TRANSFER_REQUEST)
        return TRUE;
      if (m->type == SP_RAFT_MSG_PREVOTE || m->type == SP_RAFT_MSG_PREVOTE_RESP)
        {
          /* Pre-vote never moves a term, not even a rejection carrying a
           * higher one: a node that cannot win must not disturb anyone.
           * The pre-candidate learns the term from that term's leader or
           * its candidates' votes. */
        }
      else
        {
          gboolean from_leader = m->type == SP_RAFT_MSG_APPEND || m->type == SP_RAFT_MSG_HEARTBEAT
                                 || m->type == SP_RAFT_MSG_SNAPSHOT
                                 || m->type == SP_RAFT_MSG_TIMEOUT_NOW;

          become_follower (r, m->term, from_leader ? m->from : SP_RAFT_NONE);
        }
    }
  else if (m->term < r->term)
    {
      /* Tell a stale leader or pre-candidate about the newer term, so a
       * leader cut off by a partition steps down when it heals.  No stamp:
       * this node promised nothing on it, and that leader, elected again
       * in our term, must not count it toward its lease. */
      if (m->type == SP_RAFT_MSG_APPEND || m->type == SP_RAFT_MSG_HEARTBEAT)
        reply (r, m, SP_RAFT_MSG_APPEND_RESP)->context = 0;
      else if (m->type == SP_RAFT_MSG_PREVOTE)
        {
          SpRaftMsg *resp = reply (r, m, SP_RAFT_MSG_PREVOTE_RESP);

          resp->reject = TRUE;
          resp->hint_index = r->lead;
        }
      return TRUE;
    }

  if (vote_req)
    {
      handle_vote_request (r, m, force);
      return TRUE;
    }

  switch (r->state)
    {
      case STATE_LEADER:
        step_leader (r, m);
        break;
      case STATE_PRE_CANDIDATE:
      case STATE_CANDIDATE:
        if (m->type == SP_RAFT_MSG_APPEND || m->type == SP_RAFT_MSG_HEARTBEAT
            || m->type == SP_RAFT_MSG_SNAPSHOT)
          {
            /* A leader of our term exists. */
            become_follower (r, r->term, m->from);
            step_follower (r, m);
          }
        else
          {
            step_candidate (r, m);
          }
        break;
      case STATE_FOLLOWER:
        step_follower (r, m);
        break;
    }
  return TRUE;
}

void
sp_raft_tick (SpRaft *r)
{
  r->now++;
  if (r->since_leader < G_MAXUINT)
    r->since_leader++;
  if (!in_lease (r))
    r->has_pending_vote = FALSE;

  if (r->state != STATE_LEADER)
    {
      r->election_elapsed++;
      if (is_voter (r) && r->election_elapsed >= r->randomized_timeout)
        campaign (r, TRUE, FALSE);
      return;
    }

  r->since_leader = 0;
  if (r->transferee != SP_RAFT_NONE && ++r->transfer_elapsed >= r->opts.election_ticks)
    r->transferee = SP_RAFT_NONE;

  /* Check-quorum: a leader that has not heard from a majority within an
   * election timeout steps down instead of serving a stale view. */
  {
    guint active = 0;

    for (guint i = 0; i < r->n_prs; i++)
      if (r->prs[i].voter
          && (r->prs[i].id == r->id || r->now - r->prs[i].last_heard < r->opts.election_ticks))
        active++;
    if (active < quorum (r))
      {
        become_follower (r, r->term, SP_RAFT_NONE);
        return;
      }
  }

  if (++r->heartbeat_elapsed >= r->opts.heartbeat_ticks)
    {
      r->heartbeat_elapsed = 0;
      bcast_heartbeat (r);
    }
}

/* Mirrors sp_raft_tick: each part is when the matching test there would
 * first pass, counted on the incremented clock.  Expiries are taken
 * separately rather than as a quorum count, which may wake a driver early
 * (harmless) but never late. */
guint
sp_raft_ticks_until_due (const SpRaft *r)
{
  guint due = G_MAXUINT;
  guint active = 0;

  if (r->state != STATE_LEADER)
    {
      if (!is_voter (r))
        return G_MAXUINT;
      return r->election_elapsed >= r->randomized_timeout
                 ? 1
                 : r->randomized_timeout - r->election_elapsed;
    }
  if (r->transferee != SP_RAFT_NONE)
    due = MIN (due, r->opts.election_ticks - MIN (r->transfer_elapsed, r->opts.election_ticks - 1));
  for (guint i = 0; i < r->n_prs; i++)
    {
      const SpProgress *p = &r->prs[i];

      if (!p->voter)
        continue;
      if (p->id == r->id)
        {
          active++;
          continue;
        }
      /* check-quorum: p stops counting as active */
      if (r->now - p->last_heard < r->opts.election_ticks)
        {
          active++;
          due = MIN (due, (guint)(p->last_heard + r->opts.election_ticks - r->now));
        }
      /* the lease: p's acknowledgement stops counting */
      if (p->lease_stamp != 0 && r->now - p->lease_stamp < r->opts.lease_ticks)
        due = MIN (due, (guint)(p->lease_stamp + r->opts.lease_ticks - r->now));
    }
  /* a membership change can leave too few active already */
  if (active < quorum (r))
    return 1;
  return MIN (due,
              r->opts.heartbeat_ticks - MIN (r->heartbeat_elapsed, r->opts.heartbeat_ticks - 1));
}

static gboolean
check_leader (SpRaft *r, GError **error)
{
  if (r->state != STATE_LEADER)
    {
      g_set_error (error, SP_RAFT_ERROR, SP_RAFT_ERROR_NOT_LEADER,
                   "not the leader (leader: %" G_GUINT64_FORMAT ")", r->lead);
      return FALSE;
    }
  if (r->transferee != SP_RAFT_NONE)
    {
      g_set_error (error, SP_RAFT_ERROR, SP_RAFT_ERROR_TRANSFERRING,
                   "leadership is being transferred to %" G_GUINT64_FORMAT, r->transferee);
      return FALSE;
    }
  return TRUE;
}

gboolean
sp_raft_propose (SpRaft *r, GBytes *data, guint64 *index_out, GError **error)
{
  if (!check_leader (r, error))
    return FALSE;
  append_entry (r, SP_RAFT_ENTRY_NORMAL, data, NULL);
  maybe_commit (r);
  if (index_out)
    *index_out = sp_log_last_index (&r->log);
  return TRUE;
}

gboolean
sp_raft_change_membership (SpRaft *r, SpRaftConfOp op, guint64 node, guint64 *index_out,
                           GError **error)
{
  return sp_raft_change_membership_with_data (r, op, node, NULL, index_out, error);
}

gboolean
sp_raft_change_membership_with_data (SpRaft *r, SpRaftConfOp op, guint64 node, GBytes *data,
                                     guint64 *index_out, GError **error)
{
  SpRaftConf conf = r->conf;
  gboolean known = sp_raft_conf_is_voter (&conf, node) || sp_raft_conf_is_learner (&conf, node);
  SpProgress *pr;

  if (!check_leader (r, error))
    return FALSE;
  /* Ongaro's fix for single-server changes: a new leader must first commit
   * an entry of its own term. */
  if (sp_log_term (&r->log, r->log.committed) != r->term)
    {
      g_set_error (error, SP_RAFT_ERROR, SP_RAFT_ERROR_NOT_READY,
                   "the new leader has not committed an entry of its term yet");
      return FALSE;
    }
  if (r->pending_conf_index > r->log.committed)
    {
      g_set_error (error, SP_RAFT_ERROR, SP_RAFT_ERROR_CONF_PENDING,
                   "membership change at index %" G_GUINT64_FORMAT " is not committed yet",
                   r->pending_conf_index);
      return FALSE;
    }
  if (node == SP_RAFT_NONE)
    {
      g_set_error (error, SP_RAFT_ERROR, SP_RAFT_ERROR_INVALID, "node id 0 is reserved");
      return FALSE;
    }

  switch (op)
    {
      case SP_RAFT_CONF_ADD_VOTER:
      case SP_RAFT_CONF_ADD_LEARNER:
        if (known || conf.n_voters + conf.n_learners >= SP_RAFT_MAX_NODES)
          {
            g_set_error (error, SP_RAFT_ERROR, SP_RAFT_ERROR_INVALID,
                         known ? "node %" G_GUINT64_FORMAT " is already a member"
                               : "cannot add node %" G_GUINT64_FORMAT ": cluster is full",
                         node);
            return FALSE;
          }
        if (op == SP_RAFT_CONF_ADD_VOTER)
          conf.voters[conf.n_voters++] = node;
        else
          conf.learners[conf.n_learners++] = node;
        break;
      case SP_RAFT_CONF_PROMOTE:
        if (!sp_raft_conf_is_learner (&conf, node))
          {
            g_set_error (error, SP_RAFT_ERROR, SP_RAFT_ERROR_INVALID,
                         "node %" G_GUINT64_FORMAT " is not a learner", node);
            return FALSE;
          }
        pr = progress (r, node);
        if (pr->match < r->log.committed || r->now - pr->last_heard >= r->opts.election_ticks)
          {
            g_set_error (error, SP_RAFT_ERROR, SP_RAFT_ERROR_NOT_CAUGHT_UP,
                         "learner %" G_GUINT64_FORMAT " is at %" G_GUINT64_FORMAT
                         ", the log is committed to %" G_GUINT64_FORMAT,
                         node, pr->match, r->log.committed);
            return FALSE;
          }
        remove_id (conf.learners, &conf.n_learners, node);
        conf.voters[conf.n_voters++] = node;
        break;
      case SP_RAFT_CONF_REMOVE:
        if (!known)
          {
            g_set_error (error, SP_RAFT_ERROR, SP_RAFT_ERROR_INVALID,
                         "node %" G_GUINT64_FORMAT " is not a member", node);
            return FALSE;
          }
        if (node == r->id)
          {
            g_set_error (error, SP_RAFT_ERROR, SP_RAFT_ERROR_INVALID,
                         "the leader cannot remove itself: transfer leadership first");
            return FALSE;
          }
        if (!remove_id (conf.voters, &conf.n_voters, node))
          remove_id (conf.learners, &conf.n_learners, node);
        break;
      default:
        g_set_error (error, SP_RAFT_ERROR, SP_RAFT_ERROR_INVALID, "unknown membership change %d",
                     op);
        return FALSE;
    }

  append_entry (r, SP_RAFT_ENTRY_CONF, data, &conf);
  r->pending_conf_index = sp_log_last_index (&r->log);
  set_conf (r, &conf, r->pending_conf_index, r->term);
  if (index_out)
    *index_out = r->pending_conf_index;
  return TRUE;
}

gboolean
sp_raft_transfer_leadership (SpRaft *r, guint64 to, GError **error)
{
  SpProgress *pr = NULL;

  if (r->state != STATE_LEADER)
    {
      g_set_error (error, SP_RAFT_ERROR, SP_RAFT_ERROR_NOT_LEADER,
                   "not the leader (leader: %" G_GUINT64_FORMAT ")", r->lead);
      return FALSE;
    }
  if (to == r->id)
    return TRUE;
  if (to == SP_RAFT_NONE)
    {
      for (guint i = 0; i < r->n_prs; i++)
        {
          SpProgress *p = &r->prs[i];

          if (p->id == r->id || !p->voter || r->now - p->last_heard >= r->opts.election_ticks)
            continue;
          if (!pr || p->match > pr->match)
            pr = p;
        }
      if (!pr)
        {
          g_set_error (error, SP_RAFT_ERROR, SP_RAFT_ERROR_INVALID,
                       "no other reachable voter to hand leadership to");
          return FALSE;
        }
    }
  else
    {
      pr = progress (r, to);
      if (!pr || !pr->voter)
        {
          g_set_error (error, SP_RAFT_ERROR, SP_RAFT_ERROR_INVALID,
                       "node %" G_GUINT64_FORMAT " is not a voter", to);
          return FALSE;
        }
    }

  r->transferee = pr->id;
  r->transfer_elapsed = 0;
  if (pr->match == sp_log_last_index (&r->log))
    send_timeout_now (r, pr->id);
  else
    send_appends (r, pr, TRUE);
  return TRUE;
}

gboolean
sp_raft_request_transfer (SpRaft *r, guint64 to, GError **error)
{
  SpRaftMsg *m;

  if (r->state == STATE_LEADER)
    {
      g_set_error (error, SP_RAFT_ERROR, SP_RAFT_ERROR_INVALID,
                   "the leader transfers leadership itself");
      return FALSE;
    }
  if (r->lead == SP_RAFT_NONE)
    {
      g_set_error (error, SP_RAFT_ERROR, SP_RAFT_ERROR_NOT_LEADER, "no leader is known");
      return FALSE;
    }
  m = new_msg (r, SP_RAFT_MSG_TRANSFER_REQUEST, r->lead);
  m->context = to;
  send (r, m);
  return TRUE;
}

gboolean
sp_raft_compact (SpRaft *r, guint64 index, GBytes *data, GError **error)
{
  SpRaftConf conf;
  guint64 ci, ct;

  if (index <= r->log.snapshot->index || index > r->log.applied)
    {
      g_set_error (error, SP_RAFT_ERROR, SP_RAFT_ERROR_INVALID,
                   "cannot snapshot at %" G_GUINT64_FORMAT ": must be in (%" G_GUINT64_FORMAT
                   ", %" G_GUINT64_FORMAT "]",
                   index, r->log.snapshot->index, r->log.applied);
      return FALSE;
    }
  recompute_conf (r, &conf, &ci, &ct, index);
  sp_log_compact (&r->log, index, &conf, data);
  return TRUE;
}

/* ---- creation ----------------------------------------------------------- */

static gboolean
restore (SpRaft *r, const SpRaftRestore *rs, GError **error)
{
  SpLog *log = &r->log;
  const SpRaftHardState *hs = &rs->hard_state;

  if (rs->snapshot && rs->snapshot->index > 0)
    {
      sp_log_restore (log, rs->snapshot);
      log->snapshot_unstable = FALSE;
    }
  if (rs->entries)
    {
      for (guint i = 0; i < rs->entries->len; i++)
        {
          const SpRaftEntry *e = &g_array_index (rs->entries, SpRaftEntry, i);

          /* covered by the snapshot: the store may drop them lazily */
          if (e->index <= log->snapshot->index)
            continue;
          if (e->index != sp_log_last_index (log) + 1 || e->term < sp_log_last_term (log)
              || e->term > hs->term || (e->type == SP_RAFT_ENTRY_CONF) != (e->conf != NULL))
            {
              g_set_error (error, SP_RAFT_ERROR, SP_RAFT_ERROR_CORRUPT,
                           "stored entry %u (index %" G_GUINT64_FORMAT ", term %" G_GUINT64_FORMAT
                           ") does not follow index %" G_GUINT64_FORMAT " or the term",
                           i, e->index, e->term, sp_log_last_index (log));
              return FALSE;
            }
          sp_log_append (log, e, 1);
        }
    }
  /* A commit below the snapshot is fine: the snapshot was stored and the
   * hard state that followed it was not. */
  if (hs->commit > sp_log_last_index (log))
    {
      g_set_error (error, SP_RAFT_ERROR, SP_RAFT_ERROR_CORRUPT,
                   "stored commit index %" G_GUINT64_FORMAT
                   " is outside the log [%" G_GUINT64_FORMAT ", %" G_GUINT64_FORMAT "]",
                   hs->commit, log->snapshot->index, sp_log_last_index (log));
      return FALSE;
    }
  r->term = hs->term;
  r->vote = hs->vote;
  log->committed = MAX (hs->commit, log->snapshot->index);
  log->unstable_from = sp_log_last_index (log) + 1;

  if (sp_log_last_index (log) == 0 && hs->term == 0 && rs->bootstrap && rs->bootstrap->n_voters > 0)
    {
      SpRaftEntry e = { .term = 1, .index = 1, .type = SP_RAFT_ENTRY_CONF };

      e.conf = g_rc_box_new (SpRaftConf);
      *e.conf = *rs->bootstrap;
      sp_log_append (log, &e, 1);
      g_rc_box_release (e.conf);
      r->term = 1;
      log->committed = 1;
    }
  /* What is on disk; a bootstrap makes the first ready carry the rest. */
  r->prev_hs = *hs;
  return TRUE;
}

SpRaft *
sp_raft_new (const SpRaftOptions *opts, const SpRaftRestore *rs, GError **error)
{
  g_autoptr (GError) local = NULL;
  SpRaftRestore empty = { 0 };
  SpRaft *r;

  if (opts->id == SP_RAFT_NONE || opts->election_ticks < 3 || opts->heartbeat_ticks == 0
      || opts->heartbeat_ticks >= opts->election_ticks || opts->lease_ticks >= opts->election_ticks)
    {
      g_set_error (error, SP_RAFT_ERROR, SP_RAFT_ERROR_INVALID,
                   "invalid options: need id > 0, election_ticks >= 3, "
                   "0 < heartbeat_ticks < election_ticks and lease_ticks < election_ticks");
      return NULL;
    }

  r = g_new0 (SpRaft, 1);
  r->opts = *opts;
  if (r->opts.lease_ticks == 0)
    r->opts.lease_ticks = sp_raft_default_lease_ticks (opts->election_ticks);
  if (r->opts.max_inflight == 0)
    r->opts.max_inflight = 64;
  if (r->opts.max_msg_entries == 0)
    r->opts.max_msg_entries = 256;
  r->id = opts->id;
  r->rng = opts->seed ^ (opts->id * 0x2545f4914f6cdd1dULL);
  r->now = 1;
  r->msgs = g_ptr_array_new_with_free_func ((GDestroyNotify)sp_raft_msg_free);
  r->transfer_requests = g_array_new (FALSE, FALSE, sizeof (SpRaftTransferRequest));
  sp_log_init (&r->log);

  if (!restore (r, rs ? rs : &empty, &local))
    {
      g_propagate_error (error, g_steal_pointer (&local));
      sp_raft_free (r);
      return NULL;
    }
  recompute_conf (r, &r->conf, &r->conf_index, &r->conf_term, G_MAXUINT64);
  r->state = STATE_FOLLOWER;
  reset_randomized_timeout (r);
  r->prev_role = sp_raft_role (r);
  return r;
}

void
sp_raft_free (SpRaft *r)
{
  if (!r)
    return;
  clear_progress (r);
  sp_log_clear (&r->log);
  g_ptr_array_unref (r->msgs);
  g_array_unref (r->transfer_requests);
  g_free (r);
}

/* ---- ready -------------------------------------------------------------- */

static SpRaftHardState
hard_state (const SpRaft *r)
{
  return (SpRaftHardState){ r->term, r->vote, r->log.committed };
}

static void
flush (SpRaft *r)
{
  if (r->state == STATE_LEADER && r->need_bcast)
    {
      r->need_bcast = FALSE;
      bcast_append (r);
    }
}

gboolean
sp_raft_has_ready (SpRaft *r)
{
  SpRaftHardState hs = hard_state (r);

  if (r->ready_outstanding)
    return FALSE;
  flush (r);
  return r->msgs->len > 0 || r->transfer_requests->len > 0 || r->log.snapshot_unstable
         || r->log.unstable_from <= sp_log_last_index (&r->log) || r->log.committed > r->log.applied
         || hs.term != r->prev_hs.term || hs.vote != r->prev_hs.vote
         || hs.commit != r->prev_hs.commit || sp_raft_role (r) != r->prev_role
         || r->lead != r->prev_lead;
}

SpRaftReady *
sp_raft_ready (SpRaft *r)
{
  SpRaftReady *rd = g_new0 (SpRaftReady, 1);
  SpLog *log = &r->log;
  guint64 last = sp_log_last_index (log);

  g_return_val_if_fail (!r->ready_outstanding, rd);
  flush (r);
  r->ready_outstanding = TRUE;

  rd->role = sp_raft_role (r);
  rd->leader = r->lead;
  rd->soft_changed = rd->role != r->prev_role || rd->leader != r->prev_lead;
  rd->hard_state = hard_state (r);
  rd->hard_state_changed = rd->hard_state.term != r->prev_hs.term
                           || rd->hard_state.vote != r->prev_hs.vote
                           || rd->hard_state.commit != r->prev_hs.commit;
  if (log->snapshot_unstable)
    rd->snapshot = sp_raft_snapshot_copy (log->snapshot);
  rd->entries = log->unstable_from <= last ? sp_log_slice (log, log->unstable_from, G_MAXUINT)
                                           : sp_raft_entries_new (0);
  rd->committed = log->committed > log->applied
                      ? sp_log_slice (log, log->applied + 1, (guint)(log->committed - log->applied))
                      : sp_raft_entries_new (0);
  rd->messages = g_steal_pointer (&r->msgs);
  r->msgs = g_ptr_array_new_with_free_func ((GDestroyNotify)sp_raft_msg_free);
  rd->transfer_requests = g_steal_pointer (&r->transfer_requests);
  r->transfer_requests = g_array_new (FALSE, FALSE, sizeof (SpRaftTransferRequest));
  /* A leader's appends and heartbeats depend on nothing in this batch:
   * its term and vote were persisted before it could win. */
  rd->send_before_persist = r->state == STATE_LEADER && !rd->snapshot
                            && rd->hard_state.term == r->prev_hs.term
                            && rd->hard_state.vote == r->prev_hs.vote;

  r->prev_hs = rd->hard_state;
  r->prev_role = rd->role;
  r->prev_lead = rd->leader;
  return rd;
}

void
sp_raft_advance (SpRaft *r, SpRaftReady *rd)
{
  SpLog *log = &r->log;

  r->ready_outstanding = FALSE;
  if (rd->entries->len > 0)
    {
      const SpRaftEntry *e = &g_array_index (rd->entries, SpRaftEntry, rd->entries->len - 1);

      /* The log may have been cut and regrown since: only what still
       * matches is durable. */
      if (sp_log_match_term (log, e->index, e->term) && log->unstable_from <= e->index + 1)
        log->unstable_from = e->index + 1;
      if (r->state == STATE_LEADER && maybe_commit (r))
        r->need_bcast = TRUE;
    }
  if (rd->snapshot && rd->snapshot->index == log->snapshot->index)
    log->snapshot_unstable = FALSE;
  if (rd->committed->len > 0)
    {
      const SpRaftEntry *e = &g_array_index (rd->committed, SpRaftEntry, rd->committed->len - 1);

      log->applied = MAX (log->applied, e->index);
    }
}

void
sp_raft_ready_free (SpRaftReady *rd)
{
  if (!rd)
    return;
  sp_raft_snapshot_free (rd->snapshot);
  g_clear_pointer (&rd->entries, g_array_unref);
  g_clear_pointer (&rd->messages, g_ptr_array_unref);
  g_clear_pointer (&rd->committed, g_array_unref);
  g_clear_pointer (&rd->transfer_requests, g_array_unref);
  g_free (rd);
}

/* ---- queries ------------------------------------------------------------ */

guint64
sp_raft_id (const SpRaft *r)
{
  return r->id;
}

SpRaftRole
sp_raft_role (const SpRaft *r)
{
  switch (r->state)
    {
      case STATE_LEADER:
        return SP_RAFT_LEADER;
      case STATE_CANDIDATE:
        return SP_RAFT_CANDIDATE;
      case STATE_PRE_CANDIDATE:
        return SP_RAFT_PRE_CANDIDATE;
      case STATE_FOLLOWER:
      default:
        return is_voter (r) ? SP_RAFT_FOLLOWER : SP_RAFT_LEARNER;
    }
}

guint64
sp_raft_term (const SpRaft *r)
{
  return r->term;
}

guint64
sp_raft_leader (const SpRaft *r)
{
  return r->lead;
}

guint64
sp_raft_commit_index (const SpRaft *r)
{
  return r->log.committed;
}

guint64
sp_raft_applied_index (const SpRaft *r)
{
  return r->log.applied;
}

guint64
sp_raft_last_index (const SpRaft *r)
{
  return sp_log_last_index (&r->log);
}

guint64
sp_raft_first_index (const SpRaft *r)
{
  return sp_log_first_index (&r->log);
}

guint64
sp_raft_term_at (const SpRaft *r, guint64 index)
{
  return sp_log_term (&r->log, index);
}

const SpRaftEntry *
sp_raft_entry_at (const SpRaft *r, guint64 index)
{
  return sp_log_entry (&r->log, index);
}

const SpRaftConf *
sp_raft_conf (const SpRaft *r)
{
  return &r->conf;
}

const SpRaftSnapshot *
sp_raft_snapshot (const SpRaft *r)
{
  return r->log.snapshot->index > 0 ? r->log.snapshot : NULL;
}

guint64
sp_raft_transfer_target (const SpRaft *r)
{
  return r->transferee;
}

guint64
sp_raft_transfer_notice (const SpRaft *r, guint64 *term)
{
  if (term)
    *term = r->notice_term;
  return r->notice_to;
}

guint64
sp_raft_fold_vote_age (guint64 heard_at, guint64 now, guint64 voter_age)
{
  /* On the voter's clock, which may run 5 % fast: scaled down, the age is
   * never more than the real one.  A voter counts in a guint. */
  guint64 age = MIN (MIN (voter_age, G_MAXUINT) * 20 / 21, now);

  return MAX (heard_at, now - age);
}

guint
sp_raft_heard_age (const SpRaft *r)
{
  if (r->state != STATE_LEADER)
    return G_MAXUINT;
  return (guint)MIN (r->now - MIN (r->heard_at, r->now), G_MAXUINT - 1);
}

gboolean
sp_raft_won_by_transfer (const SpRaft *r)
{
  return r->state == STATE_LEADER && r->forced;
}

gboolean
sp_raft_lease_valid (const SpRaft *r)
{
  guint n = 0;

  if (r->state != STATE_LEADER)
    return FALSE;
  for (guint i = 0; i < r->n_prs; i++)
    {
      const SpProgress *p = &r->prs[i];

      if (!p->voter)
        continue;
      if (p->id == r->id || (p->lease_stamp != 0 && r->now - p->lease_stamp < r->opts.lease_ticks))
        n++;
    }
  return n >= quorum (r);
}

/* The lease ends when the quorum-th most recent stamp among the voters
 * (itself never expires) is lease_ticks old. */
guint
sp_raft_lease_ticks_left (const SpRaft *r)
{
  guint64 stamps[SP_RAFT_MAX_NODES], end;
  guint n = 0, q = quorum (r);

  if (!sp_raft_lease_valid (r))
    return 0;
  for (guint i = 0; i < r->n_prs; i++)
    {
      const SpProgress *p = &r->prs[i];

      if (!p->voter)
        continue;
      if (p->id == r->id)
        stamps[n++] = G_MAXUINT64;
      else if (p->lease_stamp != 0 && r->now - p->lease_stamp < r->opts.lease_ticks)
        stamps[n++] = p->lease_stamp;
    }
  /* The q-th largest: a few voters, a selection by hand. */
  for (guint i = 0; i < q; i++)
    for (guint j = i + 1; j < n; j++)
      if (stamps[j] > stamps[i])
        {
          guint64 t = stamps[i];

          stamps[i] = stamps[j];
          stamps[j] = t;
        }
  if (stamps[q - 1] == G_MAXUINT64)
    return G_MAXUINT;
  end = stamps[q - 1] + r->opts.lease_ticks;
  return (guint)MIN (end - r->now, G_MAXUINT - 1);
}

guint
sp_raft_progress (const SpRaft *r, SpRaftProgress out[SP_RAFT_MAX_NODES])
{
  for (guint i = 0; i < r->n_prs; i++)
    {
      const SpProgress *p = &r->prs[i];

      out[i] = (SpRaftProgress){
        .id = p->id,
        .voter = p->voter,
        .match = p->match,
        .next = p->next,
        .recent = p->id == r->id || r->now - p->last_heard < r->opts.election_ticks,
      };
    }
  return r->n_prs;
}
