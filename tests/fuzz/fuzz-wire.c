/* The wire decoder (daemon/wire.c) on hostile bytes: the first byte says
 * what the rest is read as (a Raft message of any kind, a log entry, a hard
 * state, a snapshot), as the transport and the storage read them.  What
 * decodes must encode again, and its encoding must decode to the same
 * encoding. */
#include "fuzz.h"

#include <stdlib.h>

#include "wire.h"

static void
same_bytes (GBytes *a, GBytes *b)
{
  if (!g_bytes_equal (a, b))
    abort ();
}

static void
msg (GBytes *in)
{
  g_autoptr (SpRaftMsg) m = sp_wire_msg_from_bytes (in, NULL);
  g_autoptr (SpRaftMsg) again = NULL;
  g_autoptr (GBytes) out = NULL;
  g_autoptr (GBytes) out2 = NULL;

  if (!m)
    return;
  out = sp_wire_msg_to_bytes (m);
  again = sp_wire_msg_from_bytes (out, NULL);
  if (!again)
    abort ();
  out2 = sp_wire_msg_to_bytes (again);
  same_bytes (out, out2);
}

static void
entry (GBytes *in)
{
  SpRaftEntry e = { 0 }, again = { 0 };
  g_autoptr (GBytes) out = NULL;
  g_autoptr (GBytes) out2 = NULL;

  if (!sp_wire_entry_from_bytes (in, &e, NULL))
    return;
  out = sp_wire_entry_to_bytes (&e);
  if (!sp_wire_entry_from_bytes (out, &again, NULL))
    abort ();
  out2 = sp_wire_entry_to_bytes (&again);
  same_bytes (out, out2);
  sp_raft_entry_clear (&e);
  sp_raft_entry_clear (&again);
}

static void
hard_state (GBytes *in)
{
  SpRaftHardState hs, again;
  g_autoptr (GBytes) out = NULL;

  if (!sp_wire_hard_state_from_bytes (in, &hs, NULL))
    return;
  out = sp_wire_hard_state_to_bytes (&hs);
  if (!sp_wire_hard_state_from_bytes (out, &again, NULL) || again.term != hs.term
      || again.vote != hs.vote || again.commit != hs.commit)
    abort ();
}

static void
snapshot (GBytes *in)
{
  g_autoptr (SpRaftSnapshot) s = sp_wire_snapshot_from_bytes (in, NULL);
  g_autoptr (SpRaftSnapshot) again = NULL;
  g_autoptr (GBytes) out = NULL;
  g_autoptr (GBytes) out2 = NULL;

  if (!s)
    return;
  out = sp_wire_snapshot_to_bytes (s);
  again = sp_wire_snapshot_from_bytes (out, NULL);
  if (!again)
    abort ();
  out2 = sp_wire_snapshot_to_bytes (again);
  same_bytes (out, out2);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  g_autoptr (GBytes) in = NULL;

  sp_fuzz_init ();
  if (size < 1)
    return 0;
  /* A copy of exactly the record, as the transport and the storage pass. */
  in = g_bytes_new (data + 1, size - 1);
  switch (data[0] % 4)
    {
      case 0:
        msg (in);
        break;
      case 1:
        entry (in);
        break;
      case 2:
        hard_state (in);
        break;
      default:
        snapshot (in);
        break;
    }
  return 0;
}
