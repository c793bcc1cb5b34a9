/* Who may change the cluster: root always; anyone else as polkit decides
 * (org.freedesktop.PolicyKit1 CheckAuthorization, asynchronous), with
 * interaction only when the caller's message allows it.  Without polkitd
 * on the bus, non-root callers are refused.  Actions: polkit/org.sparrow.cluster1.policy. */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

#define SP_ACTION_TRANSFER "org.sparrow.cluster1.transfer-leadership"
#define SP_ACTION_MEMBERS  "org.sparrow.cluster1.manage-members"
#define SP_ACTION_WRITE    "org.sparrow.cluster1.write-store"

/* Checks the sender of invocation for action.  On success returns TRUE from
 * sp_authority_check_finish; a refusal is an error in G_DBUS_ERROR /
 * G_DBUS_ERROR_ACCESS_DENIED whose message names the action. */
void sp_authority_check_async (GDBusMethodInvocation *invocation, const char *action,
                               GAsyncReadyCallback callback, gpointer user_data);
gboolean sp_authority_check_finish (GAsyncResult *result, GError **error);
/* Whether an earlier check found the sender to be root: the change may then
 * run at once, without a round trip to the bus or a main-loop pass.  (The
 * uid of a bus client is remembered for as long as the connection lasts.) */
gboolean sp_authority_known_root (GDBusMethodInvocation *invocation);

G_END_DECLS
