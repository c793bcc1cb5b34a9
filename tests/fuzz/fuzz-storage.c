/* The storage's readers (daemon/storage.c): what sp_storage_open reads
 * from a data directory — the log, the snapshot and the hard state — on
 * hostile bytes.  The input is [files u8][log length u32 LE][snapshot
 * length u32 LE], then the log, the snapshot, and the hard state (the
 * rest); bit 0 of files says the log exists, bit 1 the snapshot, bit 2 the
 * hard state.  Open either fails with an error or loads a state whose
 * entries follow each other and the snapshot. */
#include "fuzz.h"

#include <stdlib.h>

#include "storage.h"

static size_t
take_len (const uint8_t *p, size_t left)
{
  guint32 len = p[0] | p[1] << 8 | p[2] << 16 | (guint32)p[3] << 24;

  return MIN (len, left);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  g_autofree char *dir = NULL;
  g_auto (SpStorageState) state = { 0 };
  g_autoptr (GError) error = NULL;
  SpStorage *storage;
  size_t log_len, snap_len, at = 9;
  guint8 files;

  sp_fuzz_init ();
  if (size < 9)
    return 0;
  files = data[0];
  log_len = take_len (data + 1, size - at);
  snap_len = take_len (data + 5, size - at - log_len);
  dir = sp_fuzz_make_dir ();
  if (files & 1)
    sp_fuzz_write_file (dir, "log", data + at, log_len);
  at += log_len;
  if (files & 2)
    sp_fuzz_write_file (dir, "snapshot", data + at, snap_len);
  at += snap_len;
  if (files & 4)
    sp_fuzz_write_file (dir, "hardstate", data + at, size - at);

  storage = sp_storage_open (dir, &state, &error);
  if (storage)
    {
      guint64 next = state.snapshot ? state.snapshot->index + 1 : 0;

      for (guint i = 0; i < state.entries->len; i++)
        {
          const SpRaftEntry *e = &g_array_index (state.entries, SpRaftEntry, i);

          if (next != 0 && e->index != next)
            abort ();
          next = e->index + 1;
        }
      sp_storage_free (storage);
    }
  else if (!error || !error->message)
    abort ();
  sp_fuzz_remove_dir (dir);
  return 0;
}
