/* Tests only: what a leader that builds its own entries can do, for the
 * tests that prove every node checks what it applies (tests/rogue-node.c).
 * Compiled only into the sp-node-testing library that tests/meson.build
 * builds (node.c with SP_NODE_TESTING); sparrowd has none of it, and
 * nothing here is reachable over D-Bus or the network. */
#pragma once

#include "node.h"

G_BEGIN_DECLS

/* Proposes data as it is, unchecked: a NORMAL entry, or with add_learner
 * a CONF entry adding that name as a learner and carrying data as its
 * member record.  The leader only; index gets the entry's index. */
gboolean sp_node_testing_propose_raw (SpNode *node, const char *add_learner, GBytes *data,
                                      guint64 *index, GError **error);
/* The store's snapshot as this node would take it. */
GBytes *sp_node_testing_store_snapshot (SpNode *node);
/* Compacts the log at the applied index with data, unchecked, as the
 * snapshot sent to followers that lag behind it. */
gboolean sp_node_testing_compact_raw (SpNode *node, GBytes *data, guint64 *index, GError **error);

G_END_DECLS
