/* A delaying link for the lab, where the kernel has no sch_netem: holds
 * every packet netfilter queues to it for a random while, then lets it go.
 *
 *   nfq-delay [--queue N] [--delay-ms D] [--jitter-ms J] [--seed S]
 *
 * Binds NFQUEUE N (default 0) of the network namespace it runs in
 * (nsenter -n into a lab node; CAP_NET_ADMIN) and accepts each queued
 * packet D ± J ms (default 30 ± 20, uniform, as netem's "delay 30ms 20ms")
 * after it arrived; packets overtake each other as netem's do with jitter.
 * Only metadata is copied, never the payload.  bench/lossy-bench.py sends
 * the members' traffic here with iptables' NFQUEUE target (--queue-bypass:
 * without this program the packets pass undelayed).  On SIGTERM or SIGINT
 * it accepts what it still holds and prints one line:
 *
 *   packets N held_max M dropped_by_kernel K
 *
 * M: the most packets held at once; K: overruns of the netlink socket the
 * kernel reported (ENOBUFS), each losing queued packets. */
#define _GNU_SOURCE /* ppoll */
#include <arpa/inet.h>
#include <errno.h>
#include <glib.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <linux/netlink.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DELAY_ERROR (g_quark_from_static_string ("nfq-delay"))

typedef struct
{
  gint64 due_us;
  guint32 id;
} Held;

static volatile sig_atomic_t stopping;

static void
on_signal (int sig)
{
  (void)sig;
  stopping = 1;
}

