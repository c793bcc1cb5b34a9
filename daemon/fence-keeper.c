/* sparrow-fence: the fence keeper (contract: keeper-proto.h).
 *
 * A separate process in a unit of its own (sparrow-fence.service), so that
 * whatever stops sparrowd from running (SIGSTOP, a frozen or CPU-starved
 * sparrow.service cgroup) does not stop it: at the end of sparrowd's lease
 * the addresses sparrowd may hold leave the kernel, the leader-only unit is
 * told to stop, and a sparrowd that did not see its lease end is killed
 * (through a pidfd: no pid reuse).  Plain C and libc, one poll loop, asleep
 * but for its timer at the deadline it last read (the lease runs about a
 * heartbeat ahead, so about once per heartbeat while sparrowd holds).
 *
 * Privilege: it runs as sparrowd's user with CAP_NET_ADMIN only, which
 * sparrowd has too, and talks only to a peer of its own uid: what a client
 * can make it do (remove addresses, stop the unit named on its command line
 * by the admin, kill the client) the client could do itself.
 *
 * Usage: sparrow-fence [--socket PATH] [--stop-unit UNIT] [--grace-ms N] */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if_addr.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "keeper-proto.h"

extern char **environ;

typedef struct
{
  uint32_t family;
  uint32_t prefix;
  uint8_t addr[16];
  char ifname[SP_KEEPER_IFNAMSIZ];
} Address;

static struct
{
  const char *socket_path;
  const char *stop_unit;
  uint64_t grace_ns;

  int listen_fd;
  int client_fd; /* -1: none */
  int client_pidfd;
  pid_t client_pid;
  int page_fd;
  SpKeeperPage *page;
  int timer_fd;       /* the deadline */
  int grace_fd;       /* the ack's grace after a fence */
  uint64_t fenced_at; /* the deadline the last fence claimed */
  int child_pidfd;    /* systemctl, -1 when none runs */
  pid_t child_pid;
  int arm_waiting; /* ARMED is due once the unit stop was queued */
  Address addresses[SP_KEEPER_MAX_ADDRESSES];
  unsigned n_addresses;
} k = { .client_fd = -1, .client_pidfd = -1, .page_fd = -1, .child_pidfd = -1 };

static void
say (const char *format, ...)
{
  va_list ap;

  va_start (ap, format);
  vfprintf (stderr, format, ap);
  va_end (ap);
  fputc ('\n', stderr);
}

