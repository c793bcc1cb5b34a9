/* Publishes one SpNode on the bus: org.sparrow.cluster1.Manager and
 * org.sparrow.cluster1.Store at /org/sparrow/cluster1, and each plugin's
 * org.sparrow.cluster1.Plugin at /org/sparrow/cluster1/plugin/NAME
 * (dbus/org.sparrow.cluster1.xml is the contract).  Properties follow the node's; methods call the
 * node asynchronously and answer when it has. */
#pragma once

#include <gio/gio.h>

#include "node.h"
#include "plugin.h"

G_BEGIN_DECLS

#define SP_DBUS_NAME "org.sparrow.cluster1"
#define SP_DBUS_PATH "/org/sparrow/cluster1"

typedef struct _SpDBusService SpDBusService;

/* plugins: of SpPlugin, exported with the service. */
SpDBusService *sp_dbus_service_new (SpNode *node, GPtrArray *plugins);
gboolean sp_dbus_service_export (SpDBusService *service, GDBusConnection *connection,
                                 GError **error);
/* Sends what the properties and signals hold so far to the bus, before the
 * process exits. */
void sp_dbus_service_flush_async (SpDBusService *service, GAsyncReadyCallback callback,
                                  gpointer user_data);
gboolean sp_dbus_service_flush_finish (GAsyncResult *result, GError **error);
void sp_dbus_service_free (SpDBusService *service);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (SpDBusService, sp_dbus_service_free)

G_END_DECLS
