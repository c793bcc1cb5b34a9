/* Durable Raft state; see storage.h for the guarantees.
 *
 * `snapshot`: a 20-byte header, then the payload (sp_wire_snapshot_to_bytes):
 *   0  magic "SPSN"
 *   4  u32 version (1)
 *   8  u32 crc32c of the payload
 *   12 u64 payload length
 * `hardstate`: exactly two slots of HS_SLOT_SIZE bytes (one page each, so
 * that writing one never rewrites the other's blocks), written in place in
 * turn: sequence number s goes to slot s % 2.  Each slot:
 *   0  magic "SPHS"
 *   4  u32 version (2)
 *   8  u32 crc32c of bytes 12 .. 24 + length (sequence, length, payload)
 *   12 u64 sequence number
 *   20 u32 payload length
 *   24 payload (sp_wire_hard_state_to_bytes), then zeros to the slot's end
 * The file is created whole (the first hard state in both slots, sequence
 * numbers 0 and 1) by a temporary, fsync, rename and directory fsync, as the
 * snapshot is.  After that every write goes in place to the slot that does
 * not hold the last synced hard state, so that one stays intact: a new term
 * or vote is written there and fdatasynced (it becomes the synced slot); a
 * change of the commit index alone is written there without a sync, since
 * Raft's commit index is volatile and a node that loses it re-learns it from
 * the leader.  The valid slot with the higher sequence number holds the hard
 * state; one damaged slot is the torn last write and the other slot is used.
 * `log`: records [u32 payload length][u32 crc32c of the payload][payload =
 * sp_wire_entry_to_bytes], holding consecutive indexes.  All integers are
 * little-endian. */
#include "storage.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "wire.h"

G_DEFINE_QUARK (sp - storage - error - quark, sp_storage_error)

#define FILE_VERSION       1
#define FILE_HEADER_SIZE   20
#define RECORD_HEADER_SIZE 8
#define HARDSTATE_FILE     "hardstate"
#define HARDSTATE_MAGIC    "SPHS"
#define HS_VERSION         2
#define HS_SLOT_SIZE       4096
#define HS_HEADER_SIZE     24
#define HS_PAYLOAD_MAX     (HS_SLOT_SIZE - HS_HEADER_SIZE)
#define HS_FILE_SIZE       (2 * HS_SLOT_SIZE)
#define SNAPSHOT_FILE      "snapshot"
#define SNAPSHOT_MAGIC     "SPSN"
#define LOG_FILE           "log"
#define TMP_SUFFIX         ".tmp"
#define PROBE_FILE         "probe" TMP_SUFFIX
#define PROBE_SIZE         (64 * 1024) /* the largest value a write may carry */

/* ---- crc32c ------------------------------------------------------------- */

static guint32 crc32c_table[256];

static void
crc32c_init (void)
{
  for (guint32 i = 0; i < 256; i++)
    {
      guint32 c = i;

      for (int k = 0; k < 8; k++)
        c = (c >> 1) ^ ((c & 1) ? 0x82f63b78u : 0); /* Castagnoli, reflected */
      crc32c_table[i] = c;
    }
}

/* Chains: crc32c (crc32c (0, a), b) == crc32c (0, a || b). */
static guint32
crc32c (guint32 crc, const guint8 *p, gsize n)
{
  static gsize once = 0;

  if (g_once_init_enter (&once))
    {
      crc32c_init ();
      g_once_init_leave (&once, 1);
    }
  crc = ~crc;
  while (n--)
    crc = crc32c_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return ~crc;
}

static guint32
get_le32 (const guint8 *p)
{
  guint32 v;

  memcpy (&v, p, sizeof v);
  return GUINT32_FROM_LE (v);
}

static guint64
get_le64 (const guint8 *p)
{
  guint64 v;

  memcpy (&v, p, sizeof v);
  return GUINT64_FROM_LE (v);
}

static void
put_le32 (guint8 *p, guint32 v)
{
  v = GUINT32_TO_LE (v);
  memcpy (p, &v, sizeof v);
}

static void
put_le64 (guint8 *p, guint64 v)
{
  v = GUINT64_TO_LE (v);
  memcpy (p, &v, sizeof v);
}

/* ---- types -------------------------------------------------------------- */

typedef enum
{
  JOB_PERSIST,
  JOB_COMPACT,
  JOB_STOP,
} JobKind;

typedef struct
{
  guint64 index;
  guint64 term;
  GBytes *bytes; /* sp_wire_entry_to_bytes */
} Record;

/* Encoded on the submitting thread: the worker never touches the caller's
 * entries, whose configurations are not atomically refcounted. */
typedef struct
{
  JobKind kind;
  GBytes *snapshot; /* payload, or NULL */
  guint64 snapshot_index;
  guint64 snapshot_term;
  GArray *records;    /* of Record, or NULL */
  GBytes *hard_state; /* payload, or NULL */
  guint64 hs_term;    /* of hard_state */
  guint64 hs_vote;
  SpStorageDone done;
  gpointer user_data;
  GMainContext *context; /* thread-default when submitted */
  GError *error;
} Job;

/* Where a log record is, and the term of its entry. */
typedef struct
{
  guint64 offset;
  guint64 term;
} Slot;

struct _SpStorage
{
  char *dir;
  int dir_fd;

  /* Jobs of the current loop iteration, handed to the worker in one go. */
  GMutex lock;
  GPtrArray *pending;
  GSource *flush_source;
  GMainContext *flush_context;
  /* under lock as well */
  guint64 log_size;
  guint sync_count;
  gboolean hold;
  GCond hold_cond;

  GAsyncQueue *queue;
  GThread *worker;

  /* Worker only once it runs. */
  int log_fd;
  guint64 log_end;
  gboolean log_dirty;
  guint64 first_index; /* of the first record; meaningless while slots is empty */
  GArray *slots;       /* of Slot: slot i holds entry first_index + i */
  int hs_fd;           /* hardstate, or -1 until the first hard state */
  guint64 hs_seq;      /* sequence number of the newest hard state slot */
  guint64 synced_seq;  /* ... of the newest one known to be on disk */
  guint64 synced_term; /* its term and vote */
  guint64 synced_vote;
  guint64 snapshot_index;
  GError *failed; /* writes after a failed batch could land beyond a hole */
};

