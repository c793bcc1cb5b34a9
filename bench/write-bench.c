/* Set throughput and latency through D-Bus against a running sparrowd (the
 * leader), with N clients each keeping one write in flight.
 *
 *   write-bench [--clients N] [--seconds S] [--client wire|gdbus]
 *
 * The bus is $DBUS_SYSTEM_BUS_ADDRESS (the system bus when unset). Each
 * client has its own bus connection, as separate processes would.
 *
 * The clients share the machine with the cluster they measure, so what a
 * call costs the client is taken from the daemons.  `wire` (the default)
 * speaks the D-Bus protocol itself on each connection: a few microseconds a
 * call, as a load generator should be.  `gdbus` calls through GDBus, as
 * sparrowctl and most GLib programs do: about 120 us a call on a 2-vCPU VM. */
#include <gio/gio.h>
#include <gio/gunixsocketaddress.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEST   "org.sparrow.cluster1"
#define PATH   "/org/sparrow/cluster1"
#define IFACE  "org.sparrow.cluster1.Store"
#define MEMBER "Set"
/* 64 bytes */
#define VALUE "0123456789012345678901234567890123456789012345678901234567890123"

typedef struct
{
  guint id;
  guint64 n;
  gint64 started;
  /* gdbus */
  GDBusConnection *bus;
  /* wire */
  GIOStream *stream;
  int fd;
  guint32 serial; /* of the call in flight */
  GByteArray *in;
  gboolean done;
} Client;

static GArray *latencies; /* of double, ms */
static gint64 duration, started, deadline;
static guint running;
static char *failure;

static void
fail (char *message)
{
  if (!failure)
    failure = message;
  else
    g_free (message);
}

static char *
next_key (Client *c)
{
  return g_strdup_printf ("bench/%u/%" G_GUINT64_FORMAT, c->id, c->n++ % 100);
}

/* Once every client is connected. */
static void
start_clock (void)
{
  started = g_get_monotonic_time ();
  deadline = started + duration;
}

/* A reply has come: note its latency; TRUE if the client goes on. */
static gboolean
replied (Client *c)
{
  double ms = (g_get_monotonic_time () - c->started) / 1000.0;

  g_array_append_val (latencies, ms);
  if (g_get_monotonic_time () < deadline)
    return TRUE;
  running--;
  return FALSE;
}

/* ---- the wire client ----------------------------------------------------- */

#define ALIGN(n, a) (((n) + (a)-1) & ~(gsize)((a)-1))

enum
{
  METHOD_CALL = 1,
  METHOD_RETURN = 2,
  ERROR = 3,
  FIELD_PATH = 1,
  FIELD_INTERFACE = 2,
  FIELD_MEMBER = 3,
  FIELD_ERROR_NAME = 4,
  FIELD_REPLY_SERIAL = 5,
  FIELD_DESTINATION = 6,
  FIELD_SIGNATURE = 8,
};

static void
put_align (GByteArray *b, guint n)
{
  static const guint8 zero[8];

  g_byte_array_append (b, zero, ALIGN (b->len, n) - b->len);
}

static void
put_u32 (GByteArray *b, guint32 v)
{
  put_align (b, 4);
  g_byte_array_append (b, (const guint8 *)&v, 4);
}

static void
put_string (GByteArray *b, const char *s)
{
  put_u32 (b, strlen (s));
  g_byte_array_append (b, (const guint8 *)s, strlen (s) + 1);
}

static void
put_field (GByteArray *b, guint8 code, char type, const char *value)
{
  const guint8 head[] = { code, 1, type, 0 };

  put_align (b, 8);
  g_byte_array_append (b, head, sizeof head);
  if (type == 'g')
    {
      guint8 n = strlen (value);

      g_byte_array_append (b, &n, 1);
      g_byte_array_append (b, (const guint8 *)value, n + 1);
    }
  else
    {
      put_string (b, value);
    }
}

