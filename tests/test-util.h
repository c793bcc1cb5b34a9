/* Helpers the unit tests share (Check assertions). */
#pragma once

#include "raft.h"

/* Deletes path and everything below it; fails the test on an error. */
void sp_test_remove_tree (const char *path);

/* Field-by-field equality, failing the test on the first difference. */
void sp_test_assert_entry_eq (const SpRaftEntry *a, const SpRaftEntry *b);
void sp_test_assert_snapshot_eq (const SpRaftSnapshot *a, const SpRaftSnapshot *b);
void sp_test_assert_msg_eq (const SpRaftMsg *a, const SpRaftMsg *b);
