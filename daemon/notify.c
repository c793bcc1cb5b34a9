#include "notify.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Connected once: under WatchdogSec=120ms a datagram goes out every 60 ms,
 * and a socket made, connected and closed for each one cost several times
 * what the heartbeats of an idle node do. */
static int notify_fd = -1;

static int
notify_connect (const char *path)
{
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  size_t len = strlen (path);
  socklen_t addr_len;
  int fd;

  if (len >= sizeof addr.sun_path)
    {
      g_warning ("sd_notify: NOTIFY_SOCKET is too long: %s", path);
      return -1;
    }
  memcpy (addr.sun_path, path, len);
  /* A leading '@' names a socket in the abstract namespace. */
  if (path[0] == '@')
    addr.sun_path[0] = '\0';
  addr_len = offsetof (struct sockaddr_un, sun_path) + len + (path[0] == '@' ? 0 : 1);
  fd = socket (AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0 || connect (fd, (struct sockaddr *)&addr, addr_len) < 0)
    {
      g_warning ("sd_notify to %s: %s", path, g_strerror (errno));
      if (fd >= 0)
        close (fd);
      return -1;
    }
  return fd;
}

void
sp_notify (const char *state)
{
  const char *path = g_getenv ("NOTIFY_SOCKET");

  if (!path || !*path)
    return;
  if (notify_fd < 0 && (notify_fd = notify_connect (path)) < 0)
    return;
  /* A datagram to a local socket does not block (and would not wait). */
  if (send (notify_fd, state, strlen (state), MSG_NOSIGNAL) < 0)
    {
      g_warning ("sd_notify to %s: %s", path, g_strerror (errno));
      /* connect anew next time */
      close (notify_fd);
      notify_fd = -1;
    }
}

guint64
sp_notify_watchdog_usec (void)
{
  const char *usec = g_getenv ("WATCHDOG_USEC");
  const char *pid = g_getenv ("WATCHDOG_PID");

  if (!usec)
    return 0;
  if (pid && g_ascii_strtoull (pid, NULL, 10) != (guint64)getpid ())
    return 0;
  return g_ascii_strtoull (usec, NULL, 10);
}
