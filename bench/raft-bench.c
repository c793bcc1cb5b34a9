/* raft-bench: throughput of the Raft core alone.  Three in-memory cores are
 * wired directly (every message of a ready is delivered at once, none is
 * lost, nothing touches a disk); proposals go to the leader in batches and
 * the count applied on the leader per second is reported per batch size. */
#include <stdio.h>
#include <stdlib.h>

#include "raft.h"

#define N_NODES       3
#define PAYLOAD_BYTES 64
#define RUN_US        (2 * G_USEC_PER_SEC)
#define COMPACT_EVERY 4096 /* entries: keeps the in-memory logs bounded */

typedef struct
{
  SpRaft *nodes[N_NODES + 1];
  guint64 applied[N_NODES + 1];
  GQueue inbox; /* of SpRaftMsg *, in send order */
} Cluster;

static void
process (Cluster *c, guint64 id)
{
  SpRaft *r = c->nodes[id];

  while (sp_raft_has_ready (r))
    {
      g_autoptr (SpRaftReady) rd = sp_raft_ready (r);
      gsize n = 0;
      g_autofree SpRaftMsg **msgs = (SpRaftMsg **)g_ptr_array_steal (rd->messages, &n);

      for (gsize i = 0; i < n; i++)
        g_queue_push_tail (&c->inbox, msgs[i]);
      if (rd->snapshot)
        c->applied[id] = rd->snapshot->index;
      if (rd->committed->len > 0)
        c->applied[id] = g_array_index (rd->committed, SpRaftEntry, rd->committed->len - 1).index;
      sp_raft_advance (r, rd);
    }
}

/* Runs readies and deliveries until the cluster is quiet. */
static void
settle (Cluster *c)
{
  SpRaftMsg *m;

  for (guint64 id = 1; id <= N_NODES; id++)
    process (c, id);
  while ((m = g_queue_pop_head (&c->inbox)))
    {
      guint64 to = m->to;

      sp_raft_step (c->nodes[to], m, NULL);
      sp_raft_msg_free (m);
      process (c, to);
    }
}

static guint64
leader_of (const Cluster *c)
{
  for (guint64 id = 1; id <= N_NODES; id++)
    if (sp_raft_role (c->nodes[id]) == SP_RAFT_LEADER)
      return id;
  return SP_RAFT_NONE;
}

static void
cluster_init (Cluster *c)
{
  SpRaftConf conf = { .n_voters = N_NODES };

  *c = (Cluster){ 0 };
  g_queue_init (&c->inbox);
  for (guint i = 0; i < N_NODES; i++)
    conf.voters[i] = i + 1;
  for (guint64 id = 1; id <= N_NODES; id++)
    {
      SpRaftOptions o = { .id = id, .heartbeat_ticks = 1, .election_ticks = 10, .seed = id };
      SpRaftRestore rs = { .bootstrap = &conf };
      g_autoptr (GError) error = NULL;

      c->nodes[id] = sp_raft_new (&o, &rs, &error);
      if (!c->nodes[id])
        g_error ("cannot create node %" G_GUINT64_FORMAT ": %s", id, error->message);
    }
  /* Ticks only until a leader is elected: afterwards nothing times out. */
  while (leader_of (c) == SP_RAFT_NONE)
    {
      for (guint64 id = 1; id <= N_NODES; id++)
        sp_raft_tick (c->nodes[id]);
      settle (c);
    }
}

static void
cluster_clear (Cluster *c)
{
  g_queue_clear_full (&c->inbox, (GDestroyNotify)sp_raft_msg_free);
  for (guint64 id = 1; id <= N_NODES; id++)
    sp_raft_free (c->nodes[id]);
}

static void
maybe_compact (Cluster *c)
{
  for (guint64 id = 1; id <= N_NODES; id++)
    if (c->applied[id] >= sp_raft_first_index (c->nodes[id]) + COMPACT_EVERY)
      sp_raft_compact (c->nodes[id], c->applied[id], NULL, NULL);
}

static void
run (guint batch)
{
  static const guint8 payload[PAYLOAD_BYTES] = { 0 };
  Cluster c;
  guint64 leader, first, proposed = 0, committed;
  gint64 start, elapsed;

  cluster_init (&c);
  leader = leader_of (&c);
  first = c.applied[leader];
  start = g_get_monotonic_time ();
  do
    {
      for (guint i = 0; i < batch; i++)
        {
          g_autoptr (GBytes) data = g_bytes_new (payload, sizeof payload);
          g_autoptr (GError) error = NULL;

          if (!sp_raft_propose (c.nodes[leader], data, NULL, &error))
            g_error ("proposal refused: %s", error->message);
        }
      proposed += batch;
      settle (&c);
      maybe_compact (&c);
      elapsed = g_get_monotonic_time () - start;
    }
  while (elapsed < RUN_US);

  committed = c.applied[leader] - first;
  if (committed != proposed)
    g_error ("%" G_GUINT64_FORMAT " proposals but %" G_GUINT64_FORMAT " applied", proposed,
             committed);
  printf ("  %6u %12" G_GUINT64_FORMAT " %8.2f %14.0f %12.2f\n", batch, committed, elapsed / 1e6,
          committed / (elapsed / 1e6), (double)elapsed / committed);
  cluster_clear (&c);
}

int
main (void)
{
  static const guint batches[] = { 1, 16, 256 };

  printf ("raft-bench: %d in-memory nodes, %d-byte proposals, messages delivered at once\n",
          N_NODES, PAYLOAD_BYTES);
  printf ("  %6s %12s %8s %14s %12s\n", "batch", "committed", "seconds", "proposals/s",
          "us/proposal");
  for (guint i = 0; i < G_N_ELEMENTS (batches); i++)
    run (batches[i]);
  return EXIT_SUCCESS;
}
