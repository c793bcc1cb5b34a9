#include "rtnl.h"

#include <errno.h>
#include <linux/if_addr.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void
add_attr (struct nlmsghdr *nh, int type, const void *data, size_t len)
{
  struct rtattr *rta = (struct rtattr *)((char *)nh + NLMSG_ALIGN (nh->nlmsg_len));

  rta->rta_type = type;
  rta->rta_len = RTA_LENGTH (len);
  memcpy (RTA_DATA (rta), data, len);
  nh->nlmsg_len = NLMSG_ALIGN (nh->nlmsg_len) + RTA_SPACE (len);
}

/* RTM_NEWADDR or RTM_DELADDR, answered at once. */
static SpRtnlResult
request (const SpVipAddress *address, int type, GError **error)
{
  struct
  {
    struct nlmsghdr nh;
    struct ifaddrmsg ifa;
    char attrs[2 * RTA_SPACE (16)];
  } req = { 0 };
  union
  {
    struct nlmsghdr nh;
    char buf[512];
  } reply;
  struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
  size_t len = address->family == AF_INET ? 4 : 16;
  unsigned int ifindex = if_nametoindex (address->ifname);
  gboolean adding = type == RTM_NEWADDR;
  ssize_t n;
  int fd, err;

  if (ifindex == 0)
    {
      if (!adding)
        return SP_RTNL_ABSENT;
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "%s: no interface %s", address->text,
                   address->ifname);
      return SP_RTNL_FAILED;
    }
  req.nh.nlmsg_type = type;
  req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | (adding ? NLM_F_CREATE | NLM_F_REPLACE : 0);
  req.nh.nlmsg_seq = 1;
  req.nh.nlmsg_len = NLMSG_LENGTH (sizeof req.ifa);
  req.ifa.ifa_family = address->family;
  req.ifa.ifa_prefixlen = address->prefix;
  req.ifa.ifa_index = ifindex;
  /* Probed already: no second duplicate address detection. */
  req.ifa.ifa_flags = adding && address->family == AF_INET6 ? IFA_F_NODAD : 0;
  /* IPv4 matches IFA_LOCAL alone (any prefix) and is added with both;
   * IPv6 wants IFA_ADDRESS and the prefix. */
  if (address->family == AF_INET)
    add_attr (&req.nh, IFA_LOCAL, address->addr, len);
  if (address->family == AF_INET6 || adding)
    add_attr (&req.nh, IFA_ADDRESS, address->addr, len);

  fd = socket (AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE);
  if (fd < 0)
    {
      err = errno;
      g_set_error (error, G_IO_ERROR, g_io_error_from_errno (err), "%s: netlink: %s", address->text,
                   g_strerror (err));
      return SP_RTNL_FAILED;
    }
  if (sendto (fd, &req, req.nh.nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0)
    n = -1;
  else
    n = recv (fd, &reply, sizeof reply, 0);
  err = errno;
  close (fd);
  if (n >= (ssize_t)NLMSG_LENGTH (sizeof (struct nlmsgerr)) && reply.nh.nlmsg_type == NLMSG_ERROR)
    {
      err = -((struct nlmsgerr *)NLMSG_DATA (&reply.nh))->error;
      if (err == 0)
        return SP_RTNL_REMOVED;
      if (!adding && (err == EADDRNOTAVAIL || err == ENODEV))
        return SP_RTNL_ABSENT;
    }
  else if (n >= 0)
    err = EPROTO;
  g_set_error (error, G_IO_ERROR, g_io_error_from_errno (err), "%s: %s it: %s", address->text,
               adding ? "adding" : "removing", g_strerror (err));
  return SP_RTNL_FAILED;
}

SpRtnlResult
sp_rtnl_remove_address (const SpVipAddress *address, GError **error)
{
  return request (address, RTM_DELADDR, error);
}

gboolean
sp_rtnl_add_address (const SpVipAddress *address, GError **error)
{
  return request (address, RTM_NEWADDR, error) != SP_RTNL_FAILED;
}

gboolean
sp_rtnl_remove_addresses (GPtrArray *addresses)
{
  gboolean ok = TRUE;

  for (guint k = 0; k < addresses->len; k++)
    {
      SpVipAddress *a = g_ptr_array_index (addresses, k);
      g_autoptr (GError) error = NULL;

      switch (sp_rtnl_remove_address (a, &error))
        {
          case SP_RTNL_REMOVED:
            g_message ("vip: removed %s", a->text);
            break;
          case SP_RTNL_ABSENT:
            break;
          case SP_RTNL_FAILED:
            g_warning ("vip: %s", error->message);
            ok = FALSE;
            break;
        }
    }
  return ok;
}
