/* Characters are checked one by one before anything is parsed: GLib's
 * parsers take more than a line of another program's configuration can
 * hold safely (spaces, scopes after '%'). */
#include "address.h"

#include <string.h>

/* "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255" */
#define IPV6_TEXT_MAX 45

gboolean
sp_address_is_token (const char *s, gsize n, gsize max)
{
  if (n == 0 || n > max)
    return FALSE;
  for (gsize i = 0; i < n; i++)
    if (!g_ascii_isalnum (s[i]) && !strchr ("_.-", s[i]))
      return FALSE;
  return TRUE;
}

static gboolean
valid_ipv6 (const char *s, gsize n)
{
  g_autofree char *text = NULL;

  if (n == 0 || n > IPV6_TEXT_MAX)
    return FALSE;
  for (gsize i = 0; i < n; i++)
    if (!g_ascii_isxdigit (s[i]) && s[i] != ':' && s[i] != '.')
      return FALSE;
  text = g_strndup (s, n);
  return g_hostname_is_ip_address (text) && strchr (text, ':');
}

gboolean
sp_address_parse (const char *address, char **host_out, guint16 *port_out)
{
  const char *host, *colon;
  gsize host_len;
  guint64 port;

  if (!address)
    return FALSE;
  if (address[0] == '[')
    {
      const char *end = strchr (address, ']');

      if (!end || end[1] != ':')
        return FALSE;
      host = address + 1;
      host_len = end - host;
      if (!valid_ipv6 (host, host_len))
        return FALSE;
      colon = end + 1;
    }
  else
    {
      /* a bare IPv6 address has colons in it: its port would be a guess */
      colon = strchr (address, ':');
      if (!colon)
        return FALSE;
      host = address;
      host_len = colon - address;
      if (!sp_address_is_token (host, host_len, SP_ADDRESS_HOST_MAX))
        return FALSE;
    }
  /* g_ascii_string_to_unsigned takes neither sign nor spaces */
  if (strlen (colon + 1) > 5 || !g_ascii_isdigit (colon[1])
      || !g_ascii_string_to_unsigned (colon + 1, 10, 1, G_MAXUINT16, &port, NULL))
    return FALSE;
  if (host_out)
    *host_out = g_strndup (host, host_len);
  if (port_out)
    *port_out = (guint16)port;
  return TRUE;
}
