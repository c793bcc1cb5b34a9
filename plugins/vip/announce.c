#include "announce.h"

#include <errno.h>
#include <glib-unix.h>
#include <linux/filter.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <netinet/ip6.h>
#include <stddef.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct __attribute__ ((packed))
{
  guint16 htype, ptype;
  guint8 hlen, plen;
  guint16 oper;
  guint8 sha[ETH_ALEN], spa[4], tha[ETH_ALEN], tpa[4];
} ArpPacket;

/* A whole IPv6 packet: built here rather than by the kernel, which would
 * refuse a source address still in DAD (after a re-activation, the
 * link-local one too). */
typedef struct __attribute__ ((packed))
{
  struct ip6_hdr ip;
  guint8 type, code;
  guint16 checksum;
  guint32 flags;
  guint8 target[16];
  guint8 opt_type, opt_len, opt_mac[ETH_ALEN]; /* left out of a DAD probe */
} NdPacket;

#define ND_LEN     (sizeof (NdPacket) - sizeof (struct ip6_hdr))
#define ND_OPT_LEN 8

#define NA_OVERRIDE 0x20000000u

/* Packets the probe reads per wake-up: past this it lets the loop run (its
 * window, the node's ticks) and reads on at the next iteration, so a flood
 * that passes the filter cannot hold the main loop. */
#define PROBE_READ_MAX 32

static gboolean
fail_errno (GError **error, const SpVipAddress *address, const char *what)
{
  int err = errno;

  g_set_error (error, G_IO_ERROR, g_io_error_from_errno (err), "%s: %s: %s", address->text, what,
               g_strerror (err));
  return FALSE;
}

