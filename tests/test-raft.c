/* Unit tests of the Raft core: one behaviour each, driven by hand over a
 * tiny synchronous in-memory network.  The randomized cluster simulator
 * (test-raft-sim.c) covers the interleavings. */
#include <check.h>

#include "raft.h"

#define NET_MAX 8

typedef struct
{
  SpRaft *n[NET_MAX + 1];
  guint count;
  gboolean cut[NET_MAX + 1][NET_MAX + 1];
  guint64 applied[NET_MAX + 1]; /* last applied index per node */
  guint sent[NET_MAX + 1][SP_RAFT_MSG_N_TYPES];
  guint n_asked[NET_MAX + 1];               /* transfer requests surfaced per node */
  SpRaftTransferRequest asked[NET_MAX + 1]; /* the last one */
} Net;

static SpRaftOptions
options (guint64 id)
{
  return (SpRaftOptions){ .id = id, .heartbeat_ticks = 1, .election_ticks = 10, .seed = 42 };
}

static void
net_init (Net *net, guint voters, guint learners)
{
  SpRaftConf conf = { 0 };

  *net = (Net){ 0 };
  net->count = voters + learners;
  for (guint i = 1; i <= voters; i++)
    conf.voters[conf.n_voters++] = i;
  for (guint i = voters + 1; i <= voters + learners; i++)
    conf.learners[conf.n_learners++] = i;
  for (guint i = 1; i <= net->count; i++)
    {
      SpRaftOptions o = options (i);
      SpRaftRestore rs = { .bootstrap = &conf };

      net->n[i] = sp_raft_new (&o, &rs, NULL);
      ck_assert_ptr_nonnull (net->n[i]);
    }
}

static void
net_clear (Net *net)
{
  for (guint i = 1; i <= net->count; i++)
    sp_raft_free (net->n[i]);
}

/* Steps m into r: the core may drop a non-member's messages and a
 * TimeoutNow its leader no longer vouches for; anything else must pass. */
static void
net_step (SpRaft *r, const SpRaftMsg *m)
{
  g_autoptr (GError) error = NULL;

  if (!sp_raft_step (r, m, &error))
    ck_assert_msg (g_error_matches (error, SP_RAFT_ERROR, SP_RAFT_ERROR_NOT_MEMBER)
                       || g_error_matches (error, SP_RAFT_ERROR, SP_RAFT_ERROR_REFUSED),
                   "%s", error->message);
}

/* Processes readies and delivers messages until nothing moves. */
static void
net_settle (Net *net)
{
  gboolean busy = TRUE;

  while (busy)
    {
      busy = FALSE;
      for (guint i = 1; i <= net->count; i++)
        {
          g_autoptr (SpRaftReady) rd = NULL;

          if (!net->n[i] || !sp_raft_has_ready (net->n[i]))
            continue;
          busy = TRUE;
          rd = sp_raft_ready (net->n[i]);
          for (guint k = 0; k < rd->committed->len; k++)
            net->applied[i] = g_array_index (rd->committed, SpRaftEntry, k).index;
          if (rd->snapshot)
            net->applied[i] = MAX (net->applied[i], rd->snapshot->index);
          for (guint k = 0; k < rd->transfer_requests->len; k++)
            {
              net->asked[i] = g_array_index (rd->transfer_requests, SpRaftTransferRequest, k);
              net->n_asked[i]++;
            }
          sp_raft_advance (net->n[i], rd);
          for (guint k = 0; k < rd->messages->len; k++)
            {
              SpRaftMsg *m = g_ptr_array_index (rd->messages, k);

              net->sent[i][m->type]++;
              if (m->to <= net->count && net->n[m->to] && !net->cut[i][m->to])
                net_step (net->n[m->to], m);
            }
        }
    }
}

static void
net_tick (Net *net, guint64 only, guint times)
{
  for (guint t = 0; t < times; t++)
    {
      for (guint i = 1; i <= net->count; i++)
        if (net->n[i] && (only == 0 || only == i))
          sp_raft_tick (net->n[i]);
      net_settle (net);
    }
}

static void
net_isolate (Net *net, guint64 id, gboolean cut)
{
  for (guint i = 1; i <= NET_MAX; i++)
    net->cut[id][i] = net->cut[i][id] = cut;
}

static guint64
net_leader (Net *net)
{
  guint64 leader = 0;

  for (guint i = 1; i <= net->count; i++)
    if (net->n[i] && sp_raft_role (net->n[i]) == SP_RAFT_LEADER)
      {
        ck_assert_msg (leader == 0, "two leaders");
        leader = i;
      }
  return leader;
}

/* Makes id campaign now, as a leadership transfer would, so that tests do
 * not depend on which election timeout the PRNG drew: a leader hands over,
 * and without one the messages of a transfer are made up (a heartbeat of
 * another node naming id, then its TimeoutNow). */
static void
elect (Net *net, guint64 id)
{
  guint64 other = id == 1 ? 2 : 1;
  guint64 term = sp_raft_term (net->n[id]);
  guint64 leader;
  SpRaftMsg m = { .type = SP_RAFT_MSG_HEARTBEAT, .to = id, .from = other, .term = term };

  net_settle (net);
  leader = net_leader (net);
  if (net->count == 1)
    {
      net_tick (net, id, 20);
    }
  else if (leader && leader != id)
    {
      ck_assert (sp_raft_transfer_leadership (net->n[leader], id, NULL));
    }
  else
    {
      ck_assert (sp_raft_step (net->n[id], &m, NULL));
      m.type = SP_RAFT_MSG_TIMEOUT_NOW;
      ck_assert (sp_raft_step (net->n[id], &m, NULL));
      m.type = SP_RAFT_MSG_HEARTBEAT;
      m.force = TRUE;
      m.hint_index = id;
      for (guint j = 1; j <= net->count; j++)
        if (j != id && net->n[j])
          {
            m.to = j;
            m.from = j == other ? id : other;
            net_step (net->n[j], &m);
          }
    }
  net_settle (net);
  ck_assert_uint_eq (net_leader (net), id);
  net_tick (net, 0, 2);
}

static void
elect_first (Net *net)
{
  elect (net, 1);
}

START_TEST (test_single_node)
{
  Net net;
  guint64 index;

  net_init (&net, 1, 0);
  elect_first (&net);
  ck_assert (sp_raft_lease_valid (net.n[1]));
  ck_assert (sp_raft_propose (net.n[1], NULL, &index, NULL));
  net_settle (&net);
  ck_assert_uint_eq (net.applied[1], index);
  net_clear (&net);
}
END_TEST

START_TEST (test_election_and_replication)
{
  Net net;
  g_autoptr (GBytes) data = g_bytes_new_static ("x", 1);
  g_autoptr (GError) error = NULL;
  guint64 index;

  net_init (&net, 3, 0);
  elect_first (&net);
  ck_assert_uint_eq (sp_raft_leader (net.n[2]), 1);
  ck_assert_uint_eq (sp_raft_leader (net.n[3]), 1);

  ck_assert (!sp_raft_propose (net.n[2], data, NULL, &error));
  ck_assert (g_error_matches (error, SP_RAFT_ERROR, SP_RAFT_ERROR_NOT_LEADER));

  ck_assert (sp_raft_propose (net.n[1], data, &index, NULL));
  net_settle (&net);
  for (guint i = 1; i <= 3; i++)
    ck_assert_uint_eq (net.applied[i], index);
  net_clear (&net);
}
END_TEST

