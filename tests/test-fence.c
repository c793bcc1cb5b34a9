/* The fence arithmetic (daemon/fence.c), and where a new leader's fence
 * counts from: the latest moment any voter that elected it may have heard
 * the old leader, each voter's count scaled down for a clock 5 % fast. */
#include <check.h>

#include "fence.h"
#include "raft.h"

static SpConfig
timings (guint heartbeat, guint election)
{
  return (SpConfig){ .heartbeat_ms = heartbeat,
                     .election_ms = election,
                     .fence = TRUE,
                     .keeper_ms = SP_CONFIG_DEFAULT_KEEPER_MS,
                     .leader_watchdog_ms = heartbeat + SP_CONFIG_LEADER_WATCHDOG_MARGIN_MS,
                     .cleanup_ms = SP_CONFIG_DEFAULT_CLEANUP_MS };
}

START_TEST (test_defaults)
{
  SpConfig c = timings (250, 600);

  ck_assert_uint_eq (sp_fence_tick_ms (&c), 10);
  ck_assert_uint_eq (sp_fence_lease_ms (&c), 530);
  /* (530 + 20) × 1.05 + 10 */
  ck_assert_uint_eq (sp_fence_ms (&c), 587);
  ck_assert_uint_eq (sp_fence_bound_ms (&c), 587);
  /* Shorter than an election (600 ms less a tick of phase): no wait. */
  ck_assert_uint_eq (sp_fence_wait_ms (&c), 0);
  /* The double fault: (530 + 450 + 250 + 200) × 1.05 + 10, the old fence. */
  ck_assert_uint_eq (sp_fence_backstop_ms (&c), 1511);

  c.fence = FALSE;
  ck_assert_uint_eq (sp_fence_ms (&c), 0);
  ck_assert_uint_eq (sp_fence_wait_ms (&c), 0);
  ck_assert_uint_eq (sp_fence_bound_ms (&c), 587);
}
END_TEST

/* Only the lease and the keeper are the fence; the watchdog and the
 * clean-up are the backstop's. */
START_TEST (test_parts)
{
  SpConfig c = timings (250, 600);

  c.keeper_ms = 120;
  ck_assert_uint_eq (sp_fence_ms (&c), (530 + 120) * 21 / 20 + 10);
  c.leader_watchdog_ms = 2000;
  c.cleanup_ms = 1000;
  ck_assert_uint_eq (sp_fence_ms (&c), (530 + 120) * 21 / 20 + 10);
  ck_assert_uint_eq (sp_fence_backstop_ms (&c), (530 + 2000 + 250 + 1000) * 21 / 20 + 10);
}
END_TEST

START_TEST (test_tuned_and_odd_ticks)
{
  /* heartbeat 50, election 150: tick 10, lease (15 - 1) × 19 / 21 = 12
   * ticks; the fence (140 × 1.05 + 10 = 157) outlasts an election's 140. */
  SpConfig c = timings (50, 150);

  ck_assert_uint_eq (sp_fence_lease_ms (&c), 120);
  ck_assert_uint_eq (sp_fence_ms (&c), 157);
  ck_assert_uint_eq (sp_fence_wait_ms (&c), 17);

  /* gcd 7: a 7 ms tick, counted once more as phase. */
  c = timings (35, 77);
  ck_assert_uint_eq (sp_fence_tick_ms (&c), 7);
  ck_assert_uint_eq (sp_fence_lease_ms (&c), (11 - 1) * 19 / 21 * 7);
  ck_assert_uint_eq (sp_fence_ms (&c), (63 + 20) * 21 / 20 + 7);
}
END_TEST

