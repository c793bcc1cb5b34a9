/* sparrow — deterministic cluster simulator for the Raft core.
 *
 * One seed decides everything: node clock drift and phase, message delay,
 * loss, duplication and reordering, partitions (symmetric and one-way),
 * crashes and restarts (only what was persisted survives), how long disk
 * writes take, client proposals, membership changes (removed nodes shut
 * down at once, later or never), leadership transfers (asked of the leader, or by a follower of it)
 * and snapshots. A schedule is a chaos phase followed by a heal phase.  Safety, lease,
 * check-quorum, transfer and membership properties are checked after
 * every event, liveness once the faults are healed. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct
{
  guint64 seed;
  guint n_nodes;        /* initial voters, 3 to 7 */
  gboolean print_trace; /* print every trace line as it happens */
  /* Only what the first recorded schedules had: writes done at once,
   * removed nodes shut down at once, no pace window.  For seeds recorded
   * before those were modelled: they replay exactly. */
  gboolean plain;
} SpSimOptions;

typedef struct
{
  guint64 events;
  guint64 sim_us;       /* simulated time */
  guint64 elections;    /* terms that got a leader */
  guint64 proposals;    /* client proposals a leader accepted */
  guint64 refused;      /* client requests refused (not leader, change pending...) */
  guint64 committed;    /* client proposals applied */
  guint64 snapshots;    /* snapshots installed from a leader */
  guint64 compactions;  /* local snapshots taken */
  guint64 conf_changes; /* membership changes committed */
  guint64 transfers;    /* leadership transfers started */
  guint64 requests;     /* transfer requests followers sent their leader */
  guint64 forwarded;    /* transfers started on such a request */
  guint64 crashes;
  guint64 leased_us; /* simulated time during which some node held a valid lease */
  guint64 heal_us;   /* from the heal to a new write applied everywhere */
} SpSimStats;

typedef struct _SpSim SpSim;

SpSim *sp_sim_new (const SpSimOptions *opts);
void sp_sim_free (SpSim *sim);

/* Runs the whole schedule; FALSE when a property was violated. */
gboolean sp_sim_run (SpSim *sim);

const SpSimStats *sp_sim_get_stats (const SpSim *sim);
/* The violated property and its details, NULL if all held. */
const char *sp_sim_get_failure (const SpSim *sim);
/* The last max_lines trace lines, one per line. */
char *sp_sim_get_trace (const SpSim *sim, guint max_lines);

void sp_sim_stats_add (SpSimStats *sum, const SpSimStats *s);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (SpSim, sp_sim_free)

G_END_DECLS