START_TEST (test_prevote_isolated_node_does_not_disrupt)
{
  Net net;
  guint64 term;

  net_init (&net, 3, 0);
  elect_first (&net);
  term = sp_raft_term (net.n[1]);

  net_isolate (&net, 3, TRUE);
  net_tick (&net, 0, 100);
  /* Pre-vote never wins, so the isolated node's term does not grow. */
  ck_assert_uint_eq (sp_raft_term (net.n[3]), term);
  ck_assert_uint_ge (net.sent[3][SP_RAFT_MSG_PREVOTE], 2);
  ck_assert_uint_eq (net.sent[3][SP_RAFT_MSG_VOTE], 0);

  net_isolate (&net, 3, FALSE);
  net_tick (&net, 0, 5);
  ck_assert_uint_eq (net_leader (&net), 1);
  ck_assert_uint_eq (sp_raft_term (net.n[1]), term);
  net_clear (&net);
}
END_TEST

START_TEST (test_check_quorum_and_lease)
{
  Net net;
  guint lease = sp_raft_default_lease_ticks (10);
  guint t;

  net_init (&net, 3, 0);
  elect_first (&net);
  ck_assert (sp_raft_lease_valid (net.n[1]));

  net_isolate (&net, 1, TRUE);
  for (t = 1; sp_raft_lease_valid (net.n[1]); t++)
    net_tick (&net, 1, 1);
  /* The lease ends before anyone may elect: strictly below the election
   * timeout, and the leader is still leader for a while after that. */
  ck_assert_uint_le (t, lease + 1);
  ck_assert_int_eq (sp_raft_role (net.n[1]), SP_RAFT_LEADER);
  for (; sp_raft_role (net.n[1]) == SP_RAFT_LEADER && t < 100; t++)
    net_tick (&net, 1, 1);
  ck_assert_uint_le (t, 11);
  ck_assert_uint_eq (sp_raft_leader (net.n[1]), SP_RAFT_NONE);
  net_clear (&net);
}
END_TEST

/* What a driver that sleeps until sp_raft_ticks_until_due sees. */
START_TEST (test_ticks_until_due)
{
  Net net;
  SpRaftOptions o = options (1);
  guint due;

  o.heartbeat_ticks = 4;
  net_init (&net, 3, 0);
  /* a follower: not before its election timeout, in [E, 2E) */
  due = sp_raft_ticks_until_due (net.n[2]);
  ck_assert_uint_ge (due, 10);
  ck_assert_uint_lt (due, 20);
  net_tick (&net, 2, due - 1);
  ck_assert_int_eq (sp_raft_role (net.n[2]), SP_RAFT_FOLLOWER);
  ck_assert_uint_eq (sp_raft_ticks_until_due (net.n[2]), 1);
  net_tick (&net, 2, 1);
  ck_assert_int_ne (sp_raft_role (net.n[2]), SP_RAFT_FOLLOWER);
  net_clear (&net);

  /* a leader: its next heartbeat; then, cut off, the end of its lease */
  net_init (&net, 3, 0);
  sp_raft_free (net.n[1]);
  {
    SpRaftConf conf = { .voters = { 1, 2, 3 }, .n_voters = 3 };
    SpRaftRestore rs = { .bootstrap = &conf };

    net.n[1] = sp_raft_new (&o, &rs, NULL);
  }
  elect_first (&net);
  due = sp_raft_ticks_until_due (net.n[1]);
  ck_assert_uint_ge (due, 1);
  ck_assert_uint_le (due, 4);
  net_isolate (&net, 1, TRUE);
  for (guint t = 0; t < 30 && sp_raft_role (net.n[1]) == SP_RAFT_LEADER; t++)
    {
      gboolean lease = sp_raft_lease_valid (net.n[1]);

      due = sp_raft_ticks_until_due (net.n[1]);
      ck_assert_uint_ge (due, 1);
      ck_assert_uint_le (due, 4);
      /* the ticks before the due one change nothing */
      for (guint k = 1; k < due; k++)
        {
          sp_raft_tick (net.n[1]);
          ck_assert (!sp_raft_has_ready (net.n[1]));
          ck_assert_int_eq (sp_raft_lease_valid (net.n[1]), lease);
        }
      net_tick (&net, 1, 1);
    }
  ck_assert (!sp_raft_lease_valid (net.n[1]));
  ck_assert_int_eq (sp_raft_role (net.n[1]), SP_RAFT_FOLLOWER);
  net_clear (&net);

  /* a learner waits for its leader */
  net_init (&net, 1, 1);
  ck_assert_uint_eq (sp_raft_ticks_until_due (net.n[2]), G_MAXUINT);
  net_clear (&net);
}
END_TEST

/* Appends that reach a follower together are answered with one message. */
START_TEST (test_appends_in_one_batch_get_one_answer)
{
  Net net;
  g_autoptr (GBytes) data = g_bytes_new_static ("x", 1);
  SpRaftMsg appends[3];
  g_autoptr (SpRaftReady) rd = NULL;
  guint64 last = 0;
  guint answers = 0;

  net_init (&net, 3, 0);
  elect_first (&net);
  ck_assert (sp_raft_propose (net.n[1], data, &last, NULL));
  net_settle (&net);
  /* then three appends after it, as a leader writing fast would send */
  for (guint i = 0; i < G_N_ELEMENTS (appends); i++)
    {
      SpRaftEntry e = { .term = sp_raft_term (net.n[1]), .index = last + 1 + i };

      appends[i] = (SpRaftMsg){
        .type = SP_RAFT_MSG_APPEND,
        .from = 1,
        .to = 2,
        .term = sp_raft_term (net.n[1]),
        .index = last + i,
        .log_term = i == 0 ? sp_raft_term_at (net.n[2], last) : e.term,
        .context = 100 + i,
        .entries = sp_raft_entries_new (1),
      };
      g_array_append_val (appends[i].entries, e);
    }
  for (guint i = 0; i < G_N_ELEMENTS (appends); i++)
    ck_assert (sp_raft_step (net.n[2], &appends[i], NULL));
  rd = sp_raft_ready (net.n[2]);
  for (guint i = 0; i < rd->messages->len; i++)
    {
      SpRaftMsg *m = g_ptr_array_index (rd->messages, i);

      if (m->type != SP_RAFT_MSG_APPEND_RESP)
        continue;
      answers++;
      ck_assert (!m->reject);
      ck_assert_uint_eq (m->index, last + G_N_ELEMENTS (appends));
      ck_assert_uint_eq (m->context, 100 + G_N_ELEMENTS (appends) - 1);
    }
  ck_assert_uint_eq (answers, 1);
  sp_raft_advance (net.n[2], rd);
  for (guint i = 0; i < G_N_ELEMENTS (appends); i++)
    g_array_unref (appends[i].entries);
  net_clear (&net);
}
END_TEST

START_TEST (test_stickiness_refuses_votes_while_leader_alive)
{
  Net net;

  net_init (&net, 3, 0);
  elect_first (&net);
  /* Node 3 cannot hear the leader but can reach node 2, which can. */
  net.cut[1][3] = net.cut[3][1] = TRUE;
  net_tick (&net, 0, 60);
  ck_assert_uint_eq (net_leader (&net), 1);
  ck_assert_uint_eq (sp_raft_leader (net.n[2]), 1);
  net_clear (&net);
}
END_TEST