static void
record_clear (Record *r)
{
  g_clear_pointer (&r->bytes, g_bytes_unref);
}

static void
job_free (Job *job)
{
  g_clear_pointer (&job->snapshot, g_bytes_unref);
  g_clear_pointer (&job->records, g_array_unref);
  g_clear_pointer (&job->hard_state, g_bytes_unref);
  g_clear_pointer (&job->context, g_main_context_unref);
  g_clear_error (&job->error);
  g_free (job);
}

/* ---- errors ------------------------------------------------------------- */

static gboolean io_error (GError **error, const SpStorage *storage, const char *format, ...)
    G_GNUC_PRINTF (3, 4);
static gboolean corrupt (GError **error, const SpStorage *storage, const char *name, guint64 offset,
                         const char *format, ...) G_GNUC_PRINTF (5, 6);

static gboolean
io_error (GError **error, const SpStorage *storage, const char *format, ...)
{
  int errsv = errno;
  g_autofree char *what = NULL;
  va_list args;

  va_start (args, format);
  what = g_strdup_vprintf (format, args);
  va_end (args);
  g_set_error (error, SP_STORAGE_ERROR, SP_STORAGE_ERROR_IO, "%s/%s: %s", storage->dir, what,
               g_strerror (errsv));
  return FALSE;
}

static gboolean
corrupt (GError **error, const SpStorage *storage, const char *name, guint64 offset,
         const char *format, ...)
{
  g_autofree char *what = NULL;
  va_list args;

  va_start (args, format);
  what = g_strdup_vprintf (format, args);
  va_end (args);
  g_set_error (error, SP_STORAGE_ERROR, SP_STORAGE_ERROR_CORRUPT,
               "%s/%s: corrupt at offset %" G_GUINT64_FORMAT ": %s", storage->dir, name, offset,
               what);
  return FALSE;
}

/* ---- file primitives ---------------------------------------------------- */

static gboolean
pwrite_all (SpStorage *storage, int fd, const char *name, const guint8 *p, gsize n, guint64 offset,
            GError **error)
{
  while (n > 0)
    {
      ssize_t w = pwrite (fd, p, n, (off_t)offset);

      if (w < 0 && errno == EINTR)
        continue;
      if (w < 0)
        return io_error (error, storage, "%s: write", name);
      p += w;
      n -= (gsize)w;
      offset += (guint64)w;
    }
  return TRUE;
}

static gboolean
read_all (SpStorage *storage, int fd, const char *name, guint8 **data, gsize *size, GError **error)
{
  struct stat st;
  gsize done = 0;

  if (fstat (fd, &st) < 0)
    return io_error (error, storage, "%s: stat", name);
  *data = g_malloc ((gsize)st.st_size + 1);
  while (done < (gsize)st.st_size)
    {
      ssize_t r = pread (fd, *data + done, (gsize)st.st_size - done, (off_t)done);

      if (r < 0 && errno == EINTR)
        continue;
      if (r < 0)
        {
          g_clear_pointer (data, g_free);
          return io_error (error, storage, "%s: read", name);
        }
      if (r == 0)
        break;
      done += (gsize)r;
    }
  *size = done;
  return TRUE;
}

static gboolean
sync_dir (SpStorage *storage, GError **error)
{
  if (fsync (storage->dir_fd) < 0)
    return io_error (error, storage, "fsync");
  return TRUE;
}

/* Temporary, fsync, rename, fsync the directory: a crash leaves either the
 * old file or the new one, holding head then body.  With keep_fd, the new
 * file stays open for writing there. */
static gboolean
replace_file (SpStorage *storage, const char *name, const guint8 *head, gsize head_len,
              const guint8 *body, gsize body_len, int *keep_fd, GError **error)
{
  g_autofree char *tmp = g_strconcat (name, TMP_SUFFIX, NULL);
  gboolean ok;
  int fd;

  fd = openat (storage->dir_fd, tmp, (keep_fd ? O_RDWR : O_WRONLY) | O_CREAT | O_TRUNC | O_CLOEXEC,
               0600);
  if (fd < 0)
    return io_error (error, storage, "%s: open", tmp);
  ok = pwrite_all (storage, fd, tmp, head, head_len, 0, error)
       && pwrite_all (storage, fd, tmp, body, body_len, head_len, error);
  if (ok && fsync (fd) < 0)
    ok = io_error (error, storage, "%s: fsync", tmp);
  if (ok && renameat (storage->dir_fd, tmp, storage->dir_fd, name) < 0)
    ok = io_error (error, storage, "%s: rename", tmp);
  ok = ok && sync_dir (storage, error);
  if (ok && keep_fd)
    {
      *keep_fd = fd;
      return TRUE;
    }
  if (close (fd) < 0 && ok)
    ok = io_error (error, storage, "%s: close", name);
  return ok;
}

static gboolean
write_file_atomic (SpStorage *storage, const char *name, const char *magic, GBytes *payload,
                   GError **error)
{
  gsize len;
  const guint8 *data = g_bytes_get_data (payload, &len);
  guint8 header[FILE_HEADER_SIZE];

  memcpy (header, magic, 4);
  put_le32 (header + 4, FILE_VERSION);
  put_le32 (header + 8, crc32c (0, data, len));
  put_le64 (header + 12, len);
  return replace_file (storage, name, header, sizeof header, data, len, NULL, error);
}

/* ---- hard state (worker) ------------------------------------------------ */

static void
fill_hs_slot (guint8 *slot, guint64 seq, const guint8 *data, gsize len)
{
  memset (slot, 0, HS_SLOT_SIZE);
  memcpy (slot, HARDSTATE_MAGIC, 4);
  put_le32 (slot + 4, HS_VERSION);
  put_le64 (slot + 12, seq);
  put_le32 (slot + 20, (guint32)len);
  memcpy (slot + HS_HEADER_SIZE, data, len);
  put_le32 (slot + 8, crc32c (0, slot + 12, HS_HEADER_SIZE - 12 + len));
}