/* A method call in the host's byte order, with string arguments. */
static GByteArray *
method_call (guint32 serial, const char *dest, const char *path, const char *iface,
             const char *member, const char *a0, const char *a1)
{
  const guint8 head[] = { G_BYTE_ORDER == G_LITTLE_ENDIAN ? 'l' : 'B', METHOD_CALL, 0, 1 };
  GByteArray *b = g_byte_array_sized_new (256);
  guint32 fields_len, body_len;
  gsize body;

  g_byte_array_append (b, head, sizeof head);
  put_u32 (b, 0);
  put_u32 (b, serial);
  put_u32 (b, 0);
  put_field (b, FIELD_PATH, 'o', path);
  put_field (b, FIELD_DESTINATION, 's', dest);
  put_field (b, FIELD_INTERFACE, 's', iface);
  put_field (b, FIELD_MEMBER, 's', member);
  if (a0)
    put_field (b, FIELD_SIGNATURE, 'g', a1 ? "ss" : "s");
  fields_len = b->len - 16;
  memcpy (b->data + 12, &fields_len, 4);
  put_align (b, 8);
  body = b->len;
  if (a0)
    put_string (b, a0);
  if (a1)
    put_string (b, a1);
  body_len = b->len - body;
  memcpy (b->data + 4, &body_len, 4);
  return b;
}

static gboolean
write_all (int fd, const guint8 *data, gsize len, GError **error)
{
  while (len > 0)
    {
      ssize_t n = write (fd, data, len);

      if (n < 0 && (errno == EAGAIN || errno == EINTR))
        {
          struct pollfd p = { fd, POLLOUT, 0 };

          poll (&p, 1, -1);
          continue;
        }
      if (n < 0)
        {
          g_set_error (error, G_IO_ERROR, g_io_error_from_errno (errno),
                       "cannot write to the bus: %s", g_strerror (errno));
          return FALSE;
        }
      data += n;
      len -= n;
    }
  return TRUE;
}

/* Reads what the socket has (waiting for it when `wait`); FALSE at EOF or
 * on an error. */
static gboolean
read_some (Client *c, gboolean wait, GError **error)
{
  guint8 buf[65536];

  for (;;)
    {
      ssize_t n = read (c->fd, buf, sizeof buf);

      if (n > 0)
        {
          g_byte_array_append (c->in, buf, n);
          return TRUE;
        }
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && errno == EAGAIN)
        {
          struct pollfd p = { c->fd, POLLIN, 0 };

          if (!wait)
            return TRUE;
          poll (&p, 1, -1);
          continue;
        }
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_CLOSED, "the bus %s",
                   n == 0 ? "closed the connection" : g_strerror (errno));
      return FALSE;
    }
}

static guint32
get_u32 (const guint8 *p, gboolean swap)
{
  guint32 v;

  memcpy (&v, p, 4);
  return swap ? GUINT32_SWAP_LE_BE (v) : v;
}

typedef struct
{
  guint8 type;
  guint32 reply_serial;
  char *error_name;
  char *signature;
  char *first_string; /* of the body, when it starts with one */
} Message;

static void
message_clear (Message *m)
{
  g_free (m->error_name);
  g_free (m->signature);
  g_free (m->first_string);
}

/* Takes one whole message off the front of c->in, if there is one: 1 when
 * taken, 0 when more bytes are needed, -1 when it is malformed. */