START_TEST (test_transfer)
{
  Net net;
  g_autoptr (GError) error = NULL;
  guint64 index;

  net_init (&net, 3, 1);
  elect_first (&net);

  ck_assert (!sp_raft_transfer_leadership (net.n[1], 4, &error));
  ck_assert (g_error_matches (error, SP_RAFT_ERROR, SP_RAFT_ERROR_INVALID));
  g_clear_error (&error);

  /* Node 3 lags: the transfer waits for it to catch up. */
  net_isolate (&net, 3, TRUE);
  for (guint i = 0; i < 20; i++)
    ck_assert (sp_raft_propose (net.n[1], NULL, &index, NULL));
  net_settle (&net);
  ck_assert (sp_raft_transfer_leadership (net.n[1], 3, NULL));
  net_settle (&net);
  ck_assert_int_eq (sp_raft_role (net.n[1]), SP_RAFT_LEADER);
  ck_assert_uint_eq (sp_raft_transfer_target (net.n[1]), 3);
  ck_assert (!sp_raft_propose (net.n[1], NULL, NULL, &error));
  ck_assert (g_error_matches (error, SP_RAFT_ERROR, SP_RAFT_ERROR_TRANSFERRING));

  net_isolate (&net, 3, FALSE);
  net_tick (&net, 1, 1);
  ck_assert_uint_eq (net_leader (&net), 3);
  ck_assert_uint_ge (net.applied[3], index);
  ck_assert (!sp_raft_lease_valid (net.n[1]));
  net_clear (&net);
}
END_TEST

/* A member's request reaches the leader's application, which decides: the
 * core starts nothing.  Only members' requests of the leader's term count. */
START_TEST (test_transfer_request)
{
  Net net;
  g_autoptr (GError) error = NULL;
  guint64 term;
  SpRaftMsg m = { .type = SP_RAFT_MSG_TRANSFER_REQUEST, .to = 1, .context = 2 };

  net_init (&net, 3, 1);
  ck_assert (!sp_raft_request_transfer (net.n[2], 2, &error));
  ck_assert (g_error_matches (error, SP_RAFT_ERROR, SP_RAFT_ERROR_NOT_LEADER));
  g_clear_error (&error);
  elect_first (&net);
  term = sp_raft_term (net.n[1]);
  ck_assert (!sp_raft_request_transfer (net.n[1], 2, &error));
  ck_assert (g_error_matches (error, SP_RAFT_ERROR, SP_RAFT_ERROR_INVALID));

  ck_assert (sp_raft_request_transfer (net.n[2], 2, NULL));
  net_settle (&net);
  ck_assert_uint_eq (net.sent[2][SP_RAFT_MSG_TRANSFER_REQUEST], 1);
  ck_assert_uint_eq (net.n_asked[1], 1);
  ck_assert_uint_eq (net.asked[1].from, 2);
  ck_assert_uint_eq (net.asked[1].to, 2);
  ck_assert_uint_eq (sp_raft_transfer_target (net.n[1]), SP_RAFT_NONE);
  ck_assert_uint_eq (net_leader (&net), 1);

  /* A learner may ask too, leaving the choice to the leader. */
  ck_assert (sp_raft_request_transfer (net.n[4], SP_RAFT_NONE, NULL));
  net_settle (&net);
  ck_assert_uint_eq (net.n_asked[1], 2);
  ck_assert_uint_eq (net.asked[1].from, 4);
  ck_assert_uint_eq (net.asked[1].to, SP_RAFT_NONE);

  /* Ignored: a stranger, an older or a newer term (which moves nothing),
   * and any follower asked. */
  g_clear_error (&error);
  m.from = 7;
  m.term = term;
  ck_assert (!sp_raft_step (net.n[1], &m, &error));
  ck_assert (g_error_matches (error, SP_RAFT_ERROR, SP_RAFT_ERROR_NOT_MEMBER));
  g_clear_error (&error);
  m.from = 2;
  m.term = term - 1;
  ck_assert (sp_raft_step (net.n[1], &m, NULL));
  m.term = term + 1;
  ck_assert (sp_raft_step (net.n[1], &m, NULL));
  m.to = 3;
  m.term = term;
  ck_assert (sp_raft_step (net.n[3], &m, NULL));
  net_settle (&net);
  ck_assert_uint_eq (net.n_asked[1], 2);
  ck_assert_uint_eq (net.n_asked[3], 0);
  ck_assert_uint_eq (sp_raft_term (net.n[1]), term);
  ck_assert_uint_eq (net_leader (&net), 1);

  /* A member repeating itself within a batch: once, its latest target. */
  m.to = 1;
  m.from = 2;
  m.context = 3;
  ck_assert (sp_raft_step (net.n[1], &m, NULL));
  m.context = 2;
  ck_assert (sp_raft_step (net.n[1], &m, NULL));
  ck_assert (sp_raft_step (net.n[1], &m, NULL));
  net_settle (&net);
  ck_assert_uint_eq (net.n_asked[1], 3);
  ck_assert_uint_eq (net.asked[1].from, 2);
  ck_assert_uint_eq (net.asked[1].to, 2);

  /* The application hands over as asked. */
  ck_assert (sp_raft_transfer_leadership (net.n[1], net.asked[1].to, NULL));
  net_settle (&net);
  ck_assert_uint_ne (net_leader (&net), 1);
  net_clear (&net);
}
END_TEST

START_TEST (test_learner_promotion)
{
  Net net;
  g_autoptr (GError) error = NULL;
  SpRaftOptions o = options (4);
  guint64 index;

  net_init (&net, 3, 0);
  elect_first (&net);
  /* A brand-new node: nothing persisted, no bootstrap. */
  net.n[4] = sp_raft_new (&o, NULL, NULL);
  net.count = 4;
  net_isolate (&net, 4, TRUE);
  ck_assert (sp_raft_change_membership (net.n[1], SP_RAFT_CONF_ADD_LEARNER, 4, &index, NULL));
  ck_assert (!sp_raft_change_membership (net.n[1], SP_RAFT_CONF_PROMOTE, 4, NULL, &error));
  ck_assert (g_error_matches (error, SP_RAFT_ERROR, SP_RAFT_ERROR_CONF_PENDING));
  g_clear_error (&error);
  net_settle (&net);
  ck_assert (!sp_raft_change_membership (net.n[1], SP_RAFT_CONF_PROMOTE, 4, NULL, &error));
  ck_assert (g_error_matches (error, SP_RAFT_ERROR, SP_RAFT_ERROR_NOT_CAUGHT_UP));

  net_isolate (&net, 4, FALSE);
  net_tick (&net, 0, 3);
  ck_assert_int_eq (sp_raft_role (net.n[4]), SP_RAFT_LEARNER);
  ck_assert_uint_eq (net.applied[4], net.applied[1]);
  ck_assert (sp_raft_change_membership (net.n[1], SP_RAFT_CONF_PROMOTE, 4, &index, NULL));
  net_tick (&net, 0, 2);
  ck_assert_int_eq (sp_raft_role (net.n[4]), SP_RAFT_FOLLOWER);
  ck_assert_uint_eq (sp_raft_conf (net.n[2])->n_voters, 4);

  /* The leader cannot remove itself; a follower can be removed. */
  ck_assert (!sp_raft_change_membership (net.n[1], SP_RAFT_CONF_REMOVE, 1, NULL, NULL));
  ck_assert (sp_raft_change_membership (net.n[1], SP_RAFT_CONF_REMOVE, 2, NULL, NULL));
  net_tick (&net, 0, 2);
  ck_assert_uint_eq (sp_raft_conf (net.n[3])->n_voters, 3);
  ck_assert (!sp_raft_conf_is_voter (sp_raft_conf (net.n[4]), 2));
  net_clear (&net);
}
END_TEST

