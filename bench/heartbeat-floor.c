/* The least a leader and its followers can spend on heartbeats on this
 * machine: a minimal C program (no GLib, no codec, no Raft) that does what
 * an idle sparrow cluster does on loopback TCP: every H ms the leader reads
 * the answers waiting for it and sends a heartbeat frame of sparrow's size
 * to each follower; a follower answers each one on a connection of its own.
 * It prints nothing but its pids; cluster-bench.py measures their CPU next
 * to sparrowd's, so the figure for sparrowd can be read against the kernel's
 * own cost of the same exchange.
 *
 *   heartbeat-floor PERIOD_MS FOLLOWERS
 *
 * Runs until killed; the followers exit when the leader does.  Traffic
 * stays on 127.0.0.1. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#define FRAME     92 /* a heartbeat: length prefix and an 11-value header */
#define MAX_PEERS 16

static long long
now_ms (void)
{
  struct timespec t;

  clock_gettime (CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000LL + t.tv_nsec / 1000000;
}

static int
dial (const struct sockaddr_in *a)
{
  int one = 1, s = socket (AF_INET, SOCK_STREAM, 0);

  if (s < 0 || connect (s, (const struct sockaddr *)a, sizeof *a) < 0)
    {
      perror ("heartbeat-floor: connect");
      exit (1);
    }
  setsockopt (s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return s;
}

static void
follower (const struct sockaddr_in *a)
{
  int in = dial (a), out = dial (a);
  char buf[16384];

  prctl (PR_SET_PDEATHSIG, SIGTERM);
  for (;;)
    {
      struct pollfd p = { in, POLLIN, 0 };
      ssize_t n;

      poll (&p, 1, -1);
      n = recv (in, buf, sizeof buf, 0);
      if (n <= 0)
        exit (0);
      if (send (out, buf, (size_t)n, MSG_NOSIGNAL) < 0)
        exit (0);
    }
}

int
main (int argc, char **argv)
{
  int period = argc > 1 ? atoi (argv[1]) : 0, n = argc > 2 ? atoi (argv[2]) : 0, one = 1;
  struct sockaddr_in a = { .sin_family = AF_INET };
  socklen_t len = sizeof a;
  int listener, to[MAX_PEERS], from[MAX_PEERS];
  char frame[FRAME] = { 0 }, buf[16384];
  long long next;

  if (period <= 0 || n < 1 || n > MAX_PEERS)
    {
      fprintf (stderr, "usage: heartbeat-floor PERIOD_MS FOLLOWERS (1-%d)\n", MAX_PEERS);
      return 2;
    }
  a.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
  listener = socket (AF_INET, SOCK_STREAM, 0);
  setsockopt (listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind (listener, (struct sockaddr *)&a, sizeof a) < 0 || listen (listener, 2 * n) < 0
      || getsockname (listener, (struct sockaddr *)&a, &len) < 0)
    {
      perror ("heartbeat-floor: listen");
      return 1;
    }
  printf ("%d", (int)getpid ());
  for (int i = 0; i < n; i++)
    {
      pid_t pid;

      fflush (stdout);
      pid = fork ();
      if (pid == 0)
        follower (&a);
      printf (" %d", (int)pid);
      /* a follower dials its inbound connection first, then its outbound */
      to[i] = accept (listener, NULL, NULL);
      from[i] = accept (listener, NULL, NULL);
      setsockopt (to[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
  printf ("\n");
  fflush (stdout);
  next = now_ms () + period;
  for (;;)
    {
      long long t = now_ms ();

      /* like an idle sparrow leader: one wake-up per heartbeat */
      if (next > t)
        poll (NULL, 0, (int)(next - t));
      next += period;
      for (int i = 0; i < n; i++)
        while (recv (from[i], buf, sizeof buf, MSG_DONTWAIT) > 0)
          ;
      for (int i = 0; i < n; i++)
        if (send (to[i], frame, sizeof frame, MSG_NOSIGNAL) < 0)
          return 1;
    }
}
