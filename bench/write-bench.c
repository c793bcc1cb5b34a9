/* Set throughput and latency through D-Bus against a running sparrowd (the
 * leader), with N clients each keeping one write in flight: a C client, so
 * the figure is the daemon's and not a scripting runtime's.
 *
 *   write-bench [--clients N] [--seconds S]
 *
 * The bus is $DBUS_SYSTEM_BUS_ADDRESS (the system bus when unset). Each
 * client has its own bus connection, as separate processes would. */
#include <gio/gio.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct
{
  GDBusConnection *bus;
  guint id;
  guint64 n;
  gint64 started;
} Client;

static GArray *latencies; /* of double, ms */
static const GVariantType *reply_type;
static gint64 deadline;
static guint running;
static GError *failure;

static void send_one (Client *c);

static void
on_reply (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Client *c = user_data;
  g_autoptr (GVariant) reply = NULL;
  g_autoptr (GError) error = NULL;
  double ms;

  reply = g_dbus_connection_call_finish (G_DBUS_CONNECTION (source), result, &error);
  if (!reply)
    {
      if (!failure)
        failure = g_steal_pointer (&error);
      running--;
      return;
    }
  ms = (g_get_monotonic_time () - c->started) / 1000.0;
  g_array_append_val (latencies, ms);
  if (g_get_monotonic_time () >= deadline)
    {
      running--;
      return;
    }
  send_one (c);
}

/* 64 bytes */
#define VALUE "0123456789012345678901234567890123456789012345678901234567890123"

static void
send_one (Client *c)
{
  g_autofree char *key = g_strdup_printf ("bench/%u/%" G_GUINT64_FORMAT, c->id, c->n++ % 100);
  /* built child by child: a format string is parsed on every call */
  GVariant *args[] = { g_variant_new_string (key), g_variant_new_string (VALUE) };

  c->started = g_get_monotonic_time ();
  g_dbus_connection_call (c->bus, "org.sparrow.cluster1", "/org/sparrow/cluster1",
                          "org.sparrow.cluster1.Store", "Set", g_variant_new_tuple (args, 2),
                          reply_type, G_DBUS_CALL_FLAGS_NONE, 30000, NULL, on_reply, c);
}

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
  GOptionEntry entries[] = {
    { "clients", 'c', 0, G_OPTION_ARG_INT, &clients, "Concurrent clients (default 1)", "N" },
    { "seconds", 's', 0, G_OPTION_ARG_DOUBLE, &seconds, "Duration (default 5)", "S" },
    { NULL },
  };
  g_autoptr (GOptionContext) context = g_option_context_new ("- sparrowd write benchmark");
  g_autoptr (GError) error = NULL;
  g_autofree Client *all = NULL;
  GMainContext *main_context = g_main_context_default ();
  GVariant *keep[2];
  gint64 t0;
  double elapsed, *sorted;

  g_option_context_add_main_entries (context, entries, NULL);
  if (!g_option_context_parse (context, &argc, &argv, &error) || clients < 1 || seconds <= 0)
    {
      g_printerr ("write-bench: %s\n", error ? error->message : "bad --clients or --seconds");
      return 2;
    }
  all = g_new0 (Client, clients);
  for (int i = 0; i < clients; i++)
    {
      g_autofree char *address = g_dbus_address_get_for_bus_sync (G_BUS_TYPE_SYSTEM, NULL, &error);

      all[i].id = i;
      all[i].bus = address ? g_dbus_connection_new_for_address_sync (
                       address,
                       G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT
                           | G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                       NULL, NULL, &error)
                           : NULL;
      if (!all[i].bus)
        {
          g_printerr ("write-bench: cannot connect to the bus: %s\n", error->message);
          return 1;
        }
    }

  /* GLib 2.74 builds a container type's layout anew whenever its last value
   * is gone: one value of each type a call uses keeps them built, so the
   * client's own overhead takes less of the CPU it shares with the cluster
   * it measures (the daemon does the same). */
  keep[0] = g_variant_ref_sink (
      g_variant_new_from_data (G_VARIANT_TYPE ("(ss)"), NULL, 0, FALSE, NULL, NULL));
  keep[1] = g_variant_ref_sink (
      g_variant_new_from_data (G_VARIANT_TYPE ("(t)"), NULL, 0, FALSE, NULL, NULL));
  reply_type = g_variant_get_type (keep[1]);
  latencies = g_array_new (FALSE, FALSE, sizeof (double));
  t0 = g_get_monotonic_time ();
  deadline = t0 + (gint64)(seconds * G_USEC_PER_SEC);
  running = clients;
  for (int i = 0; i < clients; i++)
    send_one (&all[i]);
  while (running > 0)
    g_main_context_iteration (main_context, TRUE);
  elapsed = (g_get_monotonic_time () - t0) / (double)G_USEC_PER_SEC;

  for (int i = 0; i < clients; i++)
    g_object_unref (all[i].bus);
  if (failure)
    {
      g_printerr ("write-bench: Set failed: %s\n", failure->message);
      g_error_free (failure);
      g_array_unref (latencies);
      return 1;
    }
  g_array_sort (latencies, compare_double);
  sorted = (double *)(void *)latencies->data;
  printf ("Set, %2d client(s): %7.0f writes/s   latency median %.2f ms  p99 %.2f ms  (%u writes)\n",
          clients, latencies->len / elapsed, sorted[latencies->len / 2],
          sorted[(guint)((latencies->len - 1) * 0.99)], latencies->len);
  g_array_unref (latencies);
  g_variant_unref (keep[0]);
  g_variant_unref (keep[1]);
  return 0;
}