START_TEST (test_snapshot_catch_up)
{
  Net net;
  g_autoptr (GBytes) state = g_bytes_new_static ("state", 5);
  g_autoptr (GError) error = NULL;

  net_init (&net, 3, 0);
  elect_first (&net);
  net_isolate (&net, 3, TRUE);
  for (guint i = 0; i < 50; i++)
    ck_assert (sp_raft_propose (net.n[1], NULL, NULL, NULL));
  net_tick (&net, 0, 1);
  ck_assert (!sp_raft_compact (net.n[1], net.applied[1] + 1, state, &error));
  ck_assert (sp_raft_compact (net.n[1], net.applied[1], state, NULL));
  ck_assert_uint_eq (sp_raft_first_index (net.n[1]), net.applied[1] + 1);

  net_isolate (&net, 3, FALSE);
  net_tick (&net, 0, 3);
  ck_assert_uint_eq (net.sent[1][SP_RAFT_MSG_SNAPSHOT], 1);
  ck_assert_uint_eq (net.applied[3], net.applied[1]);
  ck_assert (sp_raft_snapshot (net.n[3]) != NULL);
  ck_assert_uint_eq (sp_raft_snapshot (net.n[3])->conf.n_voters, 3);
  net_clear (&net);
}
END_TEST

/* A follower holding a long log from an old term: the leader must find the
 * match point in a few round trips, not one per entry. */
START_TEST (test_fast_backoff)
{
  Net net;
  guint rejects;

  net_init (&net, 3, 0);
  elect_first (&net);
  /* Node 1 leads alone for a while: 200 entries nobody else has. */
  net_isolate (&net, 1, TRUE);
  for (guint i = 0; i < 200; i++)
    ck_assert (sp_raft_propose (net.n[1], NULL, NULL, NULL));
  net_tick (&net, 1, 12); /* check-quorum: it steps down */
  ck_assert_int_ne (sp_raft_role (net.n[1]), SP_RAFT_LEADER);
  /* 2 and 3 elect and write a little in a newer term. */
  elect (&net, 2);
  ck_assert (sp_raft_propose (net.n[2], NULL, NULL, NULL));
  net_settle (&net);

  /* Node 1 comes back with its divergent log. */
  net_isolate (&net, 1, FALSE);
  net_tick (&net, 2, 5);
  rejects = net.sent[1][SP_RAFT_MSG_APPEND_RESP];
  ck_assert_uint_eq (sp_raft_last_index (net.n[1]), sp_raft_last_index (net.n[2]));
  ck_assert_uint_eq (sp_raft_term_at (net.n[1], sp_raft_last_index (net.n[1])),
                     sp_raft_term (net.n[2]));
  ck_assert_uint_lt (rejects, 20);
  net_clear (&net);
}
END_TEST

/* Raft §5.4.2: an entry of an earlier term is not committed by counting
 * replicas; only an entry of the current term is. */
START_TEST (test_old_term_entry_not_committed_by_counting)
{
  g_autoptr (GArray) entries = sp_raft_entries_new (2);
  SpRaftConf conf = { .voters = { 1, 2, 3 }, .n_voters = 3 };
  SpRaftEntry e = { .term = 1, .index = 1, .type = SP_RAFT_ENTRY_CONF };
  SpRaftRestore rs = { .hard_state = { .term = 2, .commit = 1 }, .entries = entries };
  SpRaftOptions o = options (1);
  g_autoptr (SpRaftReady) rd = NULL;
  SpRaft *r;
  guint64 old = 2;

  e.conf = g_rc_box_new (SpRaftConf);
  *e.conf = conf;
  g_array_append_val (entries, e);
  g_array_append_val (entries, ((SpRaftEntry){ .term = 2, .index = 2 }));
  r = sp_raft_new (&o, &rs, NULL);
  ck_assert_ptr_nonnull (r);
  for (guint t = 0; t < 40 && sp_raft_role (r) != SP_RAFT_PRE_CANDIDATE; t++)
    sp_raft_tick (r);
  sp_raft_step (r, &(SpRaftMsg){ .type = SP_RAFT_MSG_PREVOTE_RESP, .from = 2, .to = 1, .term = 3 },
                NULL);
  sp_raft_step (r, &(SpRaftMsg){ .type = SP_RAFT_MSG_VOTE_RESP, .from = 2, .to = 1, .term = 3 },
                NULL);
  ck_assert_int_eq (sp_raft_role (r), SP_RAFT_LEADER);
  ck_assert_uint_eq (sp_raft_last_index (r), 3); /* the no-op of term 3 */

  /* Node 2 acknowledges the term-2 entry: a majority holds it, yet it must
   * not commit until the term-3 no-op is replicated too. */
  sp_raft_step (
      r,
      &(SpRaftMsg){ .type = SP_RAFT_MSG_APPEND_RESP, .from = 2, .to = 1, .term = 3, .index = old },
      NULL);
  ck_assert_uint_eq (sp_raft_commit_index (r), 1);
  sp_raft_step (
      r, &(SpRaftMsg){ .type = SP_RAFT_MSG_APPEND_RESP, .from = 2, .to = 1, .term = 3, .index = 3 },
      NULL);
  /* The leader's own copy counts once it is persisted (advanced). */
  ck_assert_uint_eq (sp_raft_commit_index (r), 1);
  rd = sp_raft_ready (r);
  /* Its new term and vote are in this batch too: nothing goes out first. */
  ck_assert (!rd->send_before_persist);
  sp_raft_advance (r, rd);
  ck_assert_uint_eq (sp_raft_commit_index (r), 3);
  sp_raft_free (r);
}
END_TEST

START_TEST (test_malformed_messages)
{
  Net net;
  g_autoptr (GArray) entries = sp_raft_entries_new (1);
  g_autoptr (GError) error = NULL;
  guint64 term;

  net_init (&net, 3, 0);
  elect_first (&net);
  term = sp_raft_term (net.n[2]);

  ck_assert (!sp_raft_step (net.n[2], &(SpRaftMsg){ .type = 99, .from = 1, .to = 2 }, &error));
  g_clear_error (&error);
  ck_assert (!sp_raft_step (
      net.n[2], &(SpRaftMsg){ .type = SP_RAFT_MSG_VOTE, .from = 1, .to = 3, .term = term + 5 },
      &error));
  g_clear_error (&error);
  /* An entry whose index does not follow the previous one. */
  g_array_append_val (entries, ((SpRaftEntry){ .term = term, .index = 99 }));
  ck_assert (!sp_raft_step (net.n[2],
                            &(SpRaftMsg){ .type = SP_RAFT_MSG_APPEND,
                                          .from = 1,
                                          .to = 2,
                                          .term = term,
                                          .index = 3,
                                          .log_term = term,
                                          .entries = entries },
                            &error));
  ck_assert (g_error_matches (error, SP_RAFT_ERROR, SP_RAFT_ERROR_INVALID));
  g_clear_error (&error);
  ck_assert (!sp_raft_step (
      net.n[2], &(SpRaftMsg){ .type = SP_RAFT_MSG_SNAPSHOT, .from = 1, .to = 2, .term = term },
      &error));
  ck_assert_uint_eq (sp_raft_term (net.n[2]), term);
  net_tick (&net, 0, 3);
  ck_assert_uint_eq (net_leader (&net), 1);
  net_clear (&net);
}
END_TEST

START_TEST (test_corrupt_restore)
{
  g_autoptr (GError) error = NULL;
  SpRaftOptions o = options (1);
  SpRaftRestore rs = { .hard_state = { .term = 3, .commit = 7 } };

  ck_assert_ptr_null (sp_raft_new (&o, &rs, &error));
  ck_assert (g_error_matches (error, SP_RAFT_ERROR, SP_RAFT_ERROR_CORRUPT));
  g_clear_error (&error);
  o.lease_ticks = 10;
  ck_assert_ptr_null (sp_raft_new (&o, NULL, &error));
  ck_assert (g_error_matches (error, SP_RAFT_ERROR, SP_RAFT_ERROR_INVALID));
}
END_TEST

