/* The cluster simulator as a test: seeded schedules per cluster size, all
 * safety properties checked after every event, liveness after each heal;
 * and every seed that ever failed, as a named regression.
 *
 *   test-raft-sim [3|5|7|regressions]   one part (default: all)
 *   SPARROW_SIM_SCHEDULES=N             schedules per size (soak runs)
 *   SPARROW_SIM_SEED=S                  replay one seed, printing its trace
 *
 * Each size runs its own seeds, the ones sparrow-sim gives that size when
 * it cycles through them (3 nodes: 1, 4, 7...; 5 nodes: 2, 5, 8...), so
 * no schedule is run twice and a seed alone names a schedule. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"

/* 6,000 in all: about 30 s under ASan+UBSan on 2 cores, sizes in
 * parallel.  Soak runs set SPARROW_SIM_SCHEDULES. */
#define DEFAULT_SCHEDULES 2000
#define TRACE_TAIL        60

static const guint sizes[] = { 3, 5, 7 };
static const char *const names[] = { "3-nodes", "5-nodes", "7-nodes" };

/* Seeds that failed once: each must keep passing. */
static const struct
{
  guint64 seed;
  guint n_nodes;
  gboolean plain; /* recorded before write latency and lingering nodes */
  const char *what;
} regressions[] = {
  { 8423, 3, TRUE,
    "lease hole: a rejected pre-vote answer of a higher term moved an in-lease voter's term "
    "and cleared its leader, then it granted a vote of that same term" },
  { 17524, 3, FALSE,
    "checker: a forged forced Vote with the identity of the target its leader was handing over "
    "to, stepped in the batch that decided the transfer, was taken for an attack" },
  { 48389, 5, FALSE, "checker: the same, a forced PreVote counted against the leader's promise" },
};

static guint64
env_u64 (const char *name, guint64 fallback)
{
  const char *v = g_getenv (name);

  return v && *v ? g_ascii_strtoull (v, NULL, 10) : fallback;
}

/* Runs one schedule; on a failure prints how to replay it and aborts. */
static void
run_schedule (guint64 seed, guint n_nodes, gboolean plain, gboolean trace, SpSimStats *total)
{
  SpSimOptions o = { .seed = seed, .n_nodes = n_nodes, .print_trace = trace, .plain = plain };
  SpSim *sim = sp_sim_new (&o);
  char failure[1024];

  if (sp_sim_run (sim))
    {
      sp_sim_stats_add (total, sp_sim_get_stats (sim));
      sp_sim_free (sim);
      return;
    }
  {
    g_autofree char *tail = sp_sim_get_trace (sim, TRACE_TAIL);

    printf ("seed %" G_GUINT64_FORMAT ", %u nodes: %s\nlast events:\n%s"
            "replay: sparrow-sim --seed %" G_GUINT64_FORMAT " --nodes %u%s\n",
            seed, n_nodes, sp_sim_get_failure (sim), tail, seed, n_nodes, plain ? " --plain" : "");
    if (!plain)
      printf ("  (or: SPARROW_SIM_SEED=%" G_GUINT64_FORMAT " test-raft-sim %u)\n", seed, n_nodes);
    fflush (stdout);
  }
  g_snprintf (failure, sizeof failure, "seed %" G_GUINT64_FORMAT ", %u nodes: %s", seed, n_nodes,
              sp_sim_get_failure (sim));
  /* Freed before aborting: the failure path must not leak either. */
  sp_sim_free (sim);
  ck_abort_msg ("%s", failure);
}

START_TEST (test_schedules)
{
  guint n_nodes = sizes[_i];
  guint64 replay = env_u64 ("SPARROW_SIM_SEED", 0);
  guint64 count = replay ? 1 : env_u64 ("SPARROW_SIM_SCHEDULES", DEFAULT_SCHEDULES);
  SpSimStats total = { 0 };
  gint64 start = g_get_monotonic_time ();

  for (guint64 k = 0; k < count; k++)
    run_schedule (replay ? replay : k * G_N_ELEMENTS (sizes) + (guint64)_i + 1, n_nodes, FALSE,
                  replay != 0, &total);
  printf ("%u nodes: %" G_GUINT64_FORMAT " schedules, %" G_GUINT64_FORMAT
          " events, %" G_GUINT64_FORMAT " elections, %" G_GUINT64_FORMAT
          " proposals committed, %" G_GUINT64_FORMAT " snapshots installed, %" G_GUINT64_FORMAT
          " membership changes, %" G_GUINT64_FORMAT " transfers (%" G_GUINT64_FORMAT
          " asked by %" G_GUINT64_FORMAT " follower requests), %" G_GUINT64_FORMAT
          " crashes in %.1f s\n",
          n_nodes, count, total.events, total.elections, total.committed, total.snapshots,
          total.conf_changes, total.transfers, total.forwarded, total.requests, total.crashes,
          (g_get_monotonic_time () - start) / 1e6);
  fflush (stdout);
}
END_TEST

START_TEST (test_regression)
{
  SpSimStats total = { 0 };

  printf ("seed %" G_GUINT64_FORMAT ", %u nodes: %s\n", regressions[_i].seed,
          regressions[_i].n_nodes, regressions[_i].what);
  fflush (stdout);
  run_schedule (regressions[_i].seed, regressions[_i].n_nodes, regressions[_i].plain, FALSE,
                &total);
}
END_TEST

int
main (int argc, char **argv)
{
  const char *only = argc > 1 ? argv[1] : NULL;
  Suite *suite;
  SRunner *runner;
  int failed;

  if (only && strcmp (only, "3") != 0 && strcmp (only, "5") != 0 && strcmp (only, "7") != 0
      && strcmp (only, "regressions") != 0)
    {
      fprintf (stderr, "usage: %s [3|5|7|regressions]\n", argv[0]);
      return 2;
    }
  suite = suite_create ("raft-sim");
  for (guint i = 0; i < G_N_ELEMENTS (sizes); i++)
    {
      TCase *tc;

      if (only && (guint)atoi (only) != sizes[i])
        continue;
      tc = tcase_create (names[i]);
      /* Check's default of 4 s is far too short for hundreds of schedules. */
      tcase_set_timeout (tc, 600);
      tcase_add_loop_test (tc, test_schedules, (int)i, (int)i + 1);
      suite_add_tcase (suite, tc);
    }
  if (!only || strcmp (only, "regressions") == 0)
    {
      TCase *tc = tcase_create ("regressions");

      tcase_set_timeout (tc, 600);
      tcase_add_loop_test (tc, test_regression, 0, G_N_ELEMENTS (regressions));
      suite_add_tcase (suite, tc);
    }
  runner = srunner_create (suite);
  srunner_run_all (runner, CK_NORMAL);
  failed = srunner_ntests_failed (runner);
  srunner_free (runner);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