/* In place into the slot not holding the synced hard state; fdatasync only
 * when term or vote changed.  The file's size and blocks never change after
 * it is created. */
static gboolean
write_hard_state (SpStorage *storage, const Job *job, GError **error)
{
  GBytes *payload = job->hard_state;
  gsize len;
  const guint8 *data = g_bytes_get_data (payload, &len);

  if (len > HS_PAYLOAD_MAX)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                   "%s/%s: a hard state of %" G_GSIZE_FORMAT " bytes does not fit a slot (%u)",
                   storage->dir, HARDSTATE_FILE, len, (guint)HS_PAYLOAD_MAX);
      return FALSE;
    }
  if (storage->hs_fd < 0)
    {
      g_autofree guint8 *file = g_malloc (HS_FILE_SIZE);

      fill_hs_slot (file, 0, data, len);
      fill_hs_slot (file + HS_SLOT_SIZE, 1, data, len);
      if (!replace_file (storage, HARDSTATE_FILE, file, HS_FILE_SIZE, NULL, 0, &storage->hs_fd,
                         error))
        return FALSE;
      storage->hs_seq = storage->synced_seq = 1;
    }
  else
    {
      guint8 slot[HS_SLOT_SIZE];
      guint64 seq = storage->hs_seq + 1;

      /* Sequence numbers keep their slot's parity. */
      if (seq % 2 == storage->synced_seq % 2)
        seq++;
      fill_hs_slot (slot, seq, data, len);
      if (!pwrite_all (storage, storage->hs_fd, HARDSTATE_FILE, slot, sizeof slot,
                       (seq % 2) * HS_SLOT_SIZE, error))
        return FALSE;
      storage->hs_seq = seq;
      if (job->hs_term == storage->synced_term && job->hs_vote == storage->synced_vote)
        return TRUE;
      if (fdatasync (storage->hs_fd) < 0)
        return io_error (error, storage, "%s: fdatasync", HARDSTATE_FILE);
      storage->synced_seq = seq;
    }
  storage->synced_term = job->hs_term;
  storage->synced_vote = job->hs_vote;
  return TRUE;
}

/* ---- log (worker) ------------------------------------------------------- */

static gboolean
sync_log (SpStorage *storage, GError **error)
{
  if (fdatasync (storage->log_fd) < 0)
    return io_error (error, storage, "%s: fdatasync", LOG_FILE);
  storage->log_dirty = FALSE;
  return TRUE;
}

static guint64
next_index (const SpStorage *storage)
{
  return storage->slots->len > 0 ? storage->first_index + storage->slots->len
                                 : storage->snapshot_index + 1;
}

/* Drops the records of entries >= index. */
static gboolean
truncate_log_from (SpStorage *storage, guint64 index, GError **error)
{
  guint keep;
  guint64 offset;

  if (storage->slots->len == 0 || index >= next_index (storage))
    return TRUE;
  keep = index > storage->first_index ? (guint)(index - storage->first_index) : 0;
  offset = g_array_index (storage->slots, Slot, keep).offset;
  if (ftruncate (storage->log_fd, (off_t)offset) < 0)
    return io_error (error, storage, "%s: truncate", LOG_FILE);
  g_array_set_size (storage->slots, keep);
  storage->log_end = offset;
  storage->log_dirty = TRUE;
  return TRUE;
}

static gboolean
append_records (SpStorage *storage, GArray *records, GError **error)
{
  guint64 first = g_array_index (records, Record, 0).index;
  g_autofree guint8 *buf = NULL;
  gsize total = 0, pos = 0;

  for (guint i = 0; i < records->len; i++)
    {
      const Record *r = &g_array_index (records, Record, i);

      if (r->index != first + i)
        {
          g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                       "entries to persist are not consecutive at index %" G_GUINT64_FORMAT,
                       r->index);
          return FALSE;
        }
      total += RECORD_HEADER_SIZE + g_bytes_get_size (r->bytes);
    }
  if (first > next_index (storage))
    {
      /* Only a log wholly covered by the snapshot may be left behind. */
      if (first - 1 > storage->snapshot_index)
        {
          g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                       "entries to persist start at %" G_GUINT64_FORMAT
                       " but the stored log ends at %" G_GUINT64_FORMAT,
                       first, next_index (storage) - 1);
          return FALSE;
        }
      first = 0;
    }
  if (!truncate_log_from (storage, first, error))
    return FALSE;

  buf = g_malloc (total);
  if (storage->slots->len == 0)
    storage->first_index = g_array_index (records, Record, 0).index;
  for (guint i = 0; i < records->len; i++)
    {
      const Record *r = &g_array_index (records, Record, i);
      gsize len;
      const guint8 *data = g_bytes_get_data (r->bytes, &len);
      Slot slot = { storage->log_end + pos, r->term };

      put_le32 (buf + pos, (guint32)len);
      put_le32 (buf + pos + 4, crc32c (0, data, len));
      memcpy (buf + pos + RECORD_HEADER_SIZE, data, len);
      pos += RECORD_HEADER_SIZE + len;
      g_array_append_val (storage->slots, slot);
    }
  if (!pwrite_all (storage, storage->log_fd, LOG_FILE, buf, total, storage->log_end, error))
    return FALSE;
  storage->log_end += total;
  storage->log_dirty = TRUE;
  return TRUE;
}

/* Keeps only the records of entries after index, in a new file swapped in
 * atomically: dropping a prefix cannot be done in place. */