/* The answer of type to the last input, taken from r's ready; the ready is
 * advanced as if persisted. */
static gboolean
answer_rejected (SpRaft *r, SpRaftMsgType type)
{
  g_autoptr (SpRaftReady) rd = sp_raft_ready (r);
  gint rejected = -1;

  for (guint i = 0; i < rd->messages->len; i++)
    {
      const SpRaftMsg *m = g_ptr_array_index (rd->messages, i);

      if (m->type == type)
        rejected = m->reject;
    }
  sp_raft_advance (r, rd);
  ck_assert_msg (rejected >= 0, "no %s sent", sp_raft_msg_type_to_string (type));
  return rejected;
}

static SpRaftMsg
vote_request (SpRaft *to, guint64 from, SpRaftMsgType type, guint64 term)
{
  return (SpRaftMsg){
    .type = type,
    .from = from,
    .to = sp_raft_id (to),
    .term = term,
    .index = sp_raft_last_index (to),
    .log_term = sp_raft_term_at (to, sp_raft_last_index (to)),
  };
}

/* Seed 8423, 3 nodes, distilled: a voter that has just heard the leader
 * has its term moved by an answer of a higher term, which clears its
 * leader; the vote request of that same term must still be refused, or a
 * second leader gets a lease while the first one's is valid. */
START_TEST (test_same_term_vote_refused_in_lease)
{
  static const SpRaftMsgType movers[] = {
    SP_RAFT_MSG_VOTE_RESP,
    SP_RAFT_MSG_APPEND_RESP,
    SP_RAFT_MSG_HEARTBEAT_RESP,
  };

  for (guint i = 0; i < G_N_ELEMENTS (movers); i++)
    {
      Net net;
      guint64 term;
      SpRaftMsg vote;

      net_init (&net, 3, 0);
      elect_first (&net);
      term = sp_raft_term (net.n[2]);
      ck_assert_uint_eq (sp_raft_leader (net.n[2]), 1);
      ck_assert (sp_raft_step (
          net.n[2],
          &(SpRaftMsg){ .type = movers[i], .from = 3, .to = 2, .term = term + 1, .reject = TRUE },
          NULL));
      ck_assert_uint_eq (sp_raft_term (net.n[2]), term + 1);
      ck_assert_uint_eq (sp_raft_leader (net.n[2]), SP_RAFT_NONE);
      net_settle (&net);

      vote = vote_request (net.n[2], 3, SP_RAFT_MSG_VOTE, term + 1);
      ck_assert (sp_raft_step (net.n[2], &vote, NULL));
      ck_assert (answer_rejected (net.n[2], SP_RAFT_MSG_VOTE_RESP));
      vote.type = SP_RAFT_MSG_PREVOTE;
      ck_assert (sp_raft_step (net.n[2], &vote, NULL));
      ck_assert (answer_rejected (net.n[2], SP_RAFT_MSG_PREVOTE_RESP));

      /* Once an election timeout has passed without the leader, it votes. */
      net_isolate (&net, 2, TRUE);
      net_tick (&net, 2, 10);
      vote.type = SP_RAFT_MSG_VOTE;
      ck_assert (sp_raft_step (net.n[2], &vote, NULL));
      ck_assert (!answer_rejected (net.n[2], SP_RAFT_MSG_VOTE_RESP));
      net_clear (&net);
    }
}
END_TEST

/* Only an answer from a node that reset its election timer on the message
 * carries the leader's stamp: one to a stale term does not. */
/* ---- only members speak Raft -------------------------------------------- */

/* Steps m into the node it is addressed to; returns the error code, or -1
 * when it was taken. */
static int
step_code (Net *net, const SpRaftMsg *m)
{
  g_autoptr (GError) error = NULL;

  if (sp_raft_step (net->n[m->to], m, &error))
    return -1;
  ck_assert (error->domain == SP_RAFT_ERROR);
  return error->code;
}

static void
assert_unmoved (Net *net, guint64 leader, guint64 term)
{
  net_settle (net);
  ck_assert_uint_eq (net_leader (net), leader);
  ck_assert (sp_raft_lease_valid (net->n[leader]));
  for (guint i = 1; i <= net->count; i++)
    {
      ck_assert_uint_eq (sp_raft_term (net->n[i]), term);
      ck_assert_uint_eq (sp_raft_leader (net->n[i]), leader);
    }
}

START_TEST (test_non_member_dropped)
{
  static const SpRaftMsgType types[] = {
    SP_RAFT_MSG_PREVOTE,          SP_RAFT_MSG_VOTE,      SP_RAFT_MSG_TIMEOUT_NOW,
    SP_RAFT_MSG_APPEND,           SP_RAFT_MSG_HEARTBEAT, SP_RAFT_MSG_SNAPSHOT,
    SP_RAFT_MSG_TRANSFER_REQUEST, SP_RAFT_MSG_VOTE_RESP, SP_RAFT_MSG_APPEND_RESP,
    SP_RAFT_MSG_HEARTBEAT_RESP,
  };
  Net net;
  guint64 term;
  SpRaftSnapshot snap = { .index = 100, .term = 1 };

  net_init (&net, 3, 0);
  elect_first (&net);
  net_tick (&net, 0, 3);
  term = sp_raft_term (net.n[1]);
  snap.conf.voters[snap.conf.n_voters++] = 9;
  for (guint i = 0; i < G_N_ELEMENTS (types); i++)
    for (guint to = 1; to <= 3; to++)
      for (guint64 t = term; t <= term + 5; t += 5)
        {
          SpRaftMsg m = {
            .type = types[i],
            .from = 9,
            .to = to,
            .term = t,
            .force = TRUE,
            .index = 1000,
            .log_term = t,
            .commit = 1000,
          };

          if (m.type == SP_RAFT_MSG_SNAPSHOT)
            m.snapshot = &snap;
          ck_assert_int_eq (step_code (&net, &m), SP_RAFT_ERROR_NOT_MEMBER);
        }
  assert_unmoved (&net, 1, term);
  net_clear (&net);
}
END_TEST

/* Takes a node's ready, keeping its messages for the test to deliver. */
static GPtrArray *
take_messages (Net *net, guint64 id)
{
  g_autoptr (SpRaftReady) rd = sp_raft_ready (net->n[id]);
  GPtrArray *out = g_ptr_array_new_with_free_func ((GDestroyNotify)sp_raft_msg_free);

  sp_raft_advance (net->n[id], rd);
  for (guint i = 0; i < rd->messages->len; i++)
    g_ptr_array_add (out, sp_raft_msg_copy (g_ptr_array_index (rd->messages, i)));
  return out;
}

/* A node that has no configuration yet (joining) takes its leader's
 * messages from anyone, never a vote request; a lagging node takes them
 * from a leader it does not know of once it heard no leader for an
 * election timeout and a member named that leader, then follows it. */
