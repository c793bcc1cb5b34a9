#define _GNU_SOURCE
#include "keeper.h"

#include <errno.h>
#include <fcntl.h>
#include <glib-unix.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "keeper-proto.h"

#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 2000

struct _SpKeeper
{
  char *path;
  SpKeeperChangedFunc changed;
  gpointer user_data;
  GArray *addresses; /* of SpKeeperMsg, ready to send */

  int fd;      /* -1 when not connected */
  guint watch; /* on fd */
  guint retry; /* the next connection attempt */
  guint backoff_ms;
  SpKeeperPage *page; /* NULL until the keeper sent it */
  uint64_t written;   /* the deadline this side wrote last */
  gboolean arming;    /* ARM sent, no answer yet */
  gboolean armed;
  char *why; /* why not armed */
};

static void schedule_connect (SpKeeper *k);

static void set_why (SpKeeper *k, const char *format, ...) G_GNUC_PRINTF (2, 3);

static void
set_why (SpKeeper *k, const char *format, ...)
{
  va_list ap;

  g_free (k->why);
  va_start (ap, format);
  k->why = g_strdup_vprintf (format, ap);
  va_end (ap);
}

static void
disconnect (SpKeeper *k)
{
  g_clear_handle_id (&k->watch, g_source_remove);
  if (k->page)
    munmap (k->page, SP_KEEPER_PAGE_SIZE);
  k->page = NULL;
  if (k->fd >= 0)
    close (k->fd);
  k->fd = -1;
  k->arming = k->armed = FALSE;
  k->written = 0;
}

/* The keeper closed or failed: whatever was held goes now (the keeper has
 * fenced it), and the link comes back when the keeper does. */
static void
lost (SpKeeper *k, const char *why)
{
  gboolean was_armed = k->armed || k->arming;

  disconnect (k);
  set_why (k, "fence keeper %s: %s", k->path, why);
  if (was_armed)
    g_warning ("fence keeper lost (%s): not holding", why);
  else
    g_message ("fence keeper at %s: %s", k->path, why);
  schedule_connect (k);
  if (was_armed)
    k->changed (k->user_data);
}

static gboolean
send_msg (SpKeeper *k, const SpKeeperMsg *m)
{
  if (send (k->fd, m, sizeof *m, MSG_NOSIGNAL | MSG_DONTWAIT) == (ssize_t)sizeof *m)
    return TRUE;
  lost (k, g_strerror (errno));
  return FALSE;
}

/* The page: shared, sealed against shrinking (a shrunk page would fault
 * here), of the contract's size. */
