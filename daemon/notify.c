#include "notify.h"

#include <gio/gio.h>
#include <gio/gunixsocketaddress.h>
#include <unistd.h>

void
sp_notify (const char *state)
{
  const char *path = g_getenv ("NOTIFY_SOCKET");
  g_autoptr (GSocket) socket = NULL;
  g_autoptr (GSocketAddress) address = NULL;
  g_autoptr (GError) error = NULL;

  if (!path || !*path)
    return;
  socket = g_socket_new (G_SOCKET_FAMILY_UNIX, G_SOCKET_TYPE_DATAGRAM, 0, &error);
  if (!socket)
    {
      g_warning ("sd_notify: %s", error->message);
      return;
    }
  /* A leading '@' names a socket in the abstract namespace. */
  if (path[0] == '@')
    address = g_unix_socket_address_new_with_type (path + 1, -1, G_UNIX_SOCKET_ADDRESS_ABSTRACT);
  else
    address = g_unix_socket_address_new (path);
  /* A datagram to a local socket does not block. */
  if (g_socket_send_to (socket, address, state, strlen (state), NULL, &error) < 0)
    g_warning ("sd_notify to %s: %s", path, error->message);
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