static uint64_t
now_ns (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_BOOTTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void
set_timer (int fd, uint64_t at_ns)
{
  struct itimerspec its = { 0 };

  its.it_value.tv_sec = (time_t)(at_ns / 1000000000u);
  its.it_value.tv_nsec = (long)(at_ns % 1000000000u);
  timerfd_settime (fd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void
drain (int fd)
{
  uint64_t expirations;

  if (read (fd, &expirations, sizeof expirations) < 0 && errno != EAGAIN)
    say ("timer: %s", strerror (errno));
}

static const char *
address_text (const Address *a, char *buf, size_t size)
{
  char ip[INET6_ADDRSTRLEN];

  inet_ntop ((int)a->family, a->addr, ip, sizeof ip);
  snprintf (buf, size, "%s/%u@%s", ip, a->prefix, a->ifname);
  return buf;
}

/* RTM_DELADDR, answered by the kernel within the send: 1 removed, 0 was
 * not there, -1 failed (errno). */
static int
remove_address (int nl, const Address *a)
{
  struct
  {
    struct nlmsghdr nh;
    struct ifaddrmsg ifa;
    struct rtattr rta;
    uint8_t addr[16];
  } req = { 0 };
  union
  {
    struct nlmsghdr nh;
    char buf[512];
  } reply;
  struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
  size_t len = a->family == AF_INET ? 4 : 16;
  unsigned ifindex = if_nametoindex (a->ifname);
  ssize_t n;

  if (ifindex == 0)
    return 0;
  req.nh.nlmsg_type = RTM_DELADDR;
  req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  req.nh.nlmsg_len = NLMSG_LENGTH (sizeof req.ifa) + RTA_SPACE (len);
  req.ifa.ifa_family = (uint8_t)a->family;
  req.ifa.ifa_prefixlen = (uint8_t)a->prefix;
  req.ifa.ifa_index = ifindex;
  /* IPv4 matches IFA_LOCAL, IPv6 IFA_ADDRESS. */
  req.rta.rta_type = a->family == AF_INET ? IFA_LOCAL : IFA_ADDRESS;
  req.rta.rta_len = (unsigned short)RTA_LENGTH (len);
  memcpy (req.addr, a->addr, len);
  if (sendto (nl, &req, req.nh.nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof kernel) < 0)
    return -1;
  n = recv (nl, &reply, sizeof reply, 0);
  if (n < (ssize_t)NLMSG_LENGTH (sizeof (struct nlmsgerr)) || reply.nh.nlmsg_type != NLMSG_ERROR)
    {
      errno = n < 0 ? errno : EPROTO;
      return -1;
    }
  errno = -((struct nlmsgerr *)NLMSG_DATA (&reply.nh))->error;
  if (errno == 0)
    return 1;
  return errno == EADDRNOTAVAIL || errno == ENODEV ? 0 : -1;
}

/* systemctl, never waited for here: its end is polled (child_pidfd). */
static void
stop_unit (void)
{
  char *argv[]
      = { "systemctl", "stop", "--no-block", "--no-ask-password", (char *)k.stop_unit, NULL };
  pid_t pid;
  int err;

  if (!k.stop_unit || k.child_pidfd >= 0)
    return;
  err = posix_spawnp (&pid, "systemctl", NULL, NULL, argv, environ);
  if (err != 0)
    {
      say ("cannot run systemctl stop %s: %s", k.stop_unit, strerror (err));
      return;
    }
  k.child_pid = pid;
  k.child_pidfd = (int)syscall (SYS_pidfd_open, pid, 0);
  if (k.child_pidfd < 0)
    {
      say ("pidfd of systemctl: %s", strerror (errno));
      waitpid (pid, NULL, 0);
    }
}

static void
send_msg (uint32_t type, uint32_t about, const char *text)
{
  SpKeeperMsg m = { .magic = SP_KEEPER_MAGIC, .type = type, .family = about };

  if (text)
    snprintf (m.text, sizeof m.text, "%s", text);
  if (k.client_fd >= 0 && send (k.client_fd, &m, sizeof m, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
    say ("cannot answer sparrowd: %s", strerror (errno));
}

/* Addresses out, unit stop queued, and, for a live client that does not
 * ack the deadline within the grace, the kill after it.  why: for the log. */
static void
fence (uint64_t deadline, const char *why)
{
  uint64_t start = now_ns (), done;
  unsigned removed = 0, failed = 0;
  int nl = socket (AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  char text[80];

  if (nl < 0)
    say ("netlink: %s", strerror (errno));
  for (unsigned i = 0; nl >= 0 && i < k.n_addresses; i++)
    {
      int r = remove_address (nl, &k.addresses[i]);

      if (r < 0)
        {
          failed++;
          say ("fence: cannot remove %s: %s", address_text (&k.addresses[i], text, sizeof text),
               strerror (errno));
        }
      else if (r > 0)
        {
          removed++;
          say ("fence: removed %s", address_text (&k.addresses[i], text, sizeof text));
        }
    }
  if (nl >= 0)
    close (nl);
  done = now_ns ();
  stop_unit ();
  k.fenced_at = deadline;
  if (deadline != SP_KEEPER_FOREVER && deadline <= start)
    say ("fence (%s): %.3f ms after the deadline; %u of %u addresses removed in %.3f ms, %u "
         "failed%s%s",
         why, (double)(start - deadline) / 1e6, removed, k.n_addresses,
         (double)(done - start) / 1e6, failed, k.stop_unit ? "; stopping " : "",
         k.stop_unit ? k.stop_unit : "");
  else
    say ("fence (%s): %u of %u addresses removed in %.3f ms, %u failed%s%s", why, removed,
         k.n_addresses, (double)(done - start) / 1e6, failed, k.stop_unit ? "; stopping " : "",
         k.stop_unit ? k.stop_unit : "");
  if (k.client_fd >= 0)
    set_timer (k.grace_fd, now_ns () + k.grace_ns);
}

/* The deadline came: claim it unless sparrowd extended it meanwhile. */
static void
on_deadline (void)
{
  uint64_t d = __atomic_load_n (&k.page->deadline_ns, __ATOMIC_ACQUIRE);

  for (;;)
    {
      if (d == 0 || d == SP_KEEPER_FENCED || d == SP_KEEPER_FOREVER)
        return; /* released, fenced already, or nothing to time */
      if (d > now_ns ())
        {
          set_timer (k.timer_fd, d);
          return;
        }
      if (__atomic_compare_exchange_n (&k.page->deadline_ns, &d, SP_KEEPER_FENCED, 0,
                                       __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        break;
    }
  fence (d, "lease ended");
}

static void
on_grace (void)
{
  uint64_t acked = __atomic_load_n (&k.page->acked_ns, __ATOMIC_ACQUIRE);

  if (k.client_pidfd < 0)
    return;
  if (acked >= k.fenced_at)
    {
      say ("sparrowd saw its lease end: not killed");
      return;
    }
  if (syscall (SYS_pidfd_send_signal, k.client_pidfd, SIGKILL, NULL, 0) < 0)
    say ("cannot kill sparrowd (pid %d): %s", (int)k.client_pid, strerror (errno));
  else
    say ("killed sparrowd (pid %d): it did not see its lease end within %.0f ms", (int)k.client_pid,
         (double)k.grace_ns / 1e6);
}

static void
drop_client (void)
{
  uint64_t d;

  if (k.client_fd < 0)
    return;
  close (k.client_fd);
  k.client_fd = -1;
  set_timer (k.grace_fd, 0);
  set_timer (k.timer_fd, 0);
  k.arm_waiting = 0;
  if (k.page)
    {
      /* Whatever sparrowd held goes with it. */
      d = __atomic_exchange_n (&k.page->deadline_ns, SP_KEEPER_FENCED, __ATOMIC_ACQ_REL);
      if (d != 0 && d != SP_KEEPER_FENCED)
        fence (d, "sparrowd gone while holding");
      munmap (k.page, SP_KEEPER_PAGE_SIZE);
      k.page = NULL;
    }
  if (k.client_pidfd >= 0)
    close (k.client_pidfd);
  k.client_pidfd = -1;
  k.n_addresses = 0;
}

static int
make_page (void)
{
  int fd = memfd_create ("sparrow-fence", MFD_CLOEXEC | MFD_ALLOW_SEALING);

  if (fd < 0 || ftruncate (fd, SP_KEEPER_PAGE_SIZE) < 0
      || fcntl (fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
    goto fail;
  k.page = mmap (NULL, SP_KEEPER_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (k.page == MAP_FAILED)
    {
      k.page = NULL;
      goto fail;
    }
  return fd;
fail:
  say ("cannot make the shared page: %s", strerror (errno));
  if (fd >= 0)
    close (fd);
  return -1;
}

static void
accept_client (void)
{
  int fd = accept4 (k.listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK), page_fd;
  struct ucred cred = { 0, (uid_t)-1, (gid_t)-1 };
  socklen_t len = sizeof cred;
  SpKeeperMsg m = { .magic = SP_KEEPER_MAGIC, .type = SP_KEEPER_MSG_PAGE };
  char control[CMSG_SPACE (sizeof (int))] = { 0 };
  struct iovec iov = { &m, sizeof m };
  struct msghdr msg = {
    .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control
  };
  struct cmsghdr *cmsg;

  if (fd < 0)
    return;
  if (getsockopt (fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || cred.uid != getuid ())
    {
      say ("refused a client of uid %d (pid %d): only uid %d is served", (int)cred.uid,
           (int)cred.pid, (int)getuid ());
      close (fd);
      return;
    }
  k.client_pidfd = (int)syscall (SYS_pidfd_open, cred.pid, 0);
  page_fd = k.client_pidfd < 0 ? -1 : make_page ();
  if (page_fd < 0)
    {
      say ("refused sparrowd (pid %d): %s", (int)cred.pid, strerror (errno));
      if (k.client_pidfd >= 0)
        close (k.client_pidfd);
      k.client_pidfd = -1;
      close (fd);
      return;
    }
  cmsg = CMSG_FIRSTHDR (&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN (sizeof (int));
  memcpy (CMSG_DATA (cmsg), &page_fd, sizeof (int));
  if (sendmsg (fd, &msg, MSG_NOSIGNAL) < 0)
    say ("cannot send the page to pid %d: %s", (int)cred.pid, strerror (errno));
  close (page_fd);
  k.client_fd = fd;
  k.client_pid = cred.pid;
  k.n_addresses = 0;
  say ("sparrowd (pid %d) connected", (int)cred.pid);
}

static void
on_address (const SpKeeperMsg *m)
{
  Address a = { .family = m->family, .prefix = m->prefix };
  char text[80];

  if ((m->family != AF_INET || m->prefix > 32) && (m->family != AF_INET6 || m->prefix > 128))
    {
      say ("refused an address of family %u, prefix %u", m->family, m->prefix);
      send_msg (SP_KEEPER_MSG_REFUSED, SP_KEEPER_MSG_ADDRESS, "bad family or prefix length");
      return;
    }
  if (memchr (m->ifname, 0, sizeof m->ifname) == NULL || m->ifname[0] == 0)
    {
      say ("refused an address without an interface name");
      send_msg (SP_KEEPER_MSG_REFUSED, SP_KEEPER_MSG_ADDRESS, "bad interface name");
      return;
    }
  if (k.n_addresses == SP_KEEPER_MAX_ADDRESSES)
    {
      say ("refused an address: more than %d", SP_KEEPER_MAX_ADDRESSES);
      send_msg (SP_KEEPER_MSG_REFUSED, SP_KEEPER_MSG_ADDRESS, "too many addresses");
      return;
    }
  memcpy (a.addr, m->addr, sizeof a.addr);
  memcpy (a.ifname, m->ifname, sizeof a.ifname);
  k.addresses[k.n_addresses++] = a;
  say ("will fence %s", address_text (&a, text, sizeof text));
}

static void
answer_arm (void)
{
  uint64_t d = __atomic_load_n (&k.page->deadline_ns, __ATOMIC_ACQUIRE);

  k.arm_waiting = 0;
  if (d == 0 || d == SP_KEEPER_FENCED || (d != SP_KEEPER_FOREVER && d <= now_ns ()))
    {
      say ("refused to arm: no deadline ahead in the page");
      send_msg (SP_KEEPER_MSG_REFUSED, SP_KEEPER_MSG_ARM, "no deadline ahead in the page");
      return;
    }
  set_timer (k.grace_fd, 0);
  if (d == SP_KEEPER_FOREVER)
    set_timer (k.timer_fd, 0);
  else
    set_timer (k.timer_fd, d);
  send_msg (SP_KEEPER_MSG_ARMED, 0, NULL);
  if (d == SP_KEEPER_FOREVER)
    say ("armed: a lease without end");
  else
    say ("armed: deadline in %.1f ms", (double)(d - now_ns ()) / 1e6);
}

static void
on_client (void)
{
  SpKeeperMsg m;
  ssize_t n = recv (k.client_fd, &m, sizeof m, MSG_DONTWAIT | MSG_TRUNC);

  if (n < 0 && (errno == EAGAIN || errno == EINTR))
    return;
  if (n <= 0)
    {
      say ("sparrowd (pid %d) disconnected", (int)k.client_pid);
      drop_client ();
      return;
    }
  if (n != (ssize_t)sizeof m || m.magic != SP_KEEPER_MAGIC)
    {
      say ("dropped a malformed message (%zd bytes)", n);
      return;
    }
  switch (m.type)
    {
      case SP_KEEPER_MSG_ADDRESS:
        on_address (&m);
        break;
      case SP_KEEPER_MSG_ARM:
        /* After a fence, once its unit stop is queued: never behind it. */
        if (k.child_pidfd >= 0)
          k.arm_waiting = 1;
        else
          answer_arm ();
        break;
      default:
        say ("dropped a message of unknown type %u", m.type);
    }
}

static void
on_child (void)
{
  int status;

  if (waitpid (k.child_pid, &status, WNOHANG) <= 0)
    return;
  if (!WIFEXITED (status) || WEXITSTATUS (status) != 0)
    say ("systemctl stop %s failed (status %d)", k.stop_unit, status);
  close (k.child_pidfd);
  k.child_pidfd = -1;
  if (k.arm_waiting && k.client_fd >= 0)
    answer_arm ();
}

static int
listen_on (const char *path)
{
  struct sockaddr_un sun = { .sun_family = AF_UNIX };
  int fd;

  if (strlen (path) >= sizeof sun.sun_path)
    {
      say ("%s: path too long", path);
      return -1;
    }
  strcpy (sun.sun_path, path);
  fd = socket (AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return -1;
  unlink (path);
  umask (0077);
  if (bind (fd, (struct sockaddr *)&sun, sizeof sun) < 0 || listen (fd, 4) < 0)
    {
      say ("%s: %s", path, strerror (errno));
      close (fd);
      return -1;
    }
  return fd;
}

static int
usage (void)
{
  fprintf (stderr, "usage: sparrow-fence [--socket PATH] [--stop-unit UNIT] [--grace-ms N]\n");
  return 2;
}

int
main (int argc, char **argv)
{
  k.socket_path = SP_KEEPER_SOCKET;
  k.grace_ns = 20 * 1000000u;
  for (int i = 1; i < argc; i++)
    {
      if (i + 1 >= argc)
        return usage ();
      if (strcmp (argv[i], "--socket") == 0)
        k.socket_path = argv[++i];
      else if (strcmp (argv[i], "--stop-unit") == 0)
        k.stop_unit = argv[++i];
      else if (strcmp (argv[i], "--grace-ms") == 0)
        k.grace_ns = strtoull (argv[++i], NULL, 10) * 1000000u;
      else
        return usage ();
    }
  setvbuf (stderr, NULL, _IOLBF, 0);
  signal (SIGPIPE, SIG_IGN);
  /* The timer fires when asked, not up to 50 us later. */
  prctl (PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
  k.timer_fd = timerfd_create (CLOCK_BOOTTIME, TFD_CLOEXEC | TFD_NONBLOCK);
  k.grace_fd = timerfd_create (CLOCK_BOOTTIME, TFD_CLOEXEC | TFD_NONBLOCK);
  k.listen_fd = listen_on (k.socket_path);
  if (k.timer_fd < 0 || k.grace_fd < 0 || k.listen_fd < 0)
    {
      say ("cannot start: %s", strerror (errno));
      return 1;
    }
  say ("fence keeper on %s%s%s", k.socket_path, k.stop_unit ? ", stops " : "",
       k.stop_unit ? k.stop_unit : "");
  for (;;)
    {
      /* One client at a time: the next waits in the backlog. */
      struct pollfd fds[] = {
        { k.client_fd < 0 ? k.listen_fd : -1, POLLIN, 0 },
        { k.client_fd, POLLIN, 0 },
        { k.timer_fd, POLLIN, 0 },
        { k.grace_fd, POLLIN, 0 },
        { k.child_pidfd, POLLIN, 0 },
      };

      if (poll (fds, sizeof fds / sizeof fds[0], -1) < 0)
        {
          if (errno == EINTR)
            continue;
          say ("poll: %s", strerror (errno));
          return 1;
        }
      /* The deadline before the socket: a closed socket fences anyway. */
      if (fds[2].revents)
        {
          drain (k.timer_fd);
          if (k.page)
            on_deadline ();
        }
      if (fds[3].revents)
        {
          drain (k.grace_fd);
          if (k.page)
            on_grace ();
        }
      if (fds[1].revents && k.client_fd >= 0)
        on_client ();
      if (fds[4].revents)
        on_child ();
      if (fds[0].revents)
        accept_client ();
    }
}
