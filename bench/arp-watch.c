/* The lab's observer: who answers for an address, every few milliseconds.
 *
 *   arp-watch [--interval-ms N] [--duration S] INTERFACE ADDRESS...
 *
 * Every N ms (default 10) it sends, on INTERFACE, an ARP request for each
 * IPv4 ADDRESS and a neighbour solicitation (to the solicited-node
 * multicast address, hop limit 255) for each IPv6 ADDRESS, and prints one
 * line per answer addressed to it:
 *
 *   CLOCK_MONOTONIC_usec ADDRESS MAC
 *
 * flushed per line, until killed or for S seconds.  CLOCK_MONOTONIC is the
 * clock journald stamps entries with (__MONOTONIC_TIMESTAMP), and the lab's
 * containers share it, so lines compare with the nodes' journals.  Only
 * answers to its own requests count (ARP replies whose target is this
 * interface's address, solicited advertisements to its IPv6 address):
 * gratuitous announcements say what a node claims, not what the network
 * would use.  Runs in the observer's network namespace (nsenter -n), needs
 * CAP_NET_RAW. */
#define _GNU_SOURCE /* ppoll */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <glib.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/icmp6.h>
#include <netinet/ip6.h>
#include <netpacket/packet.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define WATCH_ERROR (g_quark_from_static_string ("arp-watch"))
#define ETH_HLEN_   14
#define ARP_LEN     28
#define NS_LEN      (ETH_HLEN_ + 40 + 24 + 8) /* Ethernet, IPv6, NS, source link-layer option */

typedef struct
{
  int family;
  char text[INET6_ADDRSTRLEN];
  guint8 bytes[16];
} Target;

typedef struct
{
  int fd;
  int ifindex;
  guint8 mac[6];
  gboolean has_ip4, has_ip6;
  guint8 ip4[4];
  guint8 ip6[16];
  GArray *targets; /* of Target */
  int send_errno;  /* last send failure reported, 0 after a success */
} Watcher;

static gint64
now_usec (void)
{
  struct timespec t;

  clock_gettime (CLOCK_MONOTONIC, &t);
  return t.tv_sec * G_GINT64_CONSTANT (1000000) + t.tv_nsec / 1000;
}

static gboolean
parse_targets (char **args, GArray *targets, GError **error)
{
  for (char **a = args; *a; a++)
    {
      Target t = { 0 };

      if (inet_pton (AF_INET, *a, t.bytes) == 1)
        t.family = AF_INET;
      else if (inet_pton (AF_INET6, *a, t.bytes) == 1)
        t.family = AF_INET6;
      else
        {
          g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                       "\"%s\" is not an IPv4 or IPv6 address", *a);
          return FALSE;
        }
      inet_ntop (t.family, t.bytes, t.text, sizeof t.text);
      g_array_append_val (targets, t);
    }
  return TRUE;
}

/* The interface's MAC, first IPv4 address and IPv6 address (link-local
 * preferred: it is there whenever IPv6 is on). */