static int
take_message (Client *c, Message *m, GError **error)
{
  const guint8 *d = c->in->data;
  gboolean swap;
  gsize fields_end, total, at = 16, body;
  guint32 body_len;

  if (c->in->len < 16)
    return 0;
  if (d[0] != 'l' && d[0] != 'B')
    goto bad;
  swap = (d[0] == 'l') != (G_BYTE_ORDER == G_LITTLE_ENDIAN);
  body_len = get_u32 (d + 4, swap);
  fields_end = 16 + (gsize)get_u32 (d + 12, swap);
  if (body_len > 1 << 27 || fields_end > 1 << 27)
    goto bad;
  body = ALIGN (fields_end, 8);
  total = body + body_len;
  if (c->in->len < total)
    return 0;
  memset (m, 0, sizeof *m);
  m->type = d[1];
  while (at < fields_end)
    {
      guint8 code;
      char type;
      guint32 len;

      at = ALIGN (at, 8);
      if (at + 4 > fields_end || d[at + 1] != 1 || d[at + 3] != 0)
        goto bad_fields;
      code = d[at];
      type = d[at + 2];
      at += 4;
      switch (type)
        {
          case 'u':
            at = ALIGN (at, 4);
            if (at + 4 > fields_end)
              goto bad_fields;
            if (code == FIELD_REPLY_SERIAL)
              m->reply_serial = get_u32 (d + at, swap);
            at += 4;
            break;
          case 's':
          case 'o':
            at = ALIGN (at, 4);
            if (at + 4 > fields_end || (len = get_u32 (d + at, swap)) > fields_end - at - 5)
              goto bad_fields;
            if (code == FIELD_ERROR_NAME)
              m->error_name = g_strndup ((const char *)d + at + 4, len);
            at += 4 + len + 1;
            break;
          case 'g':
            len = d[at];
            if (at + len + 2 > fields_end)
              goto bad_fields;
            if (code == FIELD_SIGNATURE)
              m->signature = g_strndup ((const char *)d + at + 1, len);
            at += len + 2;
            break;
          default:
            goto bad_fields;
        }
    }
  if (m->signature && m->signature[0] == 's' && body_len >= 5)
    {
      guint32 len = get_u32 (d + body, swap);

      if (len <= body_len - 5)
        m->first_string = g_strndup ((const char *)d + body + 4, len);
    }
  g_byte_array_remove_range (c->in, 0, total);
  return 1;

bad_fields:
  message_clear (m);
bad:
  g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "malformed message from the bus");
  return -1;
}

static gboolean
wire_send (Client *c, const char *dest, const char *path, const char *iface, const char *member,
           const char *a0, const char *a1, GError **error)
{
  g_autoptr (GByteArray) b = method_call (++c->serial, dest, path, iface, member, a0, a1);

  return write_all (c->fd, b->data, b->len, error);
}

static gboolean
wire_send_set (Client *c, GError **error)
{
  g_autofree char *key = next_key (c);

  c->started = g_get_monotonic_time ();
  return wire_send (c, DEST, PATH, IFACE, MEMBER, key, VALUE, error);
}

/* The answer to the call in flight, skipping the signals the bus sends
 * meanwhile (NameAcquired); -1 on a broken message. */
static int
take_reply (Client *c, Message *m, GError **error)
{
  int r;

  while ((r = take_message (c, m, error)) == 1)
    {
      if ((m->type == METHOD_RETURN || m->type == ERROR) && m->reply_serial == c->serial)
        return 1;
      message_clear (m);
    }
  return r;
}

/* A failure, or NULL when the reply is the one the call expects. */
static char *
check_reply (const Message *m, const char *signature)
{
  if (m->type == ERROR)
    return g_strdup_printf ("%s: %s", m->error_name ? m->error_name : "error",
                            m->first_string ? m->first_string : "(no message)");
  if (g_strcmp0 (m->signature, signature) != 0)
    return g_strdup_printf ("unexpected reply signature '%s'", m->signature ? m->signature : "");
  return NULL;
}

/* Connects and authenticates as this uid (EXTERNAL), then says Hello. */
static gboolean
wire_connect (Client *c, const char *address, GError **error)
{
  g_autofree char *auth = NULL, *uid = g_strdup_printf ("%u", (unsigned)geteuid ());
  const guint8 nul = 0;
  g_autoptr (GString) hex = g_string_new (NULL);
  char *failed;
  Message m;
  int r;

  c->stream = g_dbus_address_get_stream_sync (address, NULL, NULL, error);
  if (!c->stream)
    return FALSE;
  if (!G_IS_SOCKET_CONNECTION (c->stream))
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED, "%s is not a socket", address);
      return FALSE;
    }
  c->fd = g_socket_get_fd (g_socket_connection_get_socket (G_SOCKET_CONNECTION (c->stream)));
  c->in = g_byte_array_new ();
  for (const char *p = uid; *p; p++)
    g_string_append_printf (hex, "%02x", *p);
  auth = g_strdup_printf ("AUTH EXTERNAL %s\r\n", hex->str);
  if (!write_all (c->fd, &nul, 1, error)
      || !write_all (c->fd, (const guint8 *)auth, strlen (auth), error))
    return FALSE;
  while (c->in->len == 0 || !memchr (c->in->data, '\n', c->in->len))
    if (!read_some (c, TRUE, error))
      return FALSE;
  if (c->in->len < 3 || memcmp (c->in->data, "OK ", 3) != 0)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_PERMISSION_DENIED,
                   "the bus refused EXTERNAL authentication as uid %s", uid);
      return FALSE;
    }
  g_byte_array_set_size (c->in, 0);
  if (!write_all (c->fd, (const guint8 *)"BEGIN\r\n", 7, error)
      || !wire_send (c, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                     "Hello", NULL, NULL, error))
    return FALSE;
  while ((r = take_reply (c, &m, error)) == 0)
    if (!read_some (c, TRUE, error))
      return FALSE;
  if (r < 0)
    return FALSE;
  failed = check_reply (&m, "s");
  message_clear (&m);
  if (failed)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_FAILED, "Hello failed: %s", failed);
      g_free (failed);
      return FALSE;
    }
  return TRUE;
}