/* The interface's index and MAC. */
static gboolean
link_of (const SpVipAddress *address, int *ifindex, guint8 mac[ETH_ALEN], GError **error)
{
  struct ifreq ifr = { 0 };
  int fd = socket (AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  int ok;

  if (fd < 0)
    return fail_errno (error, address, "socket");
  g_strlcpy (ifr.ifr_name, address->ifname, sizeof ifr.ifr_name);
  ok = ioctl (fd, SIOCGIFHWADDR, &ifr);
  if (ok == 0)
    memcpy (mac, ifr.ifr_hwaddr.sa_data, ETH_ALEN);
  close (fd);
  *ifindex = if_nametoindex (address->ifname);
  if (ok != 0 || *ifindex == 0)
    return fail_errno (error, address, "no such interface");
  return TRUE;
}

/* The kernel's classic BPF filter on the probe's socket: what could be an
 * answer about address, nothing else (a SOCK_DGRAM packet socket's filter
 * sees the packet from its network header on).  IPv4: an ARP packet for
 * IPv4 over Ethernet whose sender is the address.  IPv6: an ICMPv6
 * neighbour advertisement right after the IPv6 header (what answer_of
 * reads) whose target is the address.  Returns the number of instructions. */
static guint
answer_filter (const SpVipAddress *address, struct sock_filter *code)
{
  guint n = 0, reject;
  guint32 word;

#define LOAD(size, at) code[n++] = (struct sock_filter)BPF_STMT (BPF_LD | (size) | BPF_ABS, (at))
#define EXPECT(value)                                                                              \
  code[n++] = (struct sock_filter)BPF_JUMP (BPF_JMP | BPF_JEQ | BPF_K, (value), 0, 0)
  if (address->family == AF_INET)
    {
      LOAD (BPF_H, offsetof (ArpPacket, ptype));
      EXPECT (ETH_P_IP);
      LOAD (BPF_B, offsetof (ArpPacket, hlen));
      EXPECT (ETH_ALEN);
      LOAD (BPF_B, offsetof (ArpPacket, plen));
      EXPECT (4);
      memcpy (&word, address->addr, 4);
      LOAD (BPF_W, offsetof (ArpPacket, spa));
      EXPECT (g_ntohl (word));
    }
  else
    {
      LOAD (BPF_B, offsetof (struct ip6_hdr, ip6_nxt));
      EXPECT (IPPROTO_ICMPV6);
      LOAD (BPF_B, offsetof (NdPacket, type));
      EXPECT (ND_NEIGHBOR_ADVERT);
      for (guint i = 0; i < 16; i += 4)
        {
          memcpy (&word, address->addr + i, 4);
          LOAD (BPF_W, offsetof (NdPacket, target) + i);
          EXPECT (g_ntohl (word));
        }
    }
#undef LOAD
#undef EXPECT
  code[n++] = (struct sock_filter)BPF_STMT (BPF_RET | BPF_K, G_MAXUINT16);
  reject = n;
  code[n++] = (struct sock_filter)BPF_STMT (BPF_RET | BPF_K, 0);
  /* Each failed comparison jumps to the rejection. */
  for (guint i = 0; i < reject; i++)
    if (BPF_CLASS (code[i].code) == BPF_JMP)
      code[i].jf = (guint8)(reject - i - 1);
  return n;
}

/* A packet socket on the address's interface.  It is created with protocol
 * 0, which receives nothing, and given its protocol only in bind, with the
 * interface: it never sees another interface's packets.  To send only,
 * it stays at protocol 0; to read answers, it reads through answer_filter. */
static int
packet_socket (const SpVipAddress *address, int ifindex, gboolean answers, GError **error)
{
  struct sock_filter code[16];
  struct sock_fprog filter = { .filter = code };
  struct sockaddr_ll sll = {
    .sll_family = AF_PACKET,
    .sll_protocol = answers ? htons (address->family == AF_INET ? ETH_P_ARP : ETH_P_IPV6) : 0,
    .sll_ifindex = ifindex,
  };
  int fd = socket (AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

  if (fd < 0)
    return fail_errno (error, address, "packet socket"), -1;
  if (answers)
    {
      filter.len = (unsigned short)answer_filter (address, code);
      g_assert (filter.len <= G_N_ELEMENTS (code));
      if (setsockopt (fd, SOL_SOCKET, SO_ATTACH_FILTER, &filter, sizeof filter) < 0)
        {
          fail_errno (error, address, "packet socket filter");
          close (fd);
          return -1;
        }
    }
  if (bind (fd, (struct sockaddr *)&sll, sizeof sll) < 0)
    {
      fail_errno (error, address, "packet socket");
      close (fd);
      return -1;
    }
  return fd;
}

int
sp_announce_answer_socket (const SpVipAddress *address, int ifindex, GError **error)
{
  return packet_socket (address, ifindex, TRUE, error);
}

/* An ARP request to broadcast: a probe when spa is 0.0.0.0, an
 * announcement when spa is the address. */
static gboolean
send_arp (int fd, const SpVipAddress *address, int ifindex, const guint8 mac[ETH_ALEN],
          gboolean probe, GError **error)
{
  struct sockaddr_ll to = {
    .sll_family = AF_PACKET,
    .sll_protocol = htons (ETH_P_ARP),
    .sll_ifindex = ifindex,
    .sll_halen = ETH_ALEN,
    .sll_addr = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff },
  };
  ArpPacket p = {
    .htype = htons (ARPHRD_ETHER),
    .ptype = htons (ETH_P_IP),
    .hlen = ETH_ALEN,
    .plen = 4,
    .oper = htons (ARPOP_REQUEST),
  };

  memcpy (p.sha, mac, ETH_ALEN);
  if (!probe)
    memcpy (p.spa, address->addr, 4);
  memcpy (p.tpa, address->addr, 4);
  if (sendto (fd, &p, sizeof p, 0, (struct sockaddr *)&to, sizeof to) < 0)
    return fail_errno (error, address, "sending ARP");
  return TRUE;
}

static guint16
icmp6_checksum (const NdPacket *p, guint16 len)
{
  guint32 sum = len + IPPROTO_ICMPV6;
  const guint8 *bytes = (const guint8 *)&p->ip.ip6_src;

  /* The pseudo-header's addresses, then the message. */
  for (guint k = 0; k < 32; k += 2)
    sum += bytes[k] << 8 | bytes[k + 1];
  bytes = &p->type;
  for (guint k = 0; k < len; k += 2)
    sum += bytes[k] << 8 | bytes[k + 1];
  while (sum >> 16)
    sum = (sum & 0xffff) + (sum >> 16);
  return htons (~sum & 0xffff);
}

/* An unsolicited advertisement from the address to all nodes, or a DAD
 * solicitation (from ::, RFC 4862) to the address's solicited-node group. */
static gboolean
send_nd (int fd, const SpVipAddress *address, int ifindex, const guint8 mac[ETH_ALEN],
         gboolean probe, GError **error)
{
  struct sockaddr_ll to = {
    .sll_family = AF_PACKET,
    .sll_protocol = htons (ETH_P_IPV6),
    .sll_ifindex = ifindex,
    .sll_halen = ETH_ALEN,
  };
  NdPacket p = { 0 };
  guint8 *dst = p.ip.ip6_dst.s6_addr;
  guint16 len = probe ? ND_LEN - ND_OPT_LEN : ND_LEN;

  p.ip.ip6_flow = htonl (6u << 28);
  p.ip.ip6_plen = htons (len);
  p.ip.ip6_nxt = IPPROTO_ICMPV6;
  p.ip.ip6_hlim = 255;
  dst[0] = 0xff;
  dst[1] = 0x02;
  memcpy (p.target, address->addr, 16);
  if (probe)
    {
      p.type = ND_NEIGHBOR_SOLICIT;
      dst[11] = 0x01;
      dst[12] = 0xff;
      memcpy (&dst[13], &address->addr[13], 3);
    }
  else
    {
      p.type = ND_NEIGHBOR_ADVERT;
      p.flags = htonl (NA_OVERRIDE);
      p.opt_type = ND_OPT_TARGET_LINKADDR;
      p.opt_len = 1;
      memcpy (p.opt_mac, mac, ETH_ALEN);
      memcpy (p.ip.ip6_src.s6_addr, address->addr, 16);
      dst[15] = 0x01;
    }
  p.checksum = icmp6_checksum (&p, len);
  /* The IPv6 multicast MAC: 33:33 and the group's last four bytes. */
  to.sll_addr[0] = to.sll_addr[1] = 0x33;
  memcpy (&to.sll_addr[2], &dst[12], 4);
  if (sendto (fd, &p, sizeof p.ip + len, 0, (struct sockaddr *)&to, sizeof to) < 0)
    return fail_errno (error, address, probe ? "sending NS" : "sending NA");
  return TRUE;
}

gboolean
sp_announce_once (const SpVipAddress *address, GError **error)
{
  guint8 mac[ETH_ALEN];
  int ifindex, fd;
  gboolean ok;

  if (!link_of (address, &ifindex, mac, error))
    return FALSE;
  fd = packet_socket (address, ifindex, FALSE, error);
  if (fd < 0)
    return FALSE;
  ok = address->family == AF_INET ? send_arp (fd, address, ifindex, mac, FALSE, error)
                                  : send_nd (fd, address, ifindex, mac, FALSE, error);
  close (fd);
  return ok;
}

/* ---- probe ------------------------------------------------------------- */

typedef struct
{
  const SpVipAddress *address; /* the caller keeps it alive until completion */
  guint8 mac[ETH_ALEN];
  int fd;
  GSource *sources[3]; /* readable, window, cancelled */
} Probe;

static void
probe_free (Probe *p)
{
  for (guint i = 0; i < G_N_ELEMENTS (p->sources); i++)
    if (p->sources[i])
      {
        g_source_destroy (p->sources[i]);
        g_source_unref (p->sources[i]);
      }
  if (p->fd >= 0)
    close (p->fd);
  g_free (p);
}

/* The probe holds the one reference on task until the first of its
 * sources completes it; the others go with it. */
static void
probe_complete (GTask *task, char *conflict_mac, GError *error)
{
  Probe *p = g_task_get_task_data (task);

  for (guint i = 0; i < G_N_ELEMENTS (p->sources); i++)
    if (p->sources[i])
      {
        g_source_destroy (p->sources[i]);
        g_clear_pointer (&p->sources[i], g_source_unref);
      }
  if (error)
    g_task_return_error (task, error);
  else
    g_task_return_pointer (task, conflict_mac, g_free);
  g_object_unref (task);
}

/* The MAC that claims the address in this packet, or NULL. */
static const guint8 *
answer_of (Probe *p, const guint8 *buf, gssize n, const struct sockaddr_ll *from)
{
  if (from->sll_pkttype == PACKET_OUTGOING)
    return NULL;
  if (p->address->family == AF_INET)
    {
      const ArpPacket *arp = (const ArpPacket *)buf;

      if (n < (gssize)sizeof *arp || arp->ptype != htons (ETH_P_IP) || arp->hlen != ETH_ALEN
          || arp->plen != 4 || memcmp (arp->spa, p->address->addr, 4) != 0)
        return NULL;
      return arp->sha;
    }
  else
    {
      const NdPacket *na = (const NdPacket *)buf;

      if (n < (gssize)(sizeof na->ip + ND_LEN - ND_OPT_LEN) || na->ip.ip6_nxt != IPPROTO_ICMPV6
          || na->type != ND_NEIGHBOR_ADVERT || memcmp (na->target, p->address->addr, 16) != 0
          || from->sll_halen != ETH_ALEN)
        return NULL;
      return from->sll_addr;
    }
}

static gboolean
probe_readable (int fd, GIOCondition condition, gpointer user_data)
{
  GTask *task = user_data;
  Probe *p = g_task_get_task_data (task);
  guint8 buf[1500];
  struct sockaddr_ll from;
  socklen_t from_len = sizeof from;
  gssize n;
  guint read = 0;

  while (read++ < PROBE_READ_MAX
         && (n = recvfrom (fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &from_len)) >= 0)
    {
      const guint8 *mac = answer_of (p, buf, n, &from);

      from_len = sizeof from;
      if (mac && memcmp (mac, p->mac, ETH_ALEN) != 0)
        {
          probe_complete (task,
                          g_strdup_printf ("%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2],
                                           mac[3], mac[4], mac[5]),
                          NULL);
          return G_SOURCE_REMOVE;
        }
    }
  return G_SOURCE_CONTINUE;
}

static gboolean
probe_window_over (gpointer user_data)
{
  probe_complete (user_data, NULL, NULL);
  return G_SOURCE_REMOVE;
}

static gboolean
probe_cancelled (GCancellable *cancellable, gpointer user_data)
{
  probe_complete (user_data, NULL,
                  g_error_new_literal (G_IO_ERROR, G_IO_ERROR_CANCELLED, "probe cancelled"));
  return G_SOURCE_REMOVE;
}

static void
probe_attach (Probe *p, guint i, GSource *source, GSourceFunc func, GTask *task)
{
  g_source_set_callback (source, func, task, NULL);
  g_source_attach (source, g_task_get_context (task));
  p->sources[i] = source;
}

void
sp_announce_probe_async (const SpVipAddress *address, guint window_ms, GCancellable *cancellable,
                         GAsyncReadyCallback callback, gpointer user_data)
{
  GTask *task = g_task_new (NULL, cancellable, callback, user_data);
  GError *error = NULL;
  Probe *p = g_new0 (Probe, 1);
  int ifindex;

  p->address = address;
  p->fd = -1;
  g_task_set_task_data (task, p, (GDestroyNotify)probe_free);
  if (!link_of (address, &ifindex, p->mac, &error))
    {
      probe_complete (task, NULL, error);
      return;
    }
  /* Listening before asking, so no answer is missed. */
  p->fd = packet_socket (address, ifindex, TRUE, &error);
  if (p->fd < 0
      || !(address->family == AF_INET ? send_arp (p->fd, address, ifindex, p->mac, TRUE, &error)
                                      : send_nd (p->fd, address, ifindex, p->mac, TRUE, &error)))
    {
      probe_complete (task, NULL, error);
      return;
    }
  probe_attach (p, 0, g_unix_fd_source_new (p->fd, G_IO_IN), G_SOURCE_FUNC (probe_readable), task);
  probe_attach (p, 1, g_timeout_source_new (window_ms), probe_window_over, task);
  if (cancellable)
    probe_attach (p, 2, g_cancellable_source_new (cancellable), G_SOURCE_FUNC (probe_cancelled),
                  task);
}

gboolean
sp_announce_probe_finish (GAsyncResult *result, char **conflict_mac, GError **error)
{
  g_autoptr (GError) local = NULL;
  char *mac = g_task_propagate_pointer (G_TASK (result), &local);

  *conflict_mac = mac;
  if (local)
    {
      g_propagate_error (error, g_steal_pointer (&local));
      return FALSE;
    }
  return mac == NULL;
}