START_TEST (test_strangers_leader_messages)
{
  SpRaftOptions o = options (5);
  SpRaftRestore rs = { 0 };
  g_autoptr (GError) error = NULL;
  SpRaft *joiner = sp_raft_new (&o, &rs, &error);
  Net net;
  guint64 term;
  SpRaftMsg m = { .type = SP_RAFT_MSG_VOTE, .from = 4, .to = 5, .term = 3, .force = TRUE };

  ck_assert_ptr_nonnull (joiner);
  ck_assert (sp_raft_accepts_stranger (joiner, 4));
  ck_assert (!sp_raft_step (joiner, &m, &error));
  ck_assert (g_error_matches (error, SP_RAFT_ERROR, SP_RAFT_ERROR_NOT_MEMBER));
  g_clear_error (&error);
  m.type = SP_RAFT_MSG_TIMEOUT_NOW;
  ck_assert (!sp_raft_step (joiner, &m, NULL));
  m.type = SP_RAFT_MSG_HEARTBEAT;
  m.force = FALSE;
  ck_assert (sp_raft_step (joiner, &m, NULL));
  ck_assert_uint_eq (sp_raft_leader (joiner), 4);
  ck_assert_uint_eq (sp_raft_term (joiner), 3);
  sp_raft_free (joiner);

  net_init (&net, 3, 0);
  elect_first (&net);
  term = sp_raft_term (net.n[2]);
  m = (SpRaftMsg){ .type = SP_RAFT_MSG_HEARTBEAT, .from = 9, .to = 2, .term = term + 1 };
  ck_assert_int_eq (step_code (&net, &m), SP_RAFT_ERROR_NOT_MEMBER);
  ck_assert (!sp_raft_accepts_stranger (net.n[2], 9));
  net_isolate (&net, 2, TRUE);
  net_tick (&net, 2, 10);
  /* Out of lease, a stranger no member named is still refused: a removed
   * member's certificate must not lead a node that lost its leader (its
   * term would move, and through it the real leader's). */
  ck_assert (!sp_raft_accepts_stranger (net.n[2], 9));
  ck_assert_int_eq (step_code (&net, &m), SP_RAFT_ERROR_NOT_MEMBER);
  ck_assert_uint_eq (sp_raft_term (net.n[2]), term);
  /* A member answers a pre-vote of any term naming the leader it follows. */
  for (guint64 t = term; t <= term + 1; t++)
    {
      SpRaftMsg pv = vote_request (net.n[3], 2, SP_RAFT_MSG_PREVOTE, t);
      g_autoptr (GPtrArray) out = NULL;
      guint answers = 0;

      ck_assert_int_eq (step_code (&net, &pv), -1);
      out = take_messages (&net, 3);
      for (guint i = 0; i < out->len; i++)
        {
          SpRaftMsg *a = g_ptr_array_index (out, i);

          if (a->type != SP_RAFT_MSG_PREVOTE_RESP)
            continue;
          ck_assert (a->reject);
          ck_assert_uint_eq (a->hint_index, 1);
          ck_assert_uint_ge (a->term, t);
          answers++;
        }
      ck_assert_uint_eq (answers, 1);
    }
  /* Such an answer naming 9 (the member follows a leader this node missed
   * the addition of) lets 9 in, and only 9. */
  ck_assert_int_eq (step_code (&net, &(SpRaftMsg){ .type = SP_RAFT_MSG_PREVOTE_RESP,
                                                   .from = 3,
                                                   .to = 2,
                                                   .term = term + 1,
                                                   .reject = TRUE,
                                                   .hint_index = 9 }),
                    -1);
  ck_assert (sp_raft_accepts_stranger (net.n[2], 9));
  ck_assert (!sp_raft_accepts_stranger (net.n[2], 8));
  m.from = 8;
  ck_assert_int_eq (step_code (&net, &m), SP_RAFT_ERROR_NOT_MEMBER);
  m.from = 9;
  ck_assert_int_eq (step_code (&net, &m), -1);
  ck_assert_uint_eq (sp_raft_leader (net.n[2]), 9);
  /* In lease again, with the leader it follows. */
  ck_assert (!sp_raft_accepts_stranger (net.n[2], 9));
  ck_assert_int_eq (step_code (&net, &m), -1);
  m.from = 8;
  ck_assert_int_eq (step_code (&net, &m), SP_RAFT_ERROR_NOT_MEMBER);
  net_clear (&net);
}
END_TEST

/* A member that sets force without a transfer its leader announced moves
 * nobody: the leader keeps its lease and term; a TimeoutNow from anyone but
 * the leader is refused. */
START_TEST (test_forced_vote_needs_notice)
{
  for (guint n = 3; n <= 5; n += 2)
    {
      Net net;
      guint64 term;
      SpRaftMsg m;

      net_init (&net, n, 0);
      elect_first (&net);
      net_tick (&net, 0, 3);
      term = sp_raft_term (net.n[1]);
      net_isolate (&net, 3, TRUE);
      for (guint to = 1; to <= n; to++)
        {
          if (to == 3)
            continue;
          m = vote_request (net.n[to], 3, SP_RAFT_MSG_VOTE, term + 1);
          m.force = TRUE;
          ck_assert_int_eq (step_code (&net, &m), -1);
          m.type = SP_RAFT_MSG_PREVOTE;
          ck_assert_int_eq (step_code (&net, &m), -1);
          m = (SpRaftMsg){ .type = SP_RAFT_MSG_TIMEOUT_NOW, .from = 3, .to = to, .term = term };
          ck_assert_int_eq (step_code (&net, &m), SP_RAFT_ERROR_REFUSED);
          /* Not even the leader's, of another term. */
          if (to != 1)
            {
              m.from = 1;
              m.term = term + 1;
              ck_assert_int_eq (step_code (&net, &m), SP_RAFT_ERROR_REFUSED);
            }
        }
      net_isolate (&net, 3, FALSE);
      net_tick (&net, 0, 1);
      assert_unmoved (&net, 1, term);
      /* The held forced Vote goes at the lease's end, unanswered. */
      net_tick (&net, 0, 30);
      ck_assert_uint_eq (net_leader (&net), 1);
      ck_assert_uint_eq (sp_raft_term (net.n[1]), term);

      /* A planned transfer still takes one round: no tick. */
      ck_assert (sp_raft_transfer_leadership (net.n[1], 3, NULL));
      net_settle (&net);
      ck_assert_uint_eq (net_leader (&net), 3);
      ck_assert_uint_eq (sp_raft_term (net.n[3]), term + 1);
      ck_assert (sp_raft_won_by_transfer (net.n[3]));
      net_clear (&net);
    }
}
END_TEST

/* One leader per term: a member that is not the leader cannot name itself
 * the target of a transfer with a heartbeat of its own (force, hint_index),
 * nor lead a node with it; the forced Vote that follows moves nobody. */
START_TEST (test_forged_notice)
{
  static const SpRaftMsgType types[] = {
    SP_RAFT_MSG_HEARTBEAT,
    SP_RAFT_MSG_APPEND,
    SP_RAFT_MSG_SNAPSHOT,
  };

  for (guint n = 3; n <= 5; n += 2)
    {
      Net net;
      guint64 term;
      SpRaftSnapshot snap = { .index = 100, .term = 1 };
      SpRaftMsg m;

      net_init (&net, n, 0);
      elect_first (&net);
      net_tick (&net, 0, 3);
      term = sp_raft_term (net.n[1]);
      for (guint i = 1; i <= n; i++)
        snap.conf.voters[snap.conf.n_voters++] = i;
      net_isolate (&net, 3, TRUE);
      for (guint to = 1; to <= n; to++)
        {
          if (to == 3)
            continue;
          for (guint i = 0; i < G_N_ELEMENTS (types); i++)
            {
              m = (SpRaftMsg){ .type = types[i],
                               .from = 3,
                               .to = to,
                               .term = term,
                               .force = TRUE,
                               .hint_index = 3,
                               .index = sp_raft_last_index (net.n[to]),
                               .log_term
                               = sp_raft_term_at (net.n[to], sp_raft_last_index (net.n[to])) };
              if (m.type == SP_RAFT_MSG_SNAPSHOT)
                m.snapshot = &snap;
              ck_assert_int_eq (step_code (&net, &m), SP_RAFT_ERROR_REFUSED);
              ck_assert_uint_eq (sp_raft_leader (net.n[to]), 1);
            }
          m = vote_request (net.n[to], 3, SP_RAFT_MSG_VOTE, term + 1);
          m.force = TRUE;
          ck_assert_int_eq (step_code (&net, &m), -1);
          ck_assert_uint_eq (sp_raft_term (net.n[to]), term);
        }
      net_isolate (&net, 3, FALSE);
      net_tick (&net, 0, 1);
      assert_unmoved (&net, 1, term);
      net_clear (&net);
    }
}
END_TEST

