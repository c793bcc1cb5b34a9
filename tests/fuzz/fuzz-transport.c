/* The transport's framing (daemon/transport.c) on hostile bytes, through
 * its public API and a real loopback connection: a plaintext transport
 * (node 1 "alpha", knowing peer 2 "beta") listens on 127.0.0.1, and each
 * input is what a client sends it — the hello, then frames — cut into
 * pieces so that frames and headers arrive in parts.  The input's first
 * byte seeds the cutting (0: all at once).  After the client's end of the
 * stream the transport must close the connection (every path ends there:
 * a refused frame, or the end of the stream), within a deadline. */
#include "fuzz.h"

#include <errno.h>
#include <glib-unix.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "transport.h"

#define DEADLINE_US (10 * G_USEC_PER_SEC)

static SpTransport *transport;
static guint received;

static void
on_receive (const SpRaftMsg *m, gpointer user_data)
{
  /* In plaintext any id but its own may speak; always to it. */
  if (m->from == SP_RAFT_NONE || m->from == 1 || m->to != 1)
    abort ();
  received++;
}

static void
setup (void)
{
  SpTransportOptions opts = { .id = 1, .name = "alpha" };

  if (transport)
    return;
  transport = sp_transport_new (&opts, on_receive, NULL);
  if (!sp_transport_listen (transport, "127.0.0.1", 0, NULL))
    abort ();
  /* Port 9 (discard) on the loopback: dialing it is refused, retried slowly. */
  sp_transport_set_peer (transport, 2, "beta", "127.0.0.1", 9);
}

static void
drain (void)
{
  while (g_main_context_iteration (NULL, FALSE))
    ;
}

static gboolean
on_wake (gpointer data)
{
  return G_SOURCE_CONTINUE;
}

static gboolean
on_client (gint fd, GIOCondition condition, gpointer data)
{
  return G_SOURCE_CONTINUE;
}

/* TRUE once the transport closed its end (the client reads 0 or an error). */
static gboolean
closed_by_transport (int fd)
{
  char byte;
  ssize_t n = recv (fd, &byte, 1, MSG_DONTWAIT);

  if (n > 0) /* it never writes on a connection it accepted */
    abort ();
  return n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
}

static int
client_connect (void)
{
  struct sockaddr_in sin = {
    .sin_family = AF_INET,
    .sin_port = htons (sp_transport_local_port (transport)),
    .sin_addr.s_addr = htonl (INADDR_LOOPBACK),
  };
  /* Each from another address of 127.1.0.0/16: thousands of connections
   * a second would otherwise run into their own TIME-WAITs. */
  static guint32 next;
  struct sockaddr_in from = {
    .sin_family = AF_INET,
    .sin_addr.s_addr = htonl (0x7f010000u | (1 + next++ % 0xfffe)),
  };
  int fd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int status = -1;

  if (fd >= 0 && bind (fd, (struct sockaddr *)&from, sizeof from) == 0)
    status = connect (fd, (struct sockaddr *)&sin, sizeof sin);
  /* libFuzzer's timers interrupt it: the connect goes on, and ends as
   * SO_ERROR says once the socket is writable. */
  if (status < 0 && errno == EINTR)
    {
      struct pollfd p = { .fd = fd, .events = POLLOUT };
      socklen_t len = sizeof status;

      while (poll (&p, 1, 5000) < 0 && errno == EINTR)
        ;
      if (getsockopt (fd, SOL_SOCKET, SO_ERROR, &status, &len) == 0 && status != 0)
        {
          errno = status;
          status = -1;
        }
    }
  if (status < 0)
    {
      fprintf (stderr, "cannot connect to the transport: %s\n", g_strerror (errno));
      abort ();
    }
  return fd;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  g_autoptr (GRand) rand = NULL;
  gint64 deadline;
  size_t at = 1;
  guint watch, wake;
  int fd;

  sp_fuzz_init ();
  setup ();
  if (size < 1)
    return 0;
  rand = g_rand_new_with_seed (data[0]);
  fd = client_connect ();
  deadline = g_get_monotonic_time () + DEADLINE_US;
  while (at < size)
    {
      /* Drawn apart: MIN evaluates its arguments twice. */
      size_t draw = data[0] ? (size_t)g_rand_int_range (rand, 1, 16 * data[0] + 2) : size;
      size_t piece = MIN (draw, size - at);
      ssize_t n = send (fd, data + at, piece, MSG_NOSIGNAL | MSG_DONTWAIT);

      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        g_main_context_iteration (NULL, TRUE);
      else if (n < 0) /* closed by the transport (a refused frame) */
        break;
      else
        at += (size_t)n;
      drain ();
      if (g_get_monotonic_time () > deadline)
        abort ();
    }
  shutdown (fd, SHUT_WR);
  /* Wakes the loop when the client's end becomes readable (closed), and
   * now and then to check the deadline. */
  watch = g_unix_fd_add (fd, G_IO_IN | G_IO_HUP | G_IO_ERR, on_client, NULL);
  wake = g_timeout_add (100, on_wake, NULL);
  while (!closed_by_transport (fd))
    {
      g_main_context_iteration (NULL, TRUE);
      if (g_get_monotonic_time () > deadline)
        abort (); /* the stream ended and the transport still holds it */
    }
  g_source_remove (watch);
  g_source_remove (wake);
  close (fd);
  drain ();
  return 0;
}