/* One client's socket is readable: take its answers, send its next call. */
static void
wire_readable (Client *c)
{
  g_autoptr (GError) error = NULL;
  Message m;
  int r;

  if (!read_some (c, FALSE, &error))
    goto broken;
  while ((r = take_reply (c, &m, &error)) == 1)
    {
      char *failed = check_reply (&m, "t");

      message_clear (&m);
      if (failed)
        {
          fail (g_strdup_printf ("Set failed: %s", failed));
          g_free (failed);
          c->done = TRUE;
          running--;
          return;
        }
      if (!replied (c))
        {
          c->done = TRUE;
          return;
        }
      if (!wire_send_set (c, &error))
        goto broken;
    }
  if (r == 0)
    return;
broken:
  fail (g_strdup (error->message));
  c->done = TRUE;
  running--;
}

static gboolean
run_wire (Client *all, int clients, const char *address, GError **error)
{
  g_autofree struct pollfd *fds = g_new0 (struct pollfd, clients);

  for (int i = 0; i < clients; i++)
    if (!wire_connect (&all[i], address, error))
      return FALSE;
  start_clock ();
  for (int i = 0; i < clients; i++)
    if (!wire_send_set (&all[i], error))
      return FALSE;
  while (running > 0)
    {
      int n = 0;

      for (int i = 0; i < clients; i++)
        if (!all[i].done)
          fds[n++] = (struct pollfd){ all[i].fd, POLLIN, 0 };
      if (poll (fds, n, -1) < 0 && errno != EINTR)
        {
          g_set_error (error, G_IO_ERROR, g_io_error_from_errno (errno), "poll: %s",
                       g_strerror (errno));
          return FALSE;
        }
      for (int i = 0, k = 0; i < clients; i++)
        if (!all[i].done && (fds[k++].revents & (POLLIN | POLLHUP | POLLERR)))
          wire_readable (&all[i]);
    }
  return TRUE;
}

/* ---- the GDBus client ---------------------------------------------------- */

static const GVariantType *reply_type;

static void gdbus_send (Client *c);

static void
on_gdbus_reply (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Client *c = user_data;
  g_autoptr (GVariant) reply = NULL;
  g_autoptr (GError) error = NULL;

  reply = g_dbus_connection_call_finish (G_DBUS_CONNECTION (source), result, &error);
  if (!reply)
    {
      fail (g_strdup_printf ("Set failed: %s", error->message));
      running--;
      return;
    }
  if (replied (c))
    gdbus_send (c);
}

static void
gdbus_send (Client *c)
{
  g_autofree char *key = next_key (c);
  /* built child by child: a format string is parsed on every call */
  GVariant *args[] = { g_variant_new_string (key), g_variant_new_string (VALUE) };

  c->started = g_get_monotonic_time ();
  g_dbus_connection_call (c->bus, DEST, PATH, IFACE, MEMBER, g_variant_new_tuple (args, 2),
                          reply_type, G_DBUS_CALL_FLAGS_NONE, 30000, NULL, on_gdbus_reply, c);
}

