/* The vip plugin's probe socket (plugins/vip/announce.c) on a real link:
 * veth pairs in a network namespace of the test's own (root only, else
 * skipped), frames sent from the far end by a packet socket.  The socket
 * must see only what could answer the probe, and only on its interface;
 * a probe under a flood of other frames must end on time. */
#define _GNU_SOURCE /* unshare */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "announce.h"

#define ANSWER_MAC "02:00:00:00:00:07"

static const guint8 answer_mac[ETH_ALEN] = { 2, 0, 0, 0, 0, 7 };

/* A frame sent from the far end of a veth pair (to broadcast). */
static void
send_frame (const char *ifname, guint16 protocol, const void *frame, gsize len)
{
  static int fd = -1;
  struct sockaddr_ll sll = {
    .sll_family = AF_PACKET,
    .sll_protocol = htons (protocol),
    .sll_ifindex = (int)if_nametoindex (ifname),
    .sll_halen = ETH_ALEN,
    .sll_addr = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff },
  };

  if (fd < 0)
    fd = socket (AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ck_assert_int_ge (fd, 0);
  ck_assert_int_eq (sendto (fd, frame, len, 0, (struct sockaddr *)&sll, sizeof sll), (ssize_t)len);
}

/* An ARP reply for IPv4 over Ethernet from sender (ptype as given). */
static void
send_arp (const char *ifname, const char *sender, guint16 ptype)
{
  guint8 arp[28] = { 0, 1, ptype >> 8, ptype & 0xff, 6, 4, 0, 2 };

  memcpy (arp + 8, answer_mac, ETH_ALEN);
  inet_pton (AF_INET, sender, arp + 14);
  send_frame (ifname, ETH_P_ARP, arp, sizeof arp);
}

/* An IPv6 packet: next header nxt, then an ICMPv6 header of type (or a
 * UDP header's first bytes) and a neighbour discovery target. */
static void
send_ipv6 (const char *ifname, guint8 nxt, guint8 type, const char *target)
{
  guint8 p[40 + 32] = { 0x60 };

  p[5] = 32; /* payload length */
  p[6] = nxt;
  p[7] = 255;
  inet_pton (AF_INET6, "fe80::7", p + 8);
  inet_pton (AF_INET6, "ff02::1", p + 24);
  p[40] = type;
  inet_pton (AF_INET6, target, p + 48);
  p[64] = 2; /* target link-layer address option */
  p[65] = 1;
  memcpy (p + 66, answer_mac, ETH_ALEN);
  send_frame (ifname, ETH_P_IPV6, p, sizeof p);
}

/* What socket fd receives next within timeout_ms: its length (0: nothing)
 * and the interface it came in on. */
static gssize
receive (int fd, int timeout_ms, guint8 *buf, gsize size, int *ifindex)
{
  struct pollfd pfd = { .fd = fd, .events = POLLIN };
  struct sockaddr_ll from;
  socklen_t from_len = sizeof from;
  gssize n;

  if (poll (&pfd, 1, timeout_ms) <= 0)
    return 0;
  n = recvfrom (fd, buf, size, MSG_DONTWAIT, (struct sockaddr *)&from, &from_len);
  ck_assert_int_gt (n, 0);
  *ifindex = from.sll_ifindex;
  return n;
}

static int
answer_socket (const char *text)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (SpVipAddress) address = sp_vip_address_parse (text, &error);
  int fd;

  ck_assert_msg (address, "%s", error ? error->message : "");
  fd = sp_announce_answer_socket (address, (int)if_nametoindex (address->ifname), &error);
  ck_assert_msg (fd >= 0, "%s", error ? error->message : "");
  return fd;
}

START_TEST (test_ipv4_only_answers)
{
  int fd = answer_socket ("10.77.0.100/24@va");
  guint8 buf[1500];
  int ifindex = 0;
  gssize n;

  /* The answer on another interface first: never seen. */
  send_arp ("vd", "10.77.0.100", ETH_P_IP);
  for (int i = 0; i < 200; i++)
    {
      send_arp ("vb", "10.77.0.7", ETH_P_IP);     /* another address's */
      send_arp ("vb", "10.77.0.100", ETH_P_IPV6); /* not for IPv4 */
      send_ipv6 ("vb", IPPROTO_UDP, 0, "fd77::100");
    }
  send_arp ("vb", "10.77.0.100", ETH_P_IP);
  n = receive (fd, 2000, buf, sizeof buf, &ifindex);
  ck_assert_int_eq (n, 28);
  ck_assert_int_eq (ifindex, (int)if_nametoindex ("va"));
  ck_assert_mem_eq (buf + 14, ((guint8[]){ 10, 77, 0, 100 }), 4);
  /* What came before it was dropped by the kernel, not queued. */
  ck_assert_int_eq (receive (fd, 0, buf, sizeof buf, &ifindex), 0);
  close (fd);
}
END_TEST