static gboolean
read_interface (Watcher *w, const char *ifname, GError **error)
{
  struct ifreq ifr = { 0 };
  struct ifaddrs *addrs, *a;
  gboolean global6 = FALSE;

  w->ifindex = if_nametoindex (ifname);
  if (w->ifindex == 0 || strlen (ifname) >= sizeof ifr.ifr_name)
    {
      g_set_error (error, WATCH_ERROR, 0, "no interface %s: %s", ifname, g_strerror (errno));
      return FALSE;
    }
  strcpy (ifr.ifr_name, ifname);
  if (ioctl (w->fd, SIOCGIFHWADDR, &ifr) < 0)
    {
      g_set_error (error, WATCH_ERROR, 0, "%s: reading its MAC: %s", ifname, g_strerror (errno));
      return FALSE;
    }
  memcpy (w->mac, ifr.ifr_hwaddr.sa_data, 6);
  if (getifaddrs (&addrs) < 0)
    {
      g_set_error (error, WATCH_ERROR, 0, "reading addresses: %s", g_strerror (errno));
      return FALSE;
    }
  for (a = addrs; a; a = a->ifa_next)
    {
      if (!a->ifa_addr || g_strcmp0 (a->ifa_name, ifname) != 0)
        continue;
      if (a->ifa_addr->sa_family == AF_INET && !w->has_ip4)
        {
          memcpy (w->ip4, &((struct sockaddr_in *)a->ifa_addr)->sin_addr, 4);
          w->has_ip4 = TRUE;
        }
      else if (a->ifa_addr->sa_family == AF_INET6 && (!w->has_ip6 || global6))
        {
          const struct in6_addr *ip6 = &((struct sockaddr_in6 *)a->ifa_addr)->sin6_addr;

          memcpy (w->ip6, ip6, 16);
          w->has_ip6 = TRUE;
          global6 = !IN6_IS_ADDR_LINKLOCAL (ip6);
        }
    }
  freeifaddrs (addrs);
  for (guint i = 0; i < w->targets->len; i++)
    {
      int family = g_array_index (w->targets, Target, i).family;

      if ((family == AF_INET && !w->has_ip4) || (family == AF_INET6 && !w->has_ip6))
        {
          g_set_error (error, WATCH_ERROR, 0, "%s has no %s address to ask from", ifname,
                       family == AF_INET ? "IPv4" : "IPv6");
          return FALSE;
        }
    }
  return TRUE;
}

static guint16
icmp6_checksum (const guint8 *src, const guint8 *dst, const guint8 *icmp, gsize len)
{
  guint32 sum = len + IPPROTO_ICMPV6;

  for (gsize i = 0; i < 16; i += 2)
    sum += (src[i] << 8 | src[i + 1]) + (dst[i] << 8 | dst[i + 1]);
  for (gsize i = 0; i < len; i += 2)
    sum += icmp[i] << 8 | (i + 1 < len ? icmp[i + 1] : 0);
  while (sum >> 16)
    sum = (sum & 0xffff) + (sum >> 16);
  return ~sum & 0xffff;
}

static gsize
build_arp (const Watcher *w, const Target *t, guint8 *f)
{
  static const guint8 head[] = { 0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1 };

  memset (f, 0xff, 6);
  memcpy (f + 6, w->mac, 6);
  memcpy (f + 12, head, sizeof head);
  memcpy (f + 22, w->mac, 6);
  memcpy (f + 28, w->ip4, 4);
  memset (f + 32, 0, 6);
  memcpy (f + 38, t->bytes, 4);
  return ETH_HLEN_ + ARP_LEN;
}

static gsize
build_ns (const Watcher *w, const Target *t, guint8 *f)
{
  guint8 *ip = f + ETH_HLEN_, *icmp = ip + 40;
  guint8 dst[16] = { 0xff, 0x02, [11] = 1, [12] = 0xff };
  guint16 sum;

  memcpy (dst + 13, t->bytes + 13, 3);
  f[0] = f[1] = 0x33;
  memcpy (f + 2, dst + 12, 4);
  memcpy (f + 6, w->mac, 6);
  f[12] = 0x86;
  f[13] = 0xdd;
  memset (ip, 0, 40);
  ip[0] = 0x60;
  ip[5] = 32; /* payload length */
  ip[6] = IPPROTO_ICMPV6;
  ip[7] = 255; /* hop limit: neighbour discovery ignores anything else */
  memcpy (ip + 8, w->ip6, 16);
  memcpy (ip + 24, dst, 16);
  memset (icmp, 0, 32);
  icmp[0] = ND_NEIGHBOR_SOLICIT;
  memcpy (icmp + 8, t->bytes, 16);
  icmp[24] = ND_OPT_SOURCE_LINKADDR;
  icmp[25] = 1; /* in units of 8 bytes */
  memcpy (icmp + 26, w->mac, 6);
  sum = icmp6_checksum (w->ip6, dst, icmp, 32);
  icmp[2] = sum >> 8;
  icmp[3] = sum & 0xff;
  return NS_LEN;
}