/* The candidate's Vote travels two hops, the leader's notice one, on other
 * connections: a Vote that arrives first waits for the notice. */
START_TEST (test_forced_vote_before_notice)
{
  Net net;
  g_autoptr (GPtrArray) from_leader = NULL;
  g_autoptr (GPtrArray) from_candidate = NULL;
  guint notices = 0;
  guint64 term;

  net_init (&net, 5, 0);
  elect_first (&net);
  net_tick (&net, 0, 3);
  term = sp_raft_term (net.n[1]);
  ck_assert (sp_raft_transfer_leadership (net.n[1], 3, NULL));
  from_leader = take_messages (&net, 1);
  for (guint i = 0; i < from_leader->len; i++)
    {
      SpRaftMsg *m = g_ptr_array_index (from_leader, i);

      if (m->type == SP_RAFT_MSG_TIMEOUT_NOW)
        ck_assert_int_eq (step_code (&net, m), -1);
      else if (m->type == SP_RAFT_MSG_HEARTBEAT && m->force)
        {
          ck_assert_uint_eq (m->hint_index, 3);
          notices++;
        }
    }
  ck_assert_uint_eq (notices, 3);
  /* The votes reach 2, 4 and 5 (not 1) before the notices: held. */
  from_candidate = take_messages (&net, 3);
  for (guint i = 0; i < from_candidate->len; i++)
    {
      SpRaftMsg *m = g_ptr_array_index (from_candidate, i);

      ck_assert_int_eq (m->type, SP_RAFT_MSG_VOTE);
      ck_assert (m->force);
      if (m->to != 1)
        ck_assert_int_eq (step_code (&net, m), -1);
    }
  for (guint i = 2; i <= 5; i++)
    if (i != 3)
      {
        ck_assert_uint_eq (sp_raft_term (net.n[i]), term);
        ck_assert (!sp_raft_has_ready (net.n[i]));
      }
  for (guint i = 0; i < from_leader->len; i++)
    {
      SpRaftMsg *m = g_ptr_array_index (from_leader, i);

      if (m->type == SP_RAFT_MSG_HEARTBEAT && m->force)
        ck_assert_int_eq (step_code (&net, m), -1);
    }
  net_settle (&net);
  ck_assert_uint_eq (net_leader (&net), 3);
  ck_assert_uint_eq (sp_raft_term (net.n[3]), term + 1);
  net_clear (&net);
}
END_TEST

START_TEST (test_stale_term_answer_carries_no_stamp)
{
  Net net;
  g_autoptr (SpRaftReady) rd = NULL;
  guint64 term;
  guint answers = 0;

  net_init (&net, 3, 0);
  elect_first (&net);
  term = sp_raft_term (net.n[2]);
  ck_assert (sp_raft_step (
      net.n[2],
      &(SpRaftMsg){
          .type = SP_RAFT_MSG_HEARTBEAT, .from = 3, .to = 2, .term = term - 1, .context = 77 },
      NULL));
  rd = sp_raft_ready (net.n[2]);
  for (guint i = 0; i < rd->messages->len; i++)
    {
      const SpRaftMsg *m = g_ptr_array_index (rd->messages, i);

      ck_assert_int_eq (m->type, SP_RAFT_MSG_APPEND_RESP);
      ck_assert_uint_eq (m->term, term);
      ck_assert_uint_eq (m->context, 0);
      answers++;
    }
  ck_assert_uint_eq (answers, 1);
  sp_raft_advance (net.n[2], rd);
  net_clear (&net);
}
END_TEST

/* Pre-vote asks about a future term: neither a request nor an answer of any
 * term moves the receiver's term or vote. */
START_TEST (test_prevote_moves_no_term_or_vote)
{
  Net net;
  guint64 term;
  SpRaftMsg m;

  net_init (&net, 3, 0);
  elect_first (&net);
  /* Out of lease, so that node 2 grants pre-votes. */
  net_isolate (&net, 2, TRUE);
  net_tick (&net, 2, 10);
  term = sp_raft_term (net.n[2]);

  m = vote_request (net.n[2], 3, SP_RAFT_MSG_PREVOTE, term + 5);
  ck_assert (sp_raft_step (net.n[2], &m, NULL));
  ck_assert (!answer_rejected (net.n[2], SP_RAFT_MSG_PREVOTE_RESP));
  ck_assert_uint_eq (sp_raft_term (net.n[2]), term);

  for (guint reject = 0; reject < 2; reject++)
    {
      SpRaftHardState before;
      g_autoptr (SpRaftReady) rd = NULL;

      ck_assert (sp_raft_step (net.n[2],
                               &(SpRaftMsg){ .type = SP_RAFT_MSG_PREVOTE_RESP,
                                             .from = 3,
                                             .to = 2,
                                             .term = term + 7,
                                             .reject = reject },
                               NULL));
      ck_assert_uint_eq (sp_raft_term (net.n[2]), term);
      rd = sp_raft_ready (net.n[2]);
      before = rd->hard_state;
      ck_assert (!rd->hard_state_changed);
      ck_assert_uint_eq (before.term, term);
      sp_raft_advance (net.n[2], rd);
    }

  /* The same as a pre-candidate: a rejection of a higher term counts as a
   * rejection and nothing else. */
  net_tick (&net, 2, 20);
  ck_assert_int_eq (sp_raft_role (net.n[2]), SP_RAFT_PRE_CANDIDATE);
  ck_assert (sp_raft_step (
      net.n[2],
      &(SpRaftMsg){
          .type = SP_RAFT_MSG_PREVOTE_RESP, .from = 3, .to = 2, .term = term + 7, .reject = TRUE },
      NULL));
  ck_assert_uint_eq (sp_raft_term (net.n[2]), term);
  net_clear (&net);
}
END_TEST

/* A node restored from a log of n entries (the first the configuration of
 * voters 1-3), all of term 1, committed up to 1. */
static SpRaft *
restored_follower (guint64 id, guint n)
{
  g_autoptr (GArray) entries = sp_raft_entries_new (n);
  SpRaftRestore rs = { .hard_state = { .term = 1, .commit = 1 }, .entries = entries };
  SpRaftOptions o = options (id);
  SpRaftEntry e = { .term = 1, .index = 1, .type = SP_RAFT_ENTRY_CONF };
  SpRaft *r;

  e.conf = g_rc_box_new (SpRaftConf);
  *e.conf = (SpRaftConf){ .voters = { 1, 2, 3 }, .n_voters = 3 };
  g_array_append_val (entries, e);
  for (guint i = 2; i <= n; i++)
    g_array_append_val (entries, ((SpRaftEntry){ .term = 1, .index = i }));
  r = sp_raft_new (&o, &rs, NULL);
  ck_assert_ptr_nonnull (r);
  return r;
}

/* Raft figure 2: commitIndex = min(leaderCommit, index of last new entry).
 * What follows that entry may be a stale suffix the leader has not
 * checked yet. */
