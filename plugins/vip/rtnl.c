#include "rtnl.h"

#include <errno.h>
#include <linux/if_addr.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

SpRtnlResult
sp_rtnl_remove_address (const SpVipAddress *address, GError **error)
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
  struct rtattr *rta;
  ssize_t n;
  int fd, err;

  if (ifindex == 0)
    return SP_RTNL_ABSENT;
  req.nh.nlmsg_type = RTM_DELADDR;
  req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  req.nh.nlmsg_seq = 1;
  req.ifa.ifa_family = address->family;
  req.ifa.ifa_prefixlen = address->prefix;
  req.ifa.ifa_index = ifindex;
  /* IPv4 matches IFA_LOCAL alone (any prefix); IPv6 wants IFA_ADDRESS and
   * the prefix. */
  rta = (struct rtattr *)req.attrs;
  rta->rta_type = address->family == AF_INET ? IFA_LOCAL : IFA_ADDRESS;
  rta->rta_len = RTA_LENGTH (len);
  memcpy (RTA_DATA (rta), address->addr, len);
  req.nh.nlmsg_len = NLMSG_LENGTH (sizeof req.ifa) + RTA_SPACE (len);

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
      if (err == EADDRNOTAVAIL || err == ENODEV)
        return SP_RTNL_ABSENT;
    }
  else if (n >= 0)
    err = EPROTO;
  g_set_error (error, G_IO_ERROR, g_io_error_from_errno (err), "%s: removing it: %s", address->text,
               g_strerror (err));
  return SP_RTNL_FAILED;
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