static void
send_requests (Watcher *w)
{
  struct sockaddr_ll to = { .sll_family = AF_PACKET, .sll_ifindex = w->ifindex, .sll_halen = 6 };

  for (guint i = 0; i < w->targets->len; i++)
    {
      const Target *t = &g_array_index (w->targets, Target, i);
      guint8 frame[NS_LEN];
      gsize len = t->family == AF_INET ? build_arp (w, t, frame) : build_ns (w, t, frame);

      to.sll_protocol = htons (t->family == AF_INET ? ETH_P_ARP : ETH_P_IPV6);
      memcpy (to.sll_addr, frame, 6);
      if (sendto (w->fd, frame, len, 0, (struct sockaddr *)&to, sizeof to) >= 0)
        w->send_errno = 0;
      else if (errno != w->send_errno && errno != EAGAIN && errno != ENOBUFS)
        {
          /* Reported once per kind of failure: a link that is down would
           * otherwise print a line per request. */
          w->send_errno = errno;
          g_printerr ("arp-watch: sending a request for %s: %s\n", t->text, g_strerror (errno));
        }
    }
}

static const Target *
find_target (const Watcher *w, int family, const guint8 *bytes)
{
  for (guint i = 0; i < w->targets->len; i++)
    {
      const Target *t = &g_array_index (w->targets, Target, i);

      if (t->family == family && memcmp (t->bytes, bytes, family == AF_INET ? 4 : 16) == 0)
        return t;
    }
  return NULL;
}

/* The target and the answering MAC of a reply to one of our requests. */
static const Target *
parse_answer (const Watcher *w, const guint8 *f, gsize len, const guint8 **mac)
{
  if (len >= ETH_HLEN_ + ARP_LEN && f[12] == 0x08 && f[13] == 0x06)
    {
      const guint8 *arp = f + ETH_HLEN_;

      if (arp[6] != 0 || arp[7] != 2 || memcmp (arp + 24, w->ip4, 4) != 0)
        return NULL;
      *mac = arp + 8;
      return find_target (w, AF_INET, arp + 14);
    }
  if (len >= ETH_HLEN_ + 40 + 24 && f[12] == 0x86 && f[13] == 0xdd)
    {
      const guint8 *ip = f + ETH_HLEN_, *icmp = ip + 40, *opt;

      if (ip[6] != IPPROTO_ICMPV6 || icmp[0] != ND_NEIGHBOR_ADVERT
          || memcmp (ip + 24, w->ip6, 16) != 0)
        return NULL;
      *mac = f + 6;
      /* The target link-layer option names the answering interface. */
      for (opt = icmp + 24; opt + 8 <= f + len && opt[1] > 0; opt += opt[1] * 8)
        if (opt[0] == ND_OPT_TARGET_LINKADDR)
          *mac = opt + 2;
      return find_target (w, AF_INET6, icmp + 8);
    }
  return NULL;
}

