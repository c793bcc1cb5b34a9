/* One systemd job, asynchronously, through org.freedesktop.systemd1 on the
 * bus: a Manager method that queues a job for a unit (StartUnit,
 * RestartUnit, ReloadOrRestartUnit, StopUnit, mode "replace"), then the
 * job's JobRemoved, which may come before the method's reply.  The
 * plugins that drive units share it. */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

void sp_systemd_job_async (GDBusConnection *bus, const char *method, const char *unit,
                           GCancellable *cancellable, GAsyncReadyCallback callback,
                           gpointer user_data);
/* The job's result ("done", "failed", "canceled", "dependency", ...), or
 * NULL with error when systemd refused the method (no such unit, no
 * systemd). */
char *sp_systemd_job_finish (GAsyncResult *result, GError **error);

/* A Manager method that takes and returns nothing: Subscribe, or Reload
 * (daemon-reload, for unit files changed).  The error is systemd's (or the
 * bus's), its D-Bus name stripped. */
void sp_systemd_call_async (GDBusConnection *bus, const char *method, GCancellable *cancellable,
                            GAsyncReadyCallback callback, gpointer user_data);
gboolean sp_systemd_call_finish (GAsyncResult *result, GError **error);

G_END_DECLS