static gboolean
rewrite_log_after (SpStorage *storage, guint64 index, GError **error)
{
  const char *tmp = LOG_FILE TMP_SUFFIX;
  guint drop;
  guint64 start;
  g_autofree guint8 *buf = NULL;
  gboolean ok = TRUE;
  int fd;

  if (storage->slots->len == 0 || storage->first_index > index)
    return TRUE;
  drop = (guint)MIN (index - storage->first_index + 1, storage->slots->len);
  start = drop < storage->slots->len ? g_array_index (storage->slots, Slot, drop).offset
                                     : storage->log_end;

  fd = openat (storage->dir_fd, tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return io_error (error, storage, "%s: open", tmp);
  buf = g_malloc (64 * 1024);
  for (guint64 pos = start; ok && pos < storage->log_end;)
    {
      ssize_t r = pread (storage->log_fd, buf, MIN (64 * 1024, storage->log_end - pos), (off_t)pos);

      if (r < 0 && errno == EINTR)
        continue;
      if (r <= 0)
        {
          if (r == 0)
            errno = EIO; /* the log shrank under us */
          ok = io_error (error, storage, "%s: read", LOG_FILE);
          break;
        }
      ok = pwrite_all (storage, fd, tmp, buf, (gsize)r, pos - start, error);
      pos += (guint64)r;
    }
  if (ok && fdatasync (fd) < 0)
    ok = io_error (error, storage, "%s: fdatasync", tmp);
  if (ok && renameat (storage->dir_fd, tmp, storage->dir_fd, LOG_FILE) < 0)
    ok = io_error (error, storage, "%s: rename", tmp);
  if (!ok || !sync_dir (storage, error))
    {
      close (fd);
      return FALSE;
    }

  close (storage->log_fd);
  storage->log_fd = fd;
  g_array_remove_range (storage->slots, 0, drop);
  for (guint i = 0; i < storage->slots->len; i++)
    g_array_index (storage->slots, Slot, i).offset -= start;
  storage->first_index += drop;
  storage->log_end -= start;
  storage->log_dirty = FALSE;
  return TRUE;
}

/* A leader's snapshot (index, term) replaces the log.  Records from index on
 * that disagree with it can never be committed (log matching); cut them
 * durably before the snapshot lands, so that a crash in between cannot leave
 * a log whose terms contradict the snapshot. */
static gboolean
cut_conflicting (SpStorage *storage, guint64 index, guint64 term, GError **error)
{
  if (storage->slots->len == 0 || index < storage->first_index || index >= next_index (storage))
    return TRUE;
  if (g_array_index (storage->slots, Slot, index - storage->first_index).term == term)
    return TRUE;
  return truncate_log_from (storage, index, error) && sync_log (storage, error);
}

static gboolean
apply_job (SpStorage *storage, Job *job, GError **error)
{
  if (job->kind == JOB_COMPACT)
    {
      if (!write_file_atomic (storage, SNAPSHOT_FILE, SNAPSHOT_MAGIC, job->snapshot, error))
        return FALSE;
      storage->snapshot_index = job->snapshot_index;
      return rewrite_log_after (storage, job->snapshot_index, error);
    }
  if (job->snapshot)
    {
      if (!cut_conflicting (storage, job->snapshot_index, job->snapshot_term, error)
          || !write_file_atomic (storage, SNAPSHOT_FILE, SNAPSHOT_MAGIC, job->snapshot, error))
        return FALSE;
      storage->snapshot_index = job->snapshot_index;
      if (!truncate_log_from (storage, 0, error))
        return FALSE;
    }
  return !job->records || append_records (storage, job->records, error);
}

/* Log writes in order, one log fsync, then the newest hard state: it never
 * lands before the entries its commit index refers to. */
static void
write_batch (SpStorage *storage, GPtrArray *batch)
{
  g_autoptr (GError) error = NULL;
  const Job *hard_state = NULL;

  if (storage->failed)
    {
      g_set_error (&error, SP_STORAGE_ERROR, SP_STORAGE_ERROR_IO, "an earlier write failed: %s",
                   storage->failed->message);
    }
  else
    {
      for (guint i = 0; i < batch->len && !error; i++)
        {
          Job *job = batch->pdata[i];

          if (apply_job (storage, job, &error) && job->hard_state)
            hard_state = job;
        }
      if (!error && storage->log_dirty)
        sync_log (storage, &error);
      if (!error && hard_state)
        write_hard_state (storage, hard_state, &error);
      if (error)
        storage->failed = g_error_copy (error);

      g_mutex_lock (&storage->lock);
      storage->log_size = storage->log_end;
      storage->sync_count++;
      g_mutex_unlock (&storage->lock);
    }
  for (guint i = 0; i < batch->len && error; i++)
    ((Job *)batch->pdata[i])->error = g_error_copy (error);
}

static gboolean
run_callbacks (gpointer user_data)
{
  GPtrArray *jobs = user_data;

  for (guint i = 0; i < jobs->len; i++)
    {
      Job *job = jobs->pdata[i];

      if (job->done)
        job->done (job->error, job->user_data);
    }
  return G_SOURCE_REMOVE;
}

static void
post_run (GPtrArray *run)
{
  g_autoptr (GSource) source = g_idle_source_new ();

  g_source_set_priority (source, G_PRIORITY_DEFAULT);
  g_source_set_callback (source, run_callbacks, run, (GDestroyNotify)g_ptr_array_unref);
  g_source_set_static_name (source, "sp-storage-done");
  g_source_attach (source, ((Job *)run->pdata[0])->context);
}

/* One idle per run of jobs from the same context: equal-priority sources
 * dispatch in the order attached, so callbacks keep submission order. */
static void
post_callbacks (GPtrArray *batch)
{
  GPtrArray *run = NULL;

  for (guint i = 0; i < batch->len; i++)
    {
      Job *job = batch->pdata[i];

      if (run && ((Job *)run->pdata[0])->context != job->context)
        post_run (g_steal_pointer (&run));
      if (!run)
        run = g_ptr_array_new_with_free_func ((GDestroyNotify)job_free);
      g_ptr_array_add (run, job);
    }
  if (run)
    post_run (run);
}

static gpointer
worker_main (gpointer user_data)
{
  SpStorage *storage = user_data;
  gboolean stop = FALSE;

  while (!stop)
    {
      g_autoptr (GPtrArray) batch = g_ptr_array_new ();
      Job *job = g_async_queue_pop (storage->queue);

      g_mutex_lock (&storage->lock);
      while (storage->hold)
        g_cond_wait (&storage->hold_cond, &storage->lock);
      g_mutex_unlock (&storage->lock);

      /* Whatever else is queued by now joins this batch. */
      g_async_queue_lock (storage->queue);
      do
        {
          if (job->kind == JOB_STOP)
            {
              job_free (job);
              stop = TRUE;
            }
          else
            {
              g_ptr_array_add (batch, job);
            }
        }
      while ((job = g_async_queue_try_pop_unlocked (storage->queue)));
      g_async_queue_unlock (storage->queue);

      if (batch->len == 0)
        continue;
      write_batch (storage, batch);
      post_callbacks (batch);
    }
  return NULL;
}

/* ---- submission (any thread with a main context) ------------------------ */

static void
hand_over_locked (SpStorage *storage)
{
  if (storage->flush_source)
    {
      g_source_destroy (storage->flush_source);
      g_clear_pointer (&storage->flush_source, g_source_unref);
      storage->flush_context = NULL;
    }
  g_async_queue_lock (storage->queue);
  for (guint i = 0; i < storage->pending->len; i++)
    g_async_queue_push_unlocked (storage->queue, storage->pending->pdata[i]);
  g_async_queue_unlock (storage->queue);
  g_ptr_array_set_size (storage->pending, 0);
}

static gboolean
on_flush (gpointer user_data)
{
  SpStorage *storage = user_data;

  g_mutex_lock (&storage->lock);
  hand_over_locked (storage);
  g_mutex_unlock (&storage->lock);
  return G_SOURCE_REMOVE;
}

/* Jobs wait for the next loop iteration, so that all submitted during one
 * iteration reach the worker together and share one fsync. */
static void
submit (SpStorage *storage, Job *job)
{
  job->context = g_main_context_ref_thread_default ();

  g_mutex_lock (&storage->lock);
  if (storage->flush_source && storage->flush_context != job->context)
    hand_over_locked (storage); /* keeps the order across contexts */
  g_ptr_array_add (storage->pending, job);
  if (!storage->flush_source)
    {
      storage->flush_source = g_idle_source_new ();
      g_source_set_priority (storage->flush_source, G_PRIORITY_DEFAULT);
      g_source_set_callback (storage->flush_source, on_flush, storage, NULL);
      g_source_set_static_name (storage->flush_source, "sp-storage-flush");
      g_source_attach (storage->flush_source, job->context);
      storage->flush_context = job->context;
    }
  g_mutex_unlock (&storage->lock);
}

static Job *
job_new (JobKind kind, SpStorageDone done, gpointer user_data)
{
  Job *job = g_new0 (Job, 1);

  job->kind = kind;
  job->done = done;
  job->user_data = user_data;
  return job;
}

static void
job_set_snapshot (Job *job, const SpRaftSnapshot *snapshot)
{
  job->snapshot = sp_wire_snapshot_to_bytes (snapshot);
  job->snapshot_index = snapshot->index;
  job->snapshot_term = snapshot->term;
}

void
sp_storage_persist (SpStorage *storage, const SpRaftSnapshot *snapshot, const GArray *entries,
                    const SpRaftHardState *hard_state, SpStorageDone done, gpointer user_data)
{
  Job *job;

  g_return_if_fail (storage != NULL);

  job = job_new (JOB_PERSIST, done, user_data);
  if (snapshot)
    job_set_snapshot (job, snapshot);
  if (entries && entries->len > 0)
    {
      job->records = g_array_sized_new (FALSE, FALSE, sizeof (Record), entries->len);
      g_array_set_clear_func (job->records, (GDestroyNotify)record_clear);
      for (guint i = 0; i < entries->len; i++)
        {
          const SpRaftEntry *e = &g_array_index (entries, SpRaftEntry, i);
          Record r = { e->index, e->term, sp_wire_entry_to_bytes (e) };

          g_array_append_val (job->records, r);
        }
    }
  if (hard_state)
    {
      job->hard_state = sp_wire_hard_state_to_bytes (hard_state);
      job->hs_term = hard_state->term;
      job->hs_vote = hard_state->vote;
    }
  submit (storage, job);
}

void
sp_storage_compact (SpStorage *storage, const SpRaftSnapshot *snapshot, SpStorageDone done,
                    gpointer user_data)
{
  Job *job;

  g_return_if_fail (storage != NULL);
  g_return_if_fail (snapshot != NULL);

  job = job_new (JOB_COMPACT, done, user_data);
  job_set_snapshot (job, snapshot);
  submit (storage, job);
}

guint64
sp_storage_log_size (SpStorage *storage)
{
  guint64 size;

  g_return_val_if_fail (storage != NULL, 0);

  g_mutex_lock (&storage->lock);
  size = storage->log_size;
  g_mutex_unlock (&storage->lock);
  return size;
}

guint
sp_storage_sync_count (SpStorage *storage)
{
  guint count;

  g_return_val_if_fail (storage != NULL, 0);

  g_mutex_lock (&storage->lock);
  count = storage->sync_count;
  g_mutex_unlock (&storage->lock);
  return count;
}

void
sp_storage_hold_writes (SpStorage *storage, gboolean hold)
{
  g_return_if_fail (storage != NULL);

  g_mutex_lock (&storage->lock);
  storage->hold = hold;
  g_cond_broadcast (&storage->hold_cond);
  g_mutex_unlock (&storage->lock);
}

/* ---- open --------------------------------------------------------------- */

/* The payload of a hardstate or snapshot file; *payload stays NULL when the
 * file does not exist. */
static gboolean
load_file (SpStorage *storage, const char *name, const char *magic, GBytes **payload,
           GError **error)
{
  g_autofree guint8 *data = NULL;
  gsize size;
  guint64 len;
  gboolean ok;
  int fd = openat (storage->dir_fd, name, O_RDONLY | O_CLOEXEC);

  if (fd < 0 && errno == ENOENT)
    return TRUE;
  if (fd < 0)
    return io_error (error, storage, "%s: open", name);
  ok = read_all (storage, fd, name, &data, &size, error);
  close (fd);
  if (!ok)
    return FALSE;

  if (size < FILE_HEADER_SIZE)
    return corrupt (error, storage, name, size, "the file ends inside its %u-byte header",
                    FILE_HEADER_SIZE);
  if (memcmp (data, magic, 4) != 0)
    return corrupt (error, storage, name, 0, "bad magic (expected \"%s\")", magic);
  if (get_le32 (data + 4) != FILE_VERSION)
    return corrupt (error, storage, name, 4, "unknown version %u", get_le32 (data + 4));
  len = get_le64 (data + 12);
  if (len != size - FILE_HEADER_SIZE)
    return corrupt (error, storage, name, 12,
                    "payload length %" G_GUINT64_FORMAT ", but %" G_GSIZE_FORMAT
                    " bytes follow the header",
                    len, size - FILE_HEADER_SIZE);
  if (crc32c (0, data + FILE_HEADER_SIZE, len) != get_le32 (data + 8))
    return corrupt (error, storage, name, FILE_HEADER_SIZE, "payload checksum mismatch");
  *payload = g_bytes_new (data + FILE_HEADER_SIZE, len);
  return TRUE;
}

/* NULL when the slot at p is whole, else what is wrong with it. */
static char *
hs_slot_problem (const guint8 *p)
{
  guint32 len = get_le32 (p + 20);

  if (len > HS_PAYLOAD_MAX)
    return g_strdup_printf ("payload length %u exceeds the slot's %u bytes", len,
                            (guint)HS_PAYLOAD_MAX);
  if (crc32c (0, p + 12, HS_HEADER_SIZE - 12 + len) != get_le32 (p + 8))
    return g_strdup ("checksum mismatch");
  return NULL;
}

/* The newest whole slot of the hardstate file.  A missing (or empty) file
 * is a fresh node; one damaged slot is a torn write, both are corruption. */
static gboolean
load_hard_state (SpStorage *storage, SpRaftHardState *hs, GError **error)
{
  g_autofree guint8 *data = NULL;
  g_autoptr (GBytes) payload = NULL;
  g_autoptr (GError) local = NULL;
  g_autofree char *bad0 = NULL, *bad1 = NULL;
  const char *problem[2];
  gsize size;
  guint use;
  guint64 off;
  int fd = openat (storage->dir_fd, HARDSTATE_FILE, O_RDWR | O_CLOEXEC);

  if (fd < 0 && errno == ENOENT)
    return TRUE;
  if (fd < 0)
    return io_error (error, storage, "%s: open", HARDSTATE_FILE);
  if (!read_all (storage, fd, HARDSTATE_FILE, &data, &size, error))
    {
      close (fd);
      return FALSE;
    }
  if (size == 0)
    {
      /* never made by a write (the file appears whole, by rename) */
      g_warning ("%s/%s: empty: taken as no hard state yet", storage->dir, HARDSTATE_FILE);
      close (fd);
      return TRUE;
    }
  storage->hs_fd = fd;

  /* Torn writes leave the same magic and version: a mismatch is damage. */
  for (guint i = 0; i < 2 && size >= i * HS_SLOT_SIZE + 8; i++)
    {
      const guint8 *p = data + i * HS_SLOT_SIZE;

      off = i * HS_SLOT_SIZE;
      if (memcmp (p, HARDSTATE_MAGIC, 4) != 0)
        return corrupt (error, storage, HARDSTATE_FILE, off, "bad magic (expected \"%s\")",
                        HARDSTATE_MAGIC);
      if (get_le32 (p + 4) != HS_VERSION)
        return corrupt (error, storage, HARDSTATE_FILE, off + 4, "unknown version %u (expected %u)",
                        get_le32 (p + 4), HS_VERSION);
    }
  if (size != HS_FILE_SIZE)
    return corrupt (error, storage, HARDSTATE_FILE, MIN (size, HS_FILE_SIZE),
                    "the file is %" G_GSIZE_FORMAT " bytes, expected %u (two %u-byte slots)", size,
                    (guint)HS_FILE_SIZE, (guint)HS_SLOT_SIZE);

  problem[0] = bad0 = hs_slot_problem (data);
  problem[1] = bad1 = hs_slot_problem (data + HS_SLOT_SIZE);
  for (guint i = 0; i < 2; i++)
    {
      const guint8 *p = data + i * HS_SLOT_SIZE;

      if (!problem[i] && get_le64 (p + 12) % 2 != i)
        return corrupt (error, storage, HARDSTATE_FILE, i * HS_SLOT_SIZE + 12,
                        "sequence number %" G_GUINT64_FORMAT " does not belong in slot %u",
                        get_le64 (p + 12), i);
    }
  if (problem[0] && problem[1])
    return corrupt (error, storage, HARDSTATE_FILE, 0,
                    "both slots are damaged: slot at offset 0: %s; slot at offset %u: %s",
                    problem[0], (guint)HS_SLOT_SIZE, problem[1]);
  if (problem[0] || problem[1])
    use = problem[0] ? 1 : 0;
  else
    use = get_le64 (data + 12) > get_le64 (data + HS_SLOT_SIZE + 12) ? 0 : 1;
  off = use * HS_SLOT_SIZE;
  storage->hs_seq = get_le64 (data + off + 12);
  if (problem[!use])
    g_warning ("%s/%s: slot at offset %u is damaged (%s): the last write was cut short;"
               " using the previous hard state (sequence %" G_GUINT64_FORMAT
               ") at offset %" G_GUINT64_FORMAT,
               storage->dir, HARDSTATE_FILE, (!use) * (guint)HS_SLOT_SIZE, problem[!use],
               storage->hs_seq, off);

  payload = g_bytes_new (data + off + HS_HEADER_SIZE, get_le32 (data + off + 20));
  if (!sp_wire_hard_state_from_bytes (payload, hs, &local))
    return corrupt (error, storage, HARDSTATE_FILE, off + HS_HEADER_SIZE, "%s", local->message);
  /* The newest slot may be a commit update that never reached the disk
   * (only the process died): make it durable before writing over the
   * other one. */
  if (fdatasync (storage->hs_fd) < 0)
    return io_error (error, storage, "%s: fdatasync", HARDSTATE_FILE);
  storage->synced_seq = storage->hs_seq;
  storage->synced_term = hs->term;
  storage->synced_vote = hs->vote;
  return TRUE;
}

static gboolean
load_snapshot (SpStorage *storage, SpRaftSnapshot **snapshot, GError **error)
{
  g_autoptr (GBytes) payload = NULL;
  g_autoptr (GError) local = NULL;

  if (!load_file (storage, SNAPSHOT_FILE, SNAPSHOT_MAGIC, &payload, error))
    return FALSE;
  if (payload && !(*snapshot = sp_wire_snapshot_from_bytes (payload, &local)))
    return corrupt (error, storage, SNAPSHOT_FILE, FILE_HEADER_SIZE, "%s", local->message);
  storage->snapshot_index = *snapshot ? (*snapshot)->index : 0;
  return TRUE;
}

static gboolean
decodes_as_entry (const guint8 *p, gsize n)
{
  g_autoptr (GBytes) bytes = g_bytes_new_static (p, n);
  SpRaftEntry e;

  if (!sp_wire_entry_from_bytes (bytes, &e, NULL))
    return FALSE;
  sp_raft_entry_clear (&e);
  return TRUE;
}

/* The record at off cannot be read.  A torn append leaves a prefix of the
 * last record, or zeros where blocks were allocated but never written; a
 * whole record with a bad checksum followed by more data, or a record whose
 * checksum fits a shorter payload (a damaged length field), is corruption. */
static gboolean
is_torn_tail (const guint8 *data, gsize size, gsize off)
{
  gsize avail = size - off, body;
  guint32 len, crc, run = 0;
  gboolean zeros = TRUE;

  for (gsize i = off; i < size && zeros; i++)
    zeros = data[i] == 0;
  if (zeros || avail < RECORD_HEADER_SIZE)
    return TRUE;
  len = get_le32 (data + off);
  crc = get_le32 (data + off + 4);
  body = avail - RECORD_HEADER_SIZE;
  if (len < body)
    return FALSE;
  for (gsize n = 1; n <= body; n++)
    {
      run = crc32c (run, data + off + RECORD_HEADER_SIZE + n - 1, 1);
      if (run == crc && n != len && decodes_as_entry (data + off + RECORD_HEADER_SIZE, n))
        return FALSE;
    }
  return TRUE;
}

static gboolean
cut_torn_tail (SpStorage *storage, gsize size, gsize off, GError **error)
{
  if (ftruncate (storage->log_fd, (off_t)off) < 0)
    return io_error (error, storage, "%s: truncate", LOG_FILE);
  if (fdatasync (storage->log_fd) < 0)
    return io_error (error, storage, "%s: fdatasync", LOG_FILE);
  g_warning ("%s/%s: torn write at the end: cut back to offset %" G_GSIZE_FORMAT
             ", dropping %" G_GSIZE_FORMAT " bytes",
             storage->dir, LOG_FILE, off, size - off);
  return TRUE;
}

/* Reads the log: entries after the snapshot go to state->entries, every
 * record to the slot table. */
static gboolean
load_log (SpStorage *storage, SpStorageState *state, GError **error)
{
  g_autofree guint8 *data = NULL;
  gsize size, off = 0;

  storage->log_fd = openat (storage->dir_fd, LOG_FILE, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (storage->log_fd < 0)
    return io_error (error, storage, "%s: open", LOG_FILE);
  if (!read_all (storage, storage->log_fd, LOG_FILE, &data, &size, error))
    return FALSE;

  while (off < size)
    {
      gsize avail = size - off;
      guint32 len = avail >= RECORD_HEADER_SIZE ? get_le32 (data + off) : 0;
      const guint8 *payload = data + off + RECORD_HEADER_SIZE;
      g_autoptr (GBytes) bytes = NULL;
      g_autoptr (GError) local = NULL;
      guint64 expected = next_index (storage);
      SpRaftEntry e;
      Slot slot = { off, 0 };

      if (len == 0 || len > avail - RECORD_HEADER_SIZE
          || crc32c (0, payload, len) != get_le32 (data + off + 4))
        {
          if (!is_torn_tail (data, size, off))
            return corrupt (error, storage, LOG_FILE, off,
                            "bad record, and not a torn write: %" G_GSIZE_FORMAT
                            " bytes to the end of the file",
                            avail);
          if (!cut_torn_tail (storage, size, off, error))
            return FALSE;
          state->torn_tail_cut = TRUE;
          size = off;
          break;
        }

      bytes = g_bytes_new (payload, len);
      if (!sp_wire_entry_from_bytes (bytes, &e, &local))
        return corrupt (error, storage, LOG_FILE, off, "%s", local->message);
      /* the first record may predate the snapshot, never leave a gap */
      if (storage->slots->len == 0 ? e.index == 0 || e.index > expected : e.index != expected)
        {
          corrupt (error, storage, LOG_FILE, off,
                   "holds entry %" G_GUINT64_FORMAT ", expected %s%" G_GUINT64_FORMAT, e.index,
                   storage->slots->len == 0 ? "at most " : "", expected);
          sp_raft_entry_clear (&e);
          return FALSE;
        }
      if (storage->slots->len == 0)
        storage->first_index = e.index;
      slot.term = e.term;
      g_array_append_val (storage->slots, slot);
      /* covered by the snapshot: compaction had not caught up */
      if (e.index > storage->snapshot_index)
        g_array_append_val (state->entries, e);
      else
        sp_raft_entry_clear (&e);
      off += RECORD_HEADER_SIZE + len;
    }
  storage->log_end = size;
  storage->log_size = size;
  return TRUE;
}

/* The hard state is written after the log, so a crash in between can leave
 * entries (or a snapshot) from a newer term.  Nothing was sent in that term
 * (replies wait for the write), so adopting it with no vote is safe. */
static void
adopt_implied_term (SpStorage *storage, SpStorageState *state)
{
  guint64 term = state->snapshot ? state->snapshot->term : 0;

  if (state->entries->len > 0)
    term = MAX (term, g_array_index (state->entries, SpRaftEntry, state->entries->len - 1).term);
  if (term <= state->hard_state.term)
    return;
  g_warning ("%s/%s: term %" G_GUINT64_FORMAT " is older than the log's %" G_GUINT64_FORMAT
             " (the last write was cut short): taking term %" G_GUINT64_FORMAT " with no vote",
             storage->dir, HARDSTATE_FILE, state->hard_state.term, term, term);
  state->hard_state.term = term;
  state->hard_state.vote = SP_RAFT_NONE;
}

/* Leftovers of writes a crash interrupted; the real files are intact. */
static gboolean
remove_temporaries (SpStorage *storage, GError **error)
{
  static const char *const names[]
      = { HARDSTATE_FILE TMP_SUFFIX, SNAPSHOT_FILE TMP_SUFFIX, LOG_FILE TMP_SUFFIX, PROBE_FILE };

  for (guint i = 0; i < G_N_ELEMENTS (names); i++)
    if (unlinkat (storage->dir_fd, names[i], 0) < 0 && errno != ENOENT)
      return io_error (error, storage, "%s: unlink", names[i]);
  return TRUE;
}

/* A data directory that cannot take a write (mounted read-only, full) is
 * refused at start-up, by name, rather than found out at the first write
 * the node would have to acknowledge: written, synced and removed. */
static gboolean
check_writable (SpStorage *storage, GError **error)
{
  static const guint8 zeros[PROBE_SIZE];
  gsize done = 0;
  int errsv = 0;
  int fd = openat (storage->dir_fd, PROBE_FILE, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

  if (fd < 0)
    errsv = errno;
  while (fd >= 0 && !errsv && done < sizeof zeros)
    {
      ssize_t w = write (fd, zeros + done, sizeof zeros - done);

      if (w < 0 && errno != EINTR)
        errsv = errno;
      else if (w > 0)
        done += (gsize)w;
    }
  if (fd >= 0 && !errsv && fsync (fd) < 0)
    errsv = errno;
  if (fd >= 0)
    {
      close (fd);
      unlinkat (storage->dir_fd, PROBE_FILE, 0);
    }
  if (!errsv)
    return TRUE;
  g_set_error (error, SP_STORAGE_ERROR, SP_STORAGE_ERROR_IO, "the data directory %s %s: %s",
               storage->dir,
               errsv == ENOSPC || errsv == EDQUOT                    ? "is full"
               : errsv == EROFS || errsv == EACCES || errsv == EPERM ? "is not writable"
                                                                     : "cannot be written",
               g_strerror (errsv));
  return FALSE;
}

/* Makes the directory and the log file's entries in it durable. */
static gboolean
sync_parent (SpStorage *storage, GError **error)
{
  g_autofree char *parent = g_path_get_dirname (storage->dir);
  int fd = open (parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  gboolean ok;

  if (fd < 0)
    return io_error (error, storage, "open parent directory");
  ok = fsync (fd) == 0 || io_error (error, storage, "fsync parent directory");
  close (fd);
  return ok && sync_dir (storage, error);
}

void
sp_storage_state_clear (SpStorageState *state)
{
  g_clear_pointer (&state->snapshot, sp_raft_snapshot_free);
  g_clear_pointer (&state->entries, g_array_unref);
  memset (state, 0, sizeof *state);
}

SpStorage *
sp_storage_open (const char *dir, SpStorageState *state, GError **error)
{
  g_autoptr (SpStorage) storage = NULL;
  g_auto (SpStorageState) found = { 0 };

  g_return_val_if_fail (dir != NULL, NULL);
  g_return_val_if_fail (state != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  storage = g_new0 (SpStorage, 1);
  storage->dir = g_strdup (dir);
  storage->dir_fd = -1;
  storage->log_fd = -1;
  storage->hs_fd = -1;
  g_mutex_init (&storage->lock);
  g_cond_init (&storage->hold_cond);
  storage->pending = g_ptr_array_new ();
  storage->queue = g_async_queue_new ();
  storage->slots = g_array_new (FALSE, FALSE, sizeof (Slot));

  if (g_mkdir_with_parents (dir, 0700) < 0)
    {
      int errsv = errno;

      g_set_error (error, SP_STORAGE_ERROR, SP_STORAGE_ERROR_IO,
                   "cannot create the data directory %s: %s", dir, g_strerror (errsv));
      return NULL;
    }
  storage->dir_fd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (storage->dir_fd < 0)
    {
      int errsv = errno;

      g_set_error (error, SP_STORAGE_ERROR, SP_STORAGE_ERROR_IO,
                   "cannot open the data directory %s: %s", dir, g_strerror (errsv));
      return NULL;
    }

  found.entries = sp_raft_entries_new (0);
  if (!check_writable (storage, error) || !remove_temporaries (storage, error)
      || !load_hard_state (storage, &found.hard_state, error)
      || !load_snapshot (storage, &found.snapshot, error) || !load_log (storage, &found, error)
      || !sync_parent (storage, error))
    return NULL;
  adopt_implied_term (storage, &found);

  storage->worker = g_thread_new ("sp-storage", worker_main, storage);
  *state = found;
  memset (&found, 0, sizeof found);
  return g_steal_pointer (&storage);
}

void
sp_storage_free (SpStorage *storage)
{
  if (!storage)
    return;

  if (storage->worker)
    {
      g_mutex_lock (&storage->lock);
      hand_over_locked (storage);
      storage->hold = FALSE;
      g_cond_broadcast (&storage->hold_cond);
      g_mutex_unlock (&storage->lock);
      g_async_queue_push (storage->queue, job_new (JOB_STOP, NULL, NULL));
      g_thread_join (storage->worker);
    }
  if (storage->log_fd >= 0)
    close (storage->log_fd);
  if (storage->hs_fd >= 0)
    close (storage->hs_fd);
  if (storage->dir_fd >= 0)
    close (storage->dir_fd);
  g_clear_error (&storage->failed);
  g_array_unref (storage->slots);
  g_async_queue_unref (storage->queue);
  g_ptr_array_unref (storage->pending);
  g_cond_clear (&storage->hold_cond);
  g_mutex_clear (&storage->lock);
  g_free (storage->dir);
  g_free (storage);
}
