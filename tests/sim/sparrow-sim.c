/* sparrow-sim: runs seeded cluster schedules against the Raft core and
 * prints a summary; --seed replays one schedule with its full trace. */
#include <stdlib.h>

#include "sim.h"

#define TRACE_TAIL 60

static const guint sizes[] = { 3, 5, 7 };

typedef struct
{
  guint schedules;
  SpSimStats stats;
} SizeTotals;

static void
print_row (const char *label, const SizeTotals *t)
{
  const SpSimStats *s = &t->stats;

  g_print ("  %-6s %9u %10" G_GUINT64_FORMAT " %9" G_GUINT64_FORMAT " %9" G_GUINT64_FORMAT
           " %9" G_GUINT64_FORMAT " %9" G_GUINT64_FORMAT " %9" G_GUINT64_FORMAT
           " %9" G_GUINT64_FORMAT " %9" G_GUINT64_FORMAT " %9" G_GUINT64_FORMAT
           " %9" G_GUINT64_FORMAT "\n",
           label, t->schedules, s->events, s->elections, s->committed, s->snapshots,
           s->conf_changes, s->transfers, s->requests, s->forwarded, s->crashes, s->compactions);
}

int
main (int argc, char **argv)
{
  gint schedules = 300, nodes = 0;
  gint64 seed = 0;
  gboolean trace = FALSE, plain = FALSE;
  GOptionEntry entries[] = {
    { "nodes", 'n', 0, G_OPTION_ARG_INT, &nodes,
      "Cluster size: 3, 5 or 7 (default: 3, 5, 7 in turn)", "N" },
    { "schedules", 's', 0, G_OPTION_ARG_INT, &schedules, "Schedules to run (default 300)", "N" },
    { "seed", 0, 0, G_OPTION_ARG_INT64, &seed, "Replay the schedule of this seed with its trace",
      "S" },
    { "trace", 't', 0, G_OPTION_ARG_NONE, &trace, "Print every event of every schedule", NULL },
    { "plain", 0, 0, G_OPTION_ARG_NONE, &plain,
      "Schedules as first recorded: no write latency, removed nodes shut down at once, no pace "
      "check",
      NULL },
    { NULL },
  };
  g_autoptr (GOptionContext) context = g_option_context_new (
      "- check the Raft core through crashes, partitions, loss and membership changes");
  g_autoptr (GError) error = NULL;
  SizeTotals per_size[G_N_ELEMENTS (sizes)] = { 0 }, total = { 0 };
  guint64 first = 1;
  gint64 start;
  double secs;

  g_option_context_add_main_entries (context, entries, NULL);
  if (!g_option_context_parse (context, &argc, &argv, &error))
    {
      g_printerr ("sparrow-sim: %s\n", error->message);
      return 2;
    }
  if (nodes != 0 && nodes != 3 && nodes != 5 && nodes != 7)
    {
      g_printerr ("sparrow-sim: --nodes must be 3, 5 or 7\n");
      return 2;
    }
  if (schedules < 1 || seed < 0)
    {
      g_printerr ("sparrow-sim: --schedules must be positive and --seed not negative\n");
      return 2;
    }
  if (seed > 0)
    {
      first = (guint64)seed;
      schedules = 1;
      trace = TRUE;
    }

  start = g_get_monotonic_time ();
  for (guint64 seed_i = first; seed_i < first + (guint64)schedules; seed_i++)
    {
      /* Without --nodes the seed picks the size, so a seed alone replays. */
      guint size_i = (guint)((seed_i - 1) % G_N_ELEMENTS (sizes));
      SpSimOptions o = {
        .seed = seed_i,
        .n_nodes = nodes ? (guint)nodes : sizes[size_i],
        .print_trace = trace,
        .plain = plain,
      };
      g_autoptr (SpSim) sim = sp_sim_new (&o);

      if (!sp_sim_run (sim))
        {
          g_autofree char *tail = sp_sim_get_trace (sim, TRACE_TAIL);

          g_print ("sparrow-sim: FAILED after %" G_GUINT64_FORMAT
                   " schedules: seed %" G_GUINT64_FORMAT ", %u nodes\n  %s\n",
                   seed_i - first, seed_i, o.n_nodes, sp_sim_get_failure (sim));
          if (!trace)
            g_print ("last events:\n%s", tail);
          g_print ("replay: sparrow-sim --seed %" G_GUINT64_FORMAT " --nodes %u%s\n", seed_i,
                   o.n_nodes, plain ? " --plain" : "");
          return 1;
        }
      for (guint i = 0; i < G_N_ELEMENTS (sizes); i++)
        if (sizes[i] == o.n_nodes)
          {
            per_size[i].schedules++;
            sp_sim_stats_add (&per_size[i].stats, sp_sim_get_stats (sim));
          }
      total.schedules++;
      sp_sim_stats_add (&total.stats, sp_sim_get_stats (sim));
    }
  secs = (g_get_monotonic_time () - start) / 1e6;

  g_print ("sparrow-sim: %u schedules in %.1f s (%.1f schedules/s), %.0f s simulated\n",
           total.schedules, secs, total.schedules / secs, total.stats.sim_us / 1e6);
  g_print ("  %-6s %9s %10s %9s %9s %9s %9s %9s %9s %9s %9s %9s\n", "nodes", "schedules", "events",
           "elections", "committed", "snapshots", "members", "transfers", "requests", "forwarded",
           "crashes", "compacts");
  for (guint i = 0; i < G_N_ELEMENTS (sizes); i++)
    if (per_size[i].schedules > 0)
      {
        char label[8];

        g_snprintf (label, sizeof label, "%u", sizes[i]);
        print_row (label, &per_size[i]);
      }
  print_row ("total", &total);
  g_print ("  (committed: client proposals applied; members: membership changes committed)\n");
  g_print ("  %" G_GUINT64_FORMAT " proposals accepted by a leader, %" G_GUINT64_FORMAT
           " client requests refused (not leader, change pending...)\n",
           total.stats.proposals, total.stats.refused);
  g_print ("  a leader lease was held %.0f %% of the simulated time; slowest recovery after a "
           "heal: %.0f ms\n",
           100.0 * total.stats.leased_us / total.stats.sim_us, total.stats.heal_us / 1e3);
  g_print ("all checks held: election safety, vote uniqueness, log matching, leader "
           "completeness, state-machine safety, durability, lease safety, lease premise, "
           "stickiness, pre-vote moves no term, follower commit, check-quorum, transfer bound, "
           "membership, liveness and pace after heal\n");
  return EXIT_SUCCESS;
}
