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

/* Reload (daemon-reload) through the Manager, for unit files changed. */
void sp_systemd_reload_async (GDBusConnection *bus, GCancellable *cancellable,
                              GAsyncReadyCallback callback, gpointer user_data);
gboolean sp_systemd_reload_finish (GAsyncResult *result, GError **error);

G_END_DECLS