static gboolean
receive_answers (Watcher *w, GError **error)
{
  guint8 frame[2048];
  struct sockaddr_ll from;
  socklen_t fromlen = sizeof from;
  ssize_t n;

  while ((n = recvfrom (w->fd, frame, sizeof frame, 0, (struct sockaddr *)&from, &fromlen)) >= 0)
    {
      gint64 t = now_usec ();
      const guint8 *mac = NULL;
      const Target *target;

      fromlen = sizeof from;
      if (from.sll_pkttype == PACKET_OUTGOING)
        continue;
      target = parse_answer (w, frame, n, &mac);
      if (target)
        {
          printf ("%" G_GINT64_FORMAT " %s %02x:%02x:%02x:%02x:%02x:%02x\n", t, target->text,
                  mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
          if (fflush (stdout) != 0)
            {
              g_set_error (error, WATCH_ERROR, 0, "writing: %s", g_strerror (errno));
              return FALSE;
            }
        }
    }
  /* A link going down is reported on the socket once; it may come back. */
  if (errno != EAGAIN && errno != EINTR && errno != ENETDOWN)
    {
      g_set_error (error, WATCH_ERROR, 0, "receiving: %s", g_strerror (errno));
      return FALSE;
    }
  return TRUE;
}

static gboolean
watch (Watcher *w, gint64 interval_usec, gint64 end, GError **error)
{
  gint64 next = now_usec ();

  for (;;)
    {
      struct pollfd p = { .fd = w->fd, .events = POLLIN };
      gint64 now = now_usec (), wait;
      struct timespec timeout;

      if (end && now >= end)
        return TRUE;
      if (now >= next)
        {
          send_requests (w);
          /* Late (the machine was busy): keep the rate, do not catch up. */
          next = MAX (next + interval_usec, now + interval_usec / 2);
        }
      wait = MIN (next, end ? end : next) - now_usec ();
      wait = MAX (wait, 0);
      timeout.tv_sec = wait / 1000000;
      timeout.tv_nsec = wait % 1000000 * 1000;
      if (ppoll (&p, 1, &timeout, NULL) < 0 && errno != EINTR)
        {
          g_set_error (error, WATCH_ERROR, 0, "poll: %s", g_strerror (errno));
          return FALSE;
        }
      if (p.revents & (POLLIN | POLLERR) && !receive_answers (w, error))
        return FALSE;
    }
}

int
main (int argc, char **argv)
{
  int interval_ms = 10;
  double duration = 0;
  GOptionEntry entries[] = {
    { "interval-ms", 'i', 0, G_OPTION_ARG_INT, &interval_ms, "Ask every N ms (10)", "N" },
    { "duration", 'd', 0, G_OPTION_ARG_DOUBLE, &duration, "Stop after S seconds", "S" },
    { NULL },
  };
  g_autoptr (GOptionContext) context = g_option_context_new ("INTERFACE ADDRESS...");
  g_autoptr (GError) error = NULL;
  g_autoptr (GArray) targets = g_array_new (FALSE, TRUE, sizeof (Target));
  Watcher w = { .fd = -1, .targets = targets };
  struct sockaddr_ll at = { .sll_family = AF_PACKET, .sll_protocol = htons (ETH_P_ALL) };
  gboolean ok;

  g_option_context_set_summary (context, "Prints who answers ARP / neighbour solicitations for "
                                         "ADDRESS: CLOCK_MONOTONIC_usec ADDRESS MAC per reply.");
  g_option_context_add_main_entries (context, entries, NULL);
  if (!g_option_context_parse (context, &argc, &argv, &error) || argc < 3 || interval_ms < 1
      || duration < 0 || !parse_targets (argv + 2, targets, &error))
    {
      g_printerr ("arp-watch: %s\n", error ? error->message
                                           : "usage: arp-watch [--interval-ms N >= 1] "
                                             "[--duration S] INTERFACE ADDRESS...");
      return 2;
    }
  w.fd = socket (AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, htons (ETH_P_ALL));
  if (w.fd < 0)
    {
      g_printerr ("arp-watch: packet socket: %s (needs CAP_NET_RAW)\n", g_strerror (errno));
      return 1;
    }
  ok = read_interface (&w, argv[1], &error);
  at.sll_ifindex = w.ifindex;
  if (ok && bind (w.fd, (struct sockaddr *)&at, sizeof at) < 0)
    {
      g_set_error (&error, WATCH_ERROR, 0, "binding to %s: %s", argv[1], g_strerror (errno));
      ok = FALSE;
    }
  ok = ok
       && watch (&w, interval_ms * G_GINT64_CONSTANT (1000),
                 duration > 0 ? now_usec () + (gint64)(duration * 1e6) : 0, &error);
  close (w.fd);
  if (!ok)
    {
      g_printerr ("arp-watch: %s\n", error->message);
      return 1;
    }
  return 0;
}