START_TEST (test_runtime)
{
  SpFence f;
  const gint64 now = 1000000000;

  sp_fence_clear (&f);
  ck_assert (!sp_fence_started (&f));
  ck_assert (!sp_fence_over (&f, now));
  ck_assert_uint_eq (sp_fence_left_ms (&f, now, 500), 0);

  /* Heard 30 ticks of 10 ms ago: the fence ends 587 - 300 ms from now. */
  sp_fence_start (&f, now, 30, 10, 587, FALSE);
  ck_assert (sp_fence_started (&f));
  ck_assert_int_eq (f.from, now - 300000);
  ck_assert (!sp_fence_over (&f, now + 286999));
  ck_assert (sp_fence_over (&f, now + 287000));
  ck_assert_uint_eq (sp_fence_left_ms (&f, now, 0), 287);
  ck_assert_uint_eq (sp_fence_left_ms (&f, now + 1, 0), 287);
  /* The leader target: units-stop-ms after the addresses. */
  ck_assert_uint_eq (sp_fence_left_ms (&f, now, 500), 787);
  ck_assert_uint_eq (sp_fence_left_ms (&f, now + 787000, 500), 0);

  /* Heard long before the election: over at once, the units' wait still
   * counted from the fence's end. */
  sp_fence_start (&f, now, 100, 10, 587, FALSE);
  ck_assert (sp_fence_over (&f, now));
  ck_assert_uint_eq (sp_fence_left_ms (&f, now, 500), 87);

  /* A transfer, or fence = false: nothing to wait for. */
  sp_fence_start (&f, now, 0, 10, 587, TRUE);
  ck_assert (sp_fence_over (&f, now));
  ck_assert_uint_eq (sp_fence_left_ms (&f, now, 500), 0);
  sp_fence_start (&f, now, 0, 10, 0, FALSE);
  ck_assert (sp_fence_over (&f, now));
  ck_assert_uint_eq (sp_fence_left_ms (&f, now, 500), 0);

  sp_fence_clear (&f);
  ck_assert (!sp_fence_over (&f, now + 10000000));
}
END_TEST

/* The folding of one granted vote, on its own. */
START_TEST (test_fold_vote_age)
{
  /* The candidate heard its leader 1000 ticks ago; a voter 105 of its
   * own, at most 100 real ones: that is the later hearing. */
  ck_assert_uint_eq (sp_raft_fold_vote_age (5000 - 1000, 5000, 105), 5000 - 100);
  /* An earlier hearing moves nothing back. */
  ck_assert_uint_eq (sp_raft_fold_vote_age (4900, 5000, 300), 4900);
  /* Older than the candidate's clock: from its start. */
  ck_assert_uint_eq (sp_raft_fold_vote_age (0, 50, 1000), 0);
  ck_assert_uint_eq (sp_raft_fold_vote_age (0, 50, G_MAXUINT64), 0);
}
END_TEST

/* ---- the asymmetric case in real cores ---------------------------------- */

#define N 3

typedef struct
{
  SpRaft *n[N + 1];
  gboolean cut[N + 1][N + 1];
  gboolean stalled[N + 1];
  guint64 round;
  guint64 heard[N + 1]; /* the round each last stepped a message of watched */
  guint64 watched;
} Net;

static void
settle (Net *net)
{
  gboolean busy = TRUE;

  while (busy)
    {
      busy = FALSE;
      for (guint i = 1; i <= N; i++)
        {
          g_autoptr (SpRaftReady) rd = NULL;

          if (net->stalled[i] || !sp_raft_has_ready (net->n[i]))
            continue;
          busy = TRUE;
          rd = sp_raft_ready (net->n[i]);
          sp_raft_advance (net->n[i], rd);
          for (guint k = 0; k < rd->messages->len; k++)
            {
              SpRaftMsg *m = g_ptr_array_index (rd->messages, k);

              if (m->to < 1 || m->to > N || net->cut[i][m->to] || net->stalled[m->to])
                continue;
              if (i == net->watched)
                net->heard[m->to] = net->round;
              sp_raft_step (net->n[m->to], m, NULL);
            }
        }
    }
}

/* One round of real time: every running node ticks once, fast one more
 * every 20th round (5 % fast). */
static void
round_ (Net *net, guint64 fast)
{
  net->round++;
  for (guint i = 1; i <= N; i++)
    if (!net->stalled[i])
      {
        sp_raft_tick (net->n[i]);
        if (i == fast && net->round % 20 == 0)
          sp_raft_tick (net->n[i]);
      }
  settle (net);
}