START_TEST (test_follower_commit_bounded_by_last_new_entry)
{
  SpRaft *r = restored_follower (2, 5);

  ck_assert (sp_raft_step (r,
                           &(SpRaftMsg){ .type = SP_RAFT_MSG_APPEND,
                                         .from = 1,
                                         .to = 2,
                                         .term = 2,
                                         .index = 2,
                                         .log_term = 1,
                                         .commit = 5 },
                           NULL));
  ck_assert_uint_eq (sp_raft_last_index (r), 5);
  ck_assert_uint_eq (sp_raft_commit_index (r), 2);
  sp_raft_free (r);
}
END_TEST

/* A duplicated or reordered append of entries the follower holds already
 * changes nothing: what follows them may be newer, acknowledged entries. */
START_TEST (test_follower_never_truncates_entries_it_has)
{
  SpRaft *r = restored_follower (2, 5);
  g_autoptr (GArray) entries = sp_raft_entries_new (2);
  g_autoptr (SpRaftReady) rd = NULL;

  g_array_append_val (entries, ((SpRaftEntry){ .term = 1, .index = 2 }));
  g_array_append_val (entries, ((SpRaftEntry){ .term = 1, .index = 3 }));
  ck_assert (sp_raft_step (r,
                           &(SpRaftMsg){ .type = SP_RAFT_MSG_APPEND,
                                         .from = 1,
                                         .to = 2,
                                         .term = 1,
                                         .index = 1,
                                         .log_term = 1,
                                         .commit = 1,
                                         .entries = entries },
                           NULL));
  ck_assert_uint_eq (sp_raft_last_index (r), 5);
  ck_assert_uint_eq (sp_raft_term_at (r, 5), 1);
  rd = sp_raft_ready (r);
  ck_assert_uint_eq (rd->entries->len, 0);
  sp_raft_advance (r, rd);
  sp_raft_free (r);
}
END_TEST

/* A snapshot whose last entry the follower does not hold with the same term
 * replaces the whole log: the entries after it belong to another history. */
START_TEST (test_conflicting_snapshot_discards_log)
{
  SpRaft *r = restored_follower (2, 5);
  g_autoptr (GBytes) state = g_bytes_new_static ("state", 5);
  SpRaftSnapshot snap
      = { .index = 3, .term = 2, .conf = { .voters = { 1, 2, 3 }, .n_voters = 3 }, .data = state };
  g_autoptr (SpRaftReady) rd = NULL;

  ck_assert (sp_raft_step (
      r,
      &(SpRaftMsg){
          .type = SP_RAFT_MSG_SNAPSHOT, .from = 1, .to = 2, .term = 2, .snapshot = &snap },
      NULL));
  ck_assert_uint_eq (sp_raft_last_index (r), 3);
  ck_assert_uint_eq (sp_raft_term_at (r, 3), 2);
  ck_assert_uint_eq (sp_raft_term_at (r, 4), 0);
  ck_assert_uint_eq (sp_raft_commit_index (r), 3);
  rd = sp_raft_ready (r);
  ck_assert_ptr_nonnull (rd->snapshot);
  ck_assert_uint_eq (rd->entries->len, 0);
  sp_raft_advance (r, rd);
  sp_raft_free (r);
}
END_TEST

/* A learner never campaigns, whatever time passes or is asked of it. */
START_TEST (test_learner_never_campaigns)
{
  Net net;

  net_init (&net, 3, 1);
  elect_first (&net);
  net_isolate (&net, 4, TRUE);
  net_tick (&net, 0, 100);
  ck_assert_int_eq (sp_raft_role (net.n[4]), SP_RAFT_LEARNER);
  ck_assert_uint_eq (net.sent[4][SP_RAFT_MSG_PREVOTE] + net.sent[4][SP_RAFT_MSG_VOTE], 0);
  ck_assert (sp_raft_step (
      net.n[4],
      &(SpRaftMsg){
          .type = SP_RAFT_MSG_TIMEOUT_NOW, .from = 1, .to = 4, .term = sp_raft_term (net.n[4]) },
      NULL));
  net_settle (&net);
  ck_assert_int_eq (sp_raft_role (net.n[4]), SP_RAFT_LEARNER);
  ck_assert_uint_eq (net.sent[4][SP_RAFT_MSG_PREVOTE] + net.sent[4][SP_RAFT_MSG_VOTE], 0);
  net_clear (&net);
}
END_TEST

/* The data of a membership change travels in its CONF entry. */
START_TEST (test_conf_entry_carries_data)
{
  Net net;
  g_autoptr (GBytes) data = g_bytes_new_static ("member n4", 9);
  guint64 with, without;

  net_init (&net, 3, 0);
  elect_first (&net);
  ck_assert (sp_raft_change_membership_with_data (net.n[1], SP_RAFT_CONF_ADD_LEARNER, 4, data,
                                                  &with, NULL));
  net_settle (&net);
  ck_assert (sp_raft_change_membership (net.n[1], SP_RAFT_CONF_REMOVE, 4, &without, NULL));
  net_settle (&net);
  for (guint i = 1; i <= 3; i++)
    {
      const SpRaftEntry *e = sp_raft_entry_at (net.n[i], with);

      ck_assert_uint_ge (net.applied[i], without);
      ck_assert_int_eq (e->type, SP_RAFT_ENTRY_CONF);
      ck_assert (sp_raft_conf_is_learner (e->conf, 4));
      ck_assert (g_bytes_equal (e->data, data));
      ck_assert_ptr_null (sp_raft_entry_at (net.n[i], without)->data);
    }
  net_clear (&net);
}
END_TEST

static Suite *
raft_suite (void)
{
  Suite *s = suite_create ("raft");
  TCase *tc = tcase_create ("core");

  tcase_add_test (tc, test_single_node);
  tcase_add_test (tc, test_election_and_replication);
  tcase_add_test (tc, test_prevote_isolated_node_does_not_disrupt);
  tcase_add_test (tc, test_check_quorum_and_lease);
  tcase_add_test (tc, test_ticks_until_due);
  tcase_add_test (tc, test_appends_in_one_batch_get_one_answer);
  tcase_add_test (tc, test_stickiness_refuses_votes_while_leader_alive);
  tcase_add_test (tc, test_transfer);
  tcase_add_test (tc, test_transfer_request);
  tcase_add_test (tc, test_learner_promotion);
  tcase_add_test (tc, test_snapshot_catch_up);
  tcase_add_test (tc, test_fast_backoff);
  tcase_add_test (tc, test_old_term_entry_not_committed_by_counting);
  tcase_add_test (tc, test_malformed_messages);
  tcase_add_test (tc, test_corrupt_restore);
  tcase_add_test (tc, test_same_term_vote_refused_in_lease);
  tcase_add_test (tc, test_prevote_moves_no_term_or_vote);
  tcase_add_test (tc, test_stale_term_answer_carries_no_stamp);
  tcase_add_test (tc, test_follower_commit_bounded_by_last_new_entry);
  tcase_add_test (tc, test_follower_never_truncates_entries_it_has);
  tcase_add_test (tc, test_conflicting_snapshot_discards_log);
  tcase_add_test (tc, test_learner_never_campaigns);
  tcase_add_test (tc, test_conf_entry_carries_data);
  tcase_add_test (tc, test_non_member_dropped);
  tcase_add_test (tc, test_strangers_leader_messages);
  tcase_add_test (tc, test_forced_vote_needs_notice);
  tcase_add_test (tc, test_forced_vote_before_notice);
  tcase_add_test (tc, test_forged_notice);
  suite_add_tcase (s, tc);
  return s;
}

int
main (void)
{
  SRunner *sr = srunner_create (raft_suite ());
  int failed;

  srunner_run_all (sr, CK_NORMAL);
  failed = srunner_ntests_failed (sr);
  srunner_free (sr);
  return failed == 0 ? 0 : 1;
}