static gboolean
take_page (SpKeeper *k, int fd)
{
  int seals = fcntl (fd, F_GET_SEALS);
  void *page;

  if (seals < 0 || !(seals & F_SEAL_SHRINK) || lseek (fd, 0, SEEK_END) < SP_KEEPER_PAGE_SIZE)
    return FALSE;
  page = mmap (NULL, SP_KEEPER_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (page == MAP_FAILED)
    return FALSE;
  k->page = page;
  return TRUE;
}

static void
on_message (SpKeeper *k, const SpKeeperMsg *m, int fd)
{
  switch (m->type)
    {
      case SP_KEEPER_MSG_PAGE:
        if (k->page || fd < 0 || !take_page (k, fd))
          {
            lost (k, "sent an unusable page");
            return;
          }
        g_message ("fence keeper at %s connected", k->path);
        for (guint i = 0; i < k->addresses->len; i++)
          if (!send_msg (k, &g_array_index (k->addresses, SpKeeperMsg, i)))
            return;
        k->backoff_ms = BACKOFF_MIN_MS;
        /* The owner may want to arm now. */
        k->changed (k->user_data);
        break;
      case SP_KEEPER_MSG_ARMED:
        if (!k->arming)
          return;
        k->arming = FALSE;
        k->armed = TRUE;
        g_message ("fence keeper armed");
        k->changed (k->user_data);
        break;
      case SP_KEEPER_MSG_REFUSED:
        if (m->family == SP_KEEPER_MSG_ARM)
          k->arming = FALSE;
        set_why (k, "fence keeper %s refused: %.*s", k->path, (int)sizeof m->text, m->text);
        g_warning ("%s", k->why);
        break;
      default:
        g_warning ("fence keeper at %s: dropped a message of type %u", k->path, m->type);
    }
}

static gboolean
on_readable (int fd, GIOCondition condition, gpointer user_data)
{
  SpKeeper *k = user_data;
  SpKeeperMsg m;
  char control[CMSG_SPACE (sizeof (int))];
  struct iovec iov = { &m, sizeof m };
  struct msghdr msg = {
    .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control
  };
  ssize_t n = recvmsg (fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  int passed = -1;

  if (n < 0 && (errno == EAGAIN || errno == EINTR))
    return G_SOURCE_CONTINUE;
  for (struct cmsghdr *c = CMSG_FIRSTHDR (&msg); n > 0 && c; c = CMSG_NXTHDR (&msg, c))
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS
        && c->cmsg_len == CMSG_LEN (sizeof (int)))
      memcpy (&passed, CMSG_DATA (c), sizeof (int));
  k->watch = 0; /* lost () must not remove the source it runs in */
  if (n <= 0)
    lost (k, n < 0 ? g_strerror (errno) : "closed");
  else if (n != (ssize_t)sizeof m || m.magic != SP_KEEPER_MAGIC || (msg.msg_flags & MSG_CTRUNC))
    lost (k, "sent a malformed message");
  else
    on_message (k, &m, passed);
  if (passed >= 0)
    close (passed);
  if (k->fd != fd)
    return G_SOURCE_REMOVE;
  k->watch = g_source_get_id (g_main_current_source ());
  return G_SOURCE_CONTINUE;
}

static gboolean
try_connect (gpointer user_data)
{
  SpKeeper *k = user_data;
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  int fd;

  k->retry = 0;
  g_strlcpy (sun.sun_path, k->path, sizeof sun.sun_path);
  fd = socket (AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect (fd, (struct sockaddr *)&sun, sizeof sun) < 0)
    {
      int err = errno;

      if (fd >= 0)
        close (fd);
      /* Said once per outage, not at every attempt. */
      if (!k->why || !g_str_has_suffix (k->why, g_strerror (err)))
        g_warning ("fence keeper at %s: %s; not holding until it answers", k->path,
                   g_strerror (err));
      set_why (k, "fence keeper %s: %s", k->path, g_strerror (err));
      schedule_connect (k);
      return G_SOURCE_REMOVE;
    }
  k->fd = fd;
  k->watch = g_unix_fd_add (fd, G_IO_IN | G_IO_HUP | G_IO_ERR, on_readable, k);
  set_why (k, "fence keeper %s: connected, waiting for its page", k->path);
  return G_SOURCE_REMOVE;
}

static void
schedule_connect (SpKeeper *k)
{
  if (k->retry)
    return;
  k->retry = g_timeout_add (k->backoff_ms, try_connect, k);
  k->backoff_ms = MIN (k->backoff_ms * 2, BACKOFF_MAX_MS);
}

SpKeeper *
sp_keeper_new (const char *path, SpKeeperChangedFunc changed, gpointer user_data)
{
  SpKeeper *k = g_new0 (SpKeeper, 1);

  k->path = g_strdup (path);
  k->changed = changed;
  k->user_data = user_data;
  k->addresses = g_array_new (FALSE, TRUE, sizeof (SpKeeperMsg));
  k->fd = -1;
  k->backoff_ms = BACKOFF_MIN_MS;
  k->why = g_strdup_printf ("fence keeper %s: not connected yet", path);
  try_connect (k);
  return k;
}

void
sp_keeper_free (SpKeeper *k)
{
  if (!k)
    return;
  disconnect (k);
  g_clear_handle_id (&k->retry, g_source_remove);
  g_array_unref (k->addresses);
  g_free (k->path);
  g_free (k->why);
  g_free (k);
}

void
sp_keeper_add_address (SpKeeper *k, int family, const guint8 *addr, guint prefix,
                       const char *ifname)
{
  SpKeeperMsg m = { .magic = SP_KEEPER_MAGIC,
                    .type = SP_KEEPER_MSG_ADDRESS,
                    .family = (uint32_t)family,
                    .prefix = prefix };

  memcpy (m.addr, addr, family == AF_INET ? 4 : 16);
  g_strlcpy (m.ifname, ifname, sizeof m.ifname);
  g_array_append_val (k->addresses, m);
  if (k->page)
    send_msg (k, &m);
}

gboolean
sp_keeper_hold_until (SpKeeper *k, gint64 deadline_usec)
{
  uint64_t want = deadline_usec < 0 ? SP_KEEPER_FOREVER : (uint64_t)deadline_usec * 1000;
  uint64_t seen;
  SpKeeperMsg arm = { .magic = SP_KEEPER_MAGIC, .type = SP_KEEPER_MSG_ARM };

  if (!k->page)
    return FALSE;
  if (k->armed || k->arming)
    {
      /* The keeper writes only to claim an expired deadline. */
      seen = k->written;
      if (want == seen ? __atomic_load_n (&k->page->deadline_ns, __ATOMIC_ACQUIRE) == seen
                       : __atomic_compare_exchange_n (&k->page->deadline_ns, &seen, want, FALSE,
                                                      __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        {
          k->written = want;
          /* Never on a deadline it acked (it let go of it). */
          return k->armed && __atomic_load_n (&k->page->acked_ns, __ATOMIC_ACQUIRE) < want;
        }
      /* It knows: no kill for a deadline it saw pass. */
      __atomic_store_n (&k->page->acked_ns, k->written, __ATOMIC_RELEASE);
      g_warning ("the fence keeper fenced the end of this node's lease: not holding until it "
                 "is armed again");
      k->armed = k->arming = FALSE;
    }
  /* Idle keeper (no deadline, or fenced): a plain store, then ARM. */
  __atomic_store_n (&k->page->deadline_ns, want, __ATOMIC_RELEASE);
  k->written = want;
  k->arming = TRUE;
  send_msg (k, &arm);
  return FALSE;
}

void
sp_keeper_let_go (SpKeeper *k)
{
  if (k->page && k->written != 0)
    __atomic_store_n (&k->page->acked_ns, k->written, __ATOMIC_RELEASE);
}

const char *
sp_keeper_describe (SpKeeper *k)
{
  if (k->armed)
    return "armed";
  if (k->arming)
    return "arming";
  return k->page ? "ready" : k->why;
}