static gint64
now_us (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (gint64)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void
put_attr (GByteArray *msg, guint16 type, const void *data, guint16 len)
{
  struct nlattr a = { .nla_len = NLA_HDRLEN + len, .nla_type = type };
  static const guint8 pad[NLA_ALIGNTO];

  g_byte_array_append (msg, (const guint8 *)&a, sizeof a);
  g_byte_array_append (msg, data, len);
  g_byte_array_append (msg, pad, NLA_ALIGN (len) - len);
}

/* A message to the queue subsystem with its header filled in; attributes
 * follow with put_attr, send_msg fixes the length. */
static GByteArray *
new_msg (guint8 type, guint16 flags, guint16 queue)
{
  GByteArray *msg = g_byte_array_new ();
  struct nlmsghdr h
      = { .nlmsg_type = (NFNL_SUBSYS_QUEUE << 8) | type, .nlmsg_flags = NLM_F_REQUEST | flags };
  struct nfgenmsg g
      = { .nfgen_family = AF_UNSPEC, .version = NFNETLINK_V0, .res_id = htons (queue) };

  g_byte_array_append (msg, (const guint8 *)&h, sizeof h);
  g_byte_array_append (msg, (const guint8 *)&g, sizeof g);
  return msg;
}

static gboolean
send_msg (int fd, GByteArray *msg, GError **error)
{
  ((struct nlmsghdr *)msg->data)->nlmsg_len = msg->len;
  if (send (fd, msg->data, msg->len, 0) < 0)
    {
      g_set_error (error, DELAY_ERROR, errno, "netlink send: %s", g_strerror (errno));
      return FALSE;
    }
  return TRUE;
}

/* Sends a configuration request and waits for the kernel's acknowledgement. */
static gboolean
configure (int fd, GByteArray *msg, const char *what, GError **error)
{
  guint8 buf[4096];
  ssize_t n;
  g_autoptr (GByteArray) owned = msg;

  if (!send_msg (fd, owned, error))
    return FALSE;
  n = recv (fd, buf, sizeof buf, 0);
  if (n < (ssize_t)(NLMSG_HDRLEN + sizeof (struct nlmsgerr)))
    {
      g_set_error (error, DELAY_ERROR, 0, "%s: no answer from the kernel", what);
      return FALSE;
    }
  struct nlmsghdr *h = (struct nlmsghdr *)buf;
  struct nlmsgerr *e = NLMSG_DATA (h);
  if (h->nlmsg_type != NLMSG_ERROR || e->error != 0)
    {
      g_set_error (error, DELAY_ERROR, 0, "%s: %s", what,
                   h->nlmsg_type == NLMSG_ERROR ? g_strerror (-e->error) : "unexpected answer");
      return FALSE;
    }
  return TRUE;
}

static gboolean
bind_queue (int fd, guint16 queue, GError **error)
{
  struct nfqnl_msg_config_cmd cmd = { .command = NFQNL_CFG_CMD_BIND, .pf = htons (AF_INET) };
  struct nfqnl_msg_config_params params = { .copy_range = htonl (0), .copy_mode = NFQNL_COPY_META };
  guint32 maxlen = htonl (16384);
  GByteArray *msg = new_msg (NFQNL_MSG_CONFIG, NLM_F_ACK, queue);

  put_attr (msg, NFQA_CFG_CMD, &cmd, sizeof cmd);
  if (!configure (fd, msg, "binding the queue", error))
    return FALSE;
  msg = new_msg (NFQNL_MSG_CONFIG, NLM_F_ACK, queue);
  put_attr (msg, NFQA_CFG_PARAMS, &params, sizeof params);
  put_attr (msg, NFQA_CFG_QUEUE_MAXLEN, &maxlen, sizeof maxlen);
  return configure (fd, msg, "setting the copy mode", error);
}

static gboolean
accept_packet (int fd, guint16 queue, guint32 id, GError **error)
{
  struct nfqnl_msg_verdict_hdr v = { .verdict = htonl (NF_ACCEPT), .id = htonl (id) };
  g_autoptr (GByteArray) msg = new_msg (NFQNL_MSG_VERDICT, 0, queue);

  put_attr (msg, NFQA_VERDICT_HDR, &v, sizeof v);
  return send_msg (fd, msg, error);
}

/* The queued packets in buf: each gets its due time in held. */
static void
take_packets (const guint8 *buf, ssize_t len, GArray *held, GRand *rand, gint64 delay_us,
              gint64 jitter_us, guint64 *packets)
{
  gint64 now = now_us ();

  for (const struct nlmsghdr *h = (const void *)buf; NLMSG_OK (h, (guint32)len);
       h = NLMSG_NEXT (h, len))
    {
      if (h->nlmsg_type != ((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET))
        continue;
      int rest = h->nlmsg_len - NLMSG_SPACE (sizeof (struct nfgenmsg));
      const struct nlattr *a
          = (const void *)((const guint8 *)NLMSG_DATA (h) + NLMSG_ALIGN (sizeof (struct nfgenmsg)));

      for (; rest >= NLA_HDRLEN && a->nla_len >= NLA_HDRLEN && a->nla_len <= rest;
           rest -= NLA_ALIGN (a->nla_len),
           a = (const void *)((const guint8 *)a + NLA_ALIGN (a->nla_len)))
        if ((a->nla_type & NLA_TYPE_MASK) == NFQA_PACKET_HDR
            && a->nla_len >= NLA_HDRLEN + sizeof (struct nfqnl_msg_packet_hdr))
          {
            const struct nfqnl_msg_packet_hdr *p = (const void *)((const guint8 *)a + NLA_HDRLEN);
            Held x = { .due_us = now + delay_us
                                 + (jitter_us ? g_rand_int_range (rand, -(gint32)jitter_us,
                                                                  (gint32)jitter_us + 1)
                                              : 0),
                       .id = ntohl (p->packet_id) };

            g_array_append_val (held, x);
            (*packets)++;
          }
    }
}

int
main (int argc, char **argv)
{
  gint queue = 0, delay_ms = 30, jitter_ms = 20;
  gint64 seed = 0;
  GOptionEntry entries[] = {
    { "queue", 0, 0, G_OPTION_ARG_INT, &queue, "NFQUEUE number (0)", "N" },
    { "delay-ms", 0, 0, G_OPTION_ARG_INT, &delay_ms, "mean delay (30)", "D" },
    { "jitter-ms", 0, 0, G_OPTION_ARG_INT, &jitter_ms, "uniform spread either side (20)", "J" },
    { "seed", 0, 0, G_OPTION_ARG_INT64, &seed, "random seed (0: from the clock)", "S" },
    { NULL },
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("- hold queued packets D ± J ms");
  g_autoptr (GError) error = NULL;
  g_autoptr (GArray) held = g_array_new (FALSE, FALSE, sizeof (Held));
  g_autoptr (GRand) rand = NULL;
  static guint8 buf[1 << 16];
  guint64 packets = 0, overruns = 0;
  gint64 held_max = 0;
  int fd, rcvbuf = 4 << 20;

  g_option_context_add_main_entries (ctx, entries, NULL);
  if (!g_option_context_parse (ctx, &argc, &argv, &error))
    {
      g_printerr ("nfq-delay: %s\n", error->message);
      return 2;
    }
  if (queue < 0 || queue > 65535 || delay_ms < 0 || jitter_ms < 0 || jitter_ms > delay_ms)
    {
      g_printerr ("nfq-delay: need 0 <= queue <= 65535 and 0 <= jitter-ms <= delay-ms\n");
      return 2;
    }
  rand = seed ? g_rand_new_with_seed ((guint32)seed) : g_rand_new ();
  signal (SIGTERM, on_signal);
  signal (SIGINT, on_signal);
  fd = socket (AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (fd < 0)
    {
      g_printerr ("nfq-delay: netlink socket: %s\n", g_strerror (errno));
      return 1;
    }
  /* Packets arrive in bursts (a TCP window); a small buffer drops them. */
  setsockopt (fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf);
  if (!bind_queue (fd, (guint16)queue, &error))
    {
      g_printerr ("nfq-delay: %s\n", error->message);
      return 1;
    }
  printf ("ready\n");
  fflush (stdout);
  while (!stopping || held->len)
    {
      gint64 now = now_us (), next = G_MAXINT64;

      for (guint i = 0; i < held->len;)
        {
          Held *h = &g_array_index (held, Held, i);

          if (h->due_us <= now || stopping)
            {
              if (!accept_packet (fd, (guint16)queue, h->id, &error))
                {
                  g_printerr ("nfq-delay: %s\n", error->message);
                  return 1;
                }
              g_array_remove_index_fast (held, i);
              continue;
            }
          next = MIN (next, h->due_us);
          i++;
        }
      if (stopping)
        continue;
      held_max = MAX (held_max, (gint64)held->len);
      struct pollfd p = { .fd = fd, .events = POLLIN };
      gint64 wait = next == G_MAXINT64 ? 1000000 : MAX (0, next - now);
      struct timespec ts = { .tv_sec = wait / 1000000, .tv_nsec = (wait % 1000000) * 1000 };

      if (ppoll (&p, 1, &ts, NULL) < 0 && errno != EINTR)
        {
          g_printerr ("nfq-delay: poll: %s\n", g_strerror (errno));
          return 1;
        }
      if (!(p.revents & POLLIN))
        continue;
      for (;;)
        {
          ssize_t n = recv (fd, buf, sizeof buf, MSG_DONTWAIT);

          if (n < 0 && errno == ENOBUFS)
            {
              overruns++;
              continue;
            }
          if (n <= 0)
            break;
          take_packets (buf, n, held, rand, (gint64)delay_ms * 1000, (gint64)jitter_ms * 1000,
                        &packets);
        }
    }
  printf ("packets %" G_GUINT64_FORMAT " held_max %" G_GINT64_FORMAT
          " dropped_by_kernel %" G_GUINT64_FORMAT "\n",
          packets, held_max, overruns);
  close (fd);
  return 0;
}
