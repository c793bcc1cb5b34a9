/* The files of [tls], checked as the peers will check them, at start-up
 * and by --check-config: each readable, the certificate signed by the
 * configured CA and within its validity period, the key the certificate's
 * own, and the certificate naming this member (its CN or a DNS
 * subjectAltName, as tools/sparrow-certs makes them).  Every error names
 * the configuration file, the group and key, and the file at fault. */
#pragma once

#include <gio/gio.h>

#include "config.h"

G_BEGIN_DECLS

/* config must not be insecure.  On success, this member's certificate
 * (with its key) and the CA as a database, ready for the transport. */
gboolean sp_tls_files_load (const SpConfig *config, GTlsCertificate **certificate,
                            GTlsDatabase **ca, GError **error);

/* One line for --check-config: who the certificate names and until when. */
char *sp_tls_files_describe (GTlsCertificate *certificate);

G_END_DECLS
