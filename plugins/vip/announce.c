#include "announce.h"

#include <errno.h>
#include <glib-unix.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
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

typedef struct __attribute__ ((packed))
{
  guint8 type, code;
  guint16 checksum;
  guint32 flags;
  guint8 target[16];
  guint8 opt_type, opt_len, opt_mac[ETH_ALEN];
} NdPacket;

#define NA_OVERRIDE 0x20000000u

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

static int
arp_socket (const SpVipAddress *address, int ifindex, GError **error)
{
  struct sockaddr_ll sll = {
    .sll_family = AF_PACKET,
    .sll_protocol = htons (ETH_P_ARP),
    .sll_ifindex = ifindex,
  };
  int fd = socket (AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, htons (ETH_P_ARP));

  if (fd < 0)
    return fail_errno (error, address, "ARP socket"), -1;
  if (bind (fd, (struct sockaddr *)&sll, sizeof sll) < 0)
    {
      fail_errno (error, address, "ARP socket");
      close (fd);
      return -1;
    }
  return fd;
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

static int
icmp6_socket (const SpVipAddress *address, int ifindex, GError **error)
{
  int hops = 255, loop = 0;
  struct icmp6_filter filter;
  int fd = socket (AF_INET6, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, IPPROTO_ICMPV6);

  if (fd < 0)
    return fail_errno (error, address, "ICMPv6 socket"), -1;
  ICMP6_FILTER_SETBLOCKALL (&filter);
  ICMP6_FILTER_SETPASS (ND_NEIGHBOR_ADVERT, &filter);
  if (setsockopt (fd, IPPROTO_ICMPV6, ICMP6_FILTER, &filter, sizeof filter) < 0
      || setsockopt (fd, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, &hops, sizeof hops) < 0
      || setsockopt (fd, IPPROTO_IPV6, IPV6_UNICAST_HOPS, &hops, sizeof hops) < 0
      || setsockopt (fd, IPPROTO_IPV6, IPV6_MULTICAST_LOOP, &loop, sizeof loop) < 0
      || setsockopt (fd, IPPROTO_IPV6, IPV6_MULTICAST_IF, &ifindex, sizeof ifindex) < 0)
    {
      fail_errno (error, address, "ICMPv6 socket");
      close (fd);
      return -1;
    }
  return fd;
}

/* An unsolicited advertisement to all nodes, or a solicitation to the
 * address's solicited-node group (the kernel fills in the checksum). */
static gboolean
send_nd (int fd, const SpVipAddress *address, int ifindex, const guint8 mac[ETH_ALEN],
         gboolean probe, GError **error)
{
  struct sockaddr_in6 to = { .sin6_family = AF_INET6, .sin6_scope_id = ifindex };
  NdPacket p = { 0 };

  memcpy (p.target, address->addr, 16);
  memcpy (p.opt_mac, mac, ETH_ALEN);
  p.opt_len = 1;
  to.sin6_addr.s6_addr[0] = 0xff;
  to.sin6_addr.s6_addr[1] = 0x02;
  if (probe)
    {
      p.type = ND_NEIGHBOR_SOLICIT;
      p.opt_type = ND_OPT_SOURCE_LINKADDR;
      to.sin6_addr.s6_addr[11] = 0x01;
      to.sin6_addr.s6_addr[12] = 0xff;
      memcpy (&to.sin6_addr.s6_addr[13], &address->addr[13], 3);
    }
  else
    {
      p.type = ND_NEIGHBOR_ADVERT;
      p.flags = htonl (NA_OVERRIDE);
      p.opt_type = ND_OPT_TARGET_LINKADDR;
      to.sin6_addr.s6_addr[15] = 0x01;
    }
  if (sendto (fd, &p, sizeof p, 0, (struct sockaddr *)&to, sizeof to) < 0)
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
  fd = address->family == AF_INET ? arp_socket (address, ifindex, error)
                                  : icmp6_socket (address, ifindex, error);
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
answer_of (Probe *p, const guint8 *buf, gssize n)
{
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

      if (n < (gssize)sizeof *na || na->type != ND_NEIGHBOR_ADVERT
          || memcmp (na->target, p->address->addr, 16) != 0
          || na->opt_type != ND_OPT_TARGET_LINKADDR || na->opt_len != 1)
        return NULL;
      return na->opt_mac;
    }
}

static gboolean
probe_readable (int fd, GIOCondition condition, gpointer user_data)
{
  GTask *task = user_data;
  Probe *p = g_task_get_task_data (task);
  guint8 buf[1500];
  gssize n;

  while ((n = recv (fd, buf, sizeof buf, 0)) >= 0)
    {
      const guint8 *mac = answer_of (p, buf, n);

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
  p->fd = address->family == AF_INET ? arp_socket (address, ifindex, &error)
                                     : icmp6_socket (address, ifindex, &error);
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