static guint64
leader_of (Net *net)
{
  for (guint i = 1; i <= N; i++)
    if (!net->stalled[i] && sp_raft_role (net->n[i]) == SP_RAFT_LEADER)
      return i;
  return 0;
}

/* A partition cut only the candidate off from the old leader, long ago;
 * then the old leader stalls and the candidate wins with the other
 * voter's vote.  Its fence must count from that voter's hearing (not its
 * own, much older), scaled for the voter's clock running 5 % fast.
 * FALSE when the other voter campaigned first (that seed does not make
 * the case). */
static gboolean
asymmetric (guint64 seed)
{
  Net net = { 0 };
  SpRaftConf conf = { .voters = { 1, 2, 3 }, .n_voters = 3 };
  guint64 old, cand, voter, won = 0;
  gboolean made;

  for (guint i = 1; i <= N; i++)
    {
      SpRaftOptions o = { .id = i, .heartbeat_ticks = 1, .election_ticks = 100, .seed = seed + i };
      SpRaftRestore rs = { .bootstrap = &conf };

      net.n[i] = sp_raft_new (&o, &rs, NULL);
      ck_assert_ptr_nonnull (net.n[i]);
    }
  while (!(old = leader_of (&net)))
    round_ (&net, 0);
  cand = old % N + 1;
  voter = cand % N + 1;
  net.watched = old;

  /* Only the candidate loses the old leader; the voter keeps it. */
  net.cut[old][cand] = net.cut[cand][old] = TRUE;
  for (guint i = 0; i < 1000; i++)
    round_ (&net, voter);
  ck_assert_uint_eq (leader_of (&net), old);
  ck_assert_uint_ge (net.round - net.heard[cand], 1000);

  net.stalled[old] = TRUE;
  while (!won && net.round < 100000)
    {
      round_ (&net, voter);
      won = leader_of (&net);
    }
  ck_assert_uint_ne (won, 0);
  made = won == cand;
  if (made)
    {
      guint age = sp_raft_heard_age (net.n[cand]);
      guint64 real = net.round - net.heard[voter];

      /* Never earlier than the latest hearing: the fence would end before
       * the old lease does on the voter's side. */
      ck_assert_msg (age <= real,
                     "fence counts from %u ticks ago; the voter heard the old "
                     "leader %" G_GUINT64_FORMAT " ago",
                     age, real);
      /* ... and not much later either: the drift scaling, a tick. */
      ck_assert_msg (age + 1 >= real * 20 / 21,
                     "fence counts from %u ticks ago, real %" G_GUINT64_FORMAT, age, real);
      ck_assert_uint_ge (real, 90);
    }
  for (guint i = 1; i <= N; i++)
    sp_raft_free (net.n[i]);
  return made;
}

START_TEST (test_asymmetric_partition_then_stall)
{
  guint made = 0;

  for (guint64 seed = 1; seed <= 40 && made < 5; seed++)
    made += asymmetric (seed);
  ck_assert_msg (made >= 5, "only %u seed(s) of 40 made the cut-off node win", made);
}
END_TEST

static Suite *
fence_suite (void)
{
  Suite *s = suite_create ("fence");
  TCase *tc = tcase_create ("fence");

  tcase_add_test (tc, test_defaults);
  tcase_add_test (tc, test_parts);
  tcase_add_test (tc, test_tuned_and_odd_ticks);
  tcase_add_test (tc, test_runtime);
  tcase_add_test (tc, test_fold_vote_age);
  tcase_add_test (tc, test_asymmetric_partition_then_stall);
  suite_add_tcase (s, tc);
  return s;
}

int
main (void)
{
  SRunner *sr = srunner_create (fence_suite ());
  int failed;

  srunner_run_all (sr, CK_NORMAL);
  failed = srunner_ntests_failed (sr);
  srunner_free (sr);
  return failed ? 1 : 0;
}