START_TEST (test_ipv6_only_answers)
{
  int fd = answer_socket ("fd77::100/64@va");
  guint8 buf[1500], target[16];
  int ifindex = 0;
  gssize n;

  send_ipv6 ("vd", IPPROTO_ICMPV6, 136, "fd77::100");
  for (int i = 0; i < 200; i++)
    {
      send_ipv6 ("vb", IPPROTO_UDP, 0, "fd77::100");      /* not ICMPv6 */
      send_ipv6 ("vb", IPPROTO_ICMPV6, 128, "fd77::100"); /* an echo request */
      send_ipv6 ("vb", IPPROTO_ICMPV6, 135, "fd77::100"); /* a solicitation */
      send_ipv6 ("vb", IPPROTO_ICMPV6, 136, "fd77::7");   /* another target */
      send_arp ("vb", "10.77.0.100", ETH_P_IP);
    }
  send_ipv6 ("vb", IPPROTO_ICMPV6, 136, "fd77::100");
  n = receive (fd, 2000, buf, sizeof buf, &ifindex);
  ck_assert_int_eq (n, 72);
  ck_assert_int_eq (ifindex, (int)if_nametoindex ("va"));
  inet_pton (AF_INET6, "fd77::100", target);
  ck_assert_int_eq (buf[40], 136);
  ck_assert_mem_eq (buf + 48, target, 16);
  ck_assert_int_eq (receive (fd, 0, buf, sizeof buf, &ifindex), 0);
  close (fd);
}
END_TEST

/* ---- a probe under a flood ------------------------------------------------ */

typedef struct
{
  gboolean done;
  gboolean free;
  char *conflict;
  GError *error;
} Result;

static void
on_probed (GObject *source, GAsyncResult *res, gpointer user_data)
{
  Result *r = user_data;

  r->free = sp_announce_probe_finish (res, &r->conflict, &r->error);
  r->done = TRUE;
}

/* Floods vb with frames the probe must ignore (and, with answer, its
 * answer now and then) until killed. */
static pid_t
flood (gboolean answer)
{
  pid_t pid = fork ();

  ck_assert_int_ge (pid, 0);
  if (pid > 0)
    return pid;
  for (guint i = 0;; i++)
    {
      send_arp ("vb", "10.77.0.7", ETH_P_IP);
      send_ipv6 ("vb", IPPROTO_UDP, 0, "fd77::7");
      if (answer && i % 1000 == 999)
        send_arp ("vb", "10.77.0.100", ETH_P_IP);
    }
}

static void
probe (gboolean answer, Result *r, double *seconds)
{
  g_autoptr (SpVipAddress) address = sp_vip_address_parse ("10.77.0.100/24@va", NULL);
  pid_t flooder = flood (answer);
  gint64 start, deadline;

  g_usleep (100 * 1000); /* the flood under way */
  start = g_get_monotonic_time ();
  deadline = start + 5 * G_USEC_PER_SEC;
  sp_announce_probe_async (address, 200, NULL, on_probed, r);
  while (!r->done && g_get_monotonic_time () < deadline)
    g_main_context_iteration (NULL, FALSE);
  *seconds = (g_get_monotonic_time () - start) / (double)G_USEC_PER_SEC;
  kill (flooder, SIGKILL);
  waitpid (flooder, NULL, 0);
  ck_assert_msg (r->done, "the probe did not end within 5 s under a flood");
  ck_assert_msg (!r->error, "%s", r->error ? r->error->message : "");
}

START_TEST (test_probe_under_flood)
{
  Result r = { 0 };
  double seconds;

  probe (FALSE, &r, &seconds);
  printf ("probe of 200 ms under a flood: ended after %.3f s\n", seconds);
  ck_assert (r.free);
  ck_assert_double_lt (seconds, 1.0);
}
END_TEST

START_TEST (test_probe_answer_in_flood)
{
  Result r = { 0 };
  double seconds;

  probe (TRUE, &r, &seconds);
  ck_assert (!r.free);
  ck_assert_str_eq (r.conflict, ANSWER_MAC);
  g_free (r.conflict);
}
END_TEST

/* A namespace of the test's own with two veth pairs: va-vb, vc-vd. */
static const char *
make_links (void)
{
  if (geteuid () != 0)
    return "needs root (a network namespace of its own)";
  if (unshare (CLONE_NEWNET) < 0)
    return "cannot make a network namespace";
  if (system ("ip link add va type veth peer name vb && ip link add vc type veth peer name vd"
              " && for l in va vb vc vd; do ip link set $l up || exit 1; done")
      != 0)
    return "cannot make veth links (ip from iproute2)";
  return NULL;
}

int
main (void)
{
  Suite *s = suite_create ("announce");
  TCase *tc = tcase_create ("announce");
  const char *skip = make_links ();
  SRunner *sr;
  int failed;

  if (skip)
    {
      printf ("skipped: %s\n", skip);
      return 77;
    }
  tcase_set_timeout (tc, 30);
  tcase_add_test (tc, test_ipv4_only_answers);
  tcase_add_test (tc, test_ipv6_only_answers);
  tcase_add_test (tc, test_probe_under_flood);
  tcase_add_test (tc, test_probe_answer_in_flood);
  suite_add_tcase (s, tc);
  sr = srunner_create (s);
  srunner_run_all (sr, CK_NORMAL);
  failed = srunner_ntests_failed (sr);
  srunner_free (sr);
  return failed == 0 ? 0 : 1;
}