static gboolean
run_gdbus (Client *all, int clients, const char *address, GError **error)
{
  GVariant *keep[2];

  for (int i = 0; i < clients; i++)
    {
      all[i].bus = g_dbus_connection_new_for_address_sync (
          address,
          G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT
              | G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
          NULL, NULL, error);
      if (!all[i].bus)
        return FALSE;
    }
  /* GLib 2.74 builds a container type's layout anew whenever its last value
   * is gone: one value of each type a call uses keeps them built (the
   * daemon does the same). */
  keep[0] = g_variant_ref_sink (
      g_variant_new_from_data (G_VARIANT_TYPE ("(ss)"), NULL, 0, FALSE, NULL, NULL));
  keep[1] = g_variant_ref_sink (
      g_variant_new_from_data (G_VARIANT_TYPE ("(t)"), NULL, 0, FALSE, NULL, NULL));
  reply_type = g_variant_get_type (keep[1]);
  start_clock ();
  for (int i = 0; i < clients; i++)
    gdbus_send (&all[i]);
  while (running > 0)
    g_main_context_iteration (NULL, TRUE);
  g_variant_unref (keep[0]);
  g_variant_unref (keep[1]);
  return TRUE;
}

/* ---- main ---------------------------------------------------------------- */

static int
compare_double (gconstpointer a, gconstpointer b)
{
  double x = *(const double *)a, y = *(const double *)b;

  return (x > y) - (x < y);
}

int
main (int argc, char **argv)
{
  int clients = 1;
  double seconds = 5;
  g_autofree char *kind = NULL, *address = NULL;
  GOptionEntry entries[] = {
    { "clients", 'c', 0, G_OPTION_ARG_INT, &clients, "Concurrent clients (default 1)", "N" },
    { "seconds", 's', 0, G_OPTION_ARG_DOUBLE, &seconds, "Duration (default 5)", "S" },
    { "client", 0, 0, G_OPTION_ARG_STRING, &kind, "wire (default) or gdbus", "KIND" },
    { NULL },
  };
  g_autoptr (GOptionContext) context = g_option_context_new ("- sparrowd write benchmark");
  g_autoptr (GError) error = NULL;
  g_autofree Client *all = NULL;
  gboolean wire, ok;
  double elapsed, *sorted;

  g_option_context_add_main_entries (context, entries, NULL);
  if (!g_option_context_parse (context, &argc, &argv, &error))
    {
      g_printerr ("write-bench: %s\n", error->message);
      return 2;
    }
  if (clients < 1 || seconds <= 0 || (kind && strcmp (kind, "wire") && strcmp (kind, "gdbus")))
    {
      g_printerr ("write-bench: --clients and --seconds must be positive, --client wire or "
                  "gdbus\n");
      return 2;
    }
  wire = !kind || strcmp (kind, "wire") == 0;
  address = g_dbus_address_get_for_bus_sync (G_BUS_TYPE_SYSTEM, NULL, &error);
  if (!address)
    {
      g_printerr ("write-bench: no bus address: %s\n", error->message);
      return 1;
    }
  all = g_new0 (Client, clients);
  for (int i = 0; i < clients; i++)
    all[i].id = i;
  latencies = g_array_new (FALSE, FALSE, sizeof (double));
  running = clients;
  duration = (gint64)(seconds * G_USEC_PER_SEC);
  ok = wire ? run_wire (all, clients, address, &error) : run_gdbus (all, clients, address, &error);
  elapsed = (g_get_monotonic_time () - started) / (double)G_USEC_PER_SEC;
  for (int i = 0; i < clients; i++)
    {
      g_clear_object (&all[i].bus);
      g_clear_object (&all[i].stream);
      g_clear_pointer (&all[i].in, g_byte_array_unref);
    }
  if (!ok)
    fail (g_strdup_printf ("cannot connect to the bus: %s", error->message));
  if (failure)
    {
      g_printerr ("write-bench: %s\n", failure);
      g_free (failure);
      g_array_unref (latencies);
      return 1;
    }
  g_array_sort (latencies, compare_double);
  sorted = (double *)(void *)latencies->data;
  printf ("Set, %2d client(s), %-5s client: %7.0f writes/s   latency median %.2f ms  p99 %.2f ms  "
          "(%u writes)\n",
          clients, wire ? "wire" : "gdbus", latencies->len / elapsed, sorted[latencies->len / 2],
          sorted[(guint)((latencies->len - 1) * 0.99)], latencies->len);
  g_array_unref (latencies);
  return 0;
}
