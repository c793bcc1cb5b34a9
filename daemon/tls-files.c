/* Files are read in the order their errors make sense: each readable, then
 * each parsed, then how they fit together. */
#include "tls-files.h"

#include <string.h>

#include "transport.h"

static gboolean
file_error (const SpConfig *config, GError **error, const char *key, const char *path,
            const char *what)
{
  return sp_config_error (config, error, SP_CONFIG_ERROR_INVALID, "tls", key, "%s: %s", path, what);
}

static gboolean
readable (const SpConfig *config, const char *key, const char *path, GError **error)
{
  g_autoptr (GError) local = NULL;
  g_autofree char *contents = NULL;

  if (!g_file_get_contents (path, &contents, NULL, &local))
    return sp_config_error (config, error, SP_CONFIG_ERROR_INVALID, "tls", key, "%s",
                            local->message);
  return TRUE;
}

/* The name a certificate is issued to: its first DNS subjectAltName, else
 * its subject. */
static char *
cert_name (GTlsCertificate *cert)
{
  g_autoptr (GPtrArray) dns_names = NULL;
  g_autofree char *subject = NULL;

  g_object_get (cert, "dns-names", &dns_names, "subject-name", &subject, NULL);
  if (dns_names && dns_names->len > 0)
    {
      gsize size;
      const char *dns = g_bytes_get_data (g_ptr_array_index (dns_names, 0), &size);

      return g_strndup (dns, size);
    }
  return g_steal_pointer (&subject);
}

static char *
format_time (GDateTime *t)
{
  return t ? g_date_time_format (t, "%Y-%m-%d %H:%M:%S UTC") : g_strdup ("?");
}

/* ---- DER, as little as the key check needs ------------------------------ */

typedef struct
{
  const guint8 *p, *end;
} Der;

/* The next element of d: its tag and contents; FALSE when malformed. */
static gboolean
der_next (Der *d, guint8 *tag, Der *contents)
{
  gsize len = 0;

  if (d->end - d->p < 2)
    return FALSE;
  *tag = *d->p++;
  len = *d->p++;
  if (len & 0x80)
    {
      guint n = len & 0x7f;

      if (n == 0 || n > 4 || (gsize)(d->end - d->p) < n)
        return FALSE;
      for (len = 0; n > 0; n--)
        len = len << 8 | *d->p++;
    }
  if ((gsize)(d->end - d->p) < len)
    return FALSE;
  contents->p = d->p;
  contents->end = d->p + len;
  d->p += len;
  return TRUE;
}

/* The subjectPublicKey bits of a certificate (X.509: Certificate >
 * TBSCertificate > the 6th field after the optional version). */
static gboolean
der_public_key (const GByteArray *cert, Der *key)
{
  Der d = { cert->data, cert->data + cert->len }, outer, tbs, field, spki, alg;
  guint8 tag;

  if (!der_next (&d, &tag, &outer) || !der_next (&outer, &tag, &tbs))
    return FALSE;
  if (!der_next (&tbs, &tag, &field))
    return FALSE;
  if (tag == 0xa0 && !der_next (&tbs, &tag, &field)) /* version, then serial */
    return FALSE;
  for (guint i = 0; i < 4; i++) /* signature, issuer, validity, subject */
    if (!der_next (&tbs, &tag, &field))
      return FALSE;
  if (!der_next (&tbs, &tag, &spki) || !der_next (&spki, &tag, &alg) || !der_next (&spki, &tag, key)
      || tag != 0x03 || key->end == key->p)
    return FALSE;
  key->p++; /* the BIT STRING's count of unused bits */
  /* RSA: SEQUENCE { modulus, exponent }, and the modulus is what a private
   * key has too; EC: the point, which a private key carries along */
  if (key->p < key->end && key->p[0] == 0x30)
    {
      Der rsa = *key, seq;

      if (!der_next (&rsa, &tag, &seq) || !der_next (&seq, &tag, key))
        return FALSE;
    }
  return TRUE;
}

/* Whether the certificate's public key is the one of its private key: the
 * private key (PKCS#8) holds the RSA modulus, or the EC public point
 * (OpenSSL, and so sparrow-certs, always include it).  GIO loads a
 * certificate with any key and keeps the TLS library beneath it hidden;
 * a key that does not carry its public half passes here, and fails the
 * first handshake. */
static gboolean
key_matches (GTlsCertificate *cert)
{
  g_autoptr (GByteArray) der = NULL;
  g_autoptr (GByteArray) private_key = NULL;
  Der public_key;

  g_object_get (cert, "certificate", &der, "private-key", &private_key, NULL);
  if (!der || !private_key || !der_public_key (der, &public_key))
    return TRUE;
  for (gsize n = public_key.end - public_key.p, i = 0; n > 0 && i + n <= private_key->len; i++)
    if (memcmp (private_key->data + i, public_key.p, n) == 0)
      return TRUE;
  return FALSE;
}

static gboolean
check_chain (const SpConfig *config, GTlsDatabase *db, GTlsCertificate *cert, GError **error)
{
  GTlsCertificateFlags errors = 0;
  g_autoptr (GDateTime) now = g_date_time_new_now_utc ();
  g_autoptr (GDateTime) before = NULL;
  g_autoptr (GDateTime) after = NULL;
  g_autofree char *when = NULL;

  g_object_get (cert, "not-valid-before", &before, "not-valid-after", &after, NULL);
  if (before && g_date_time_compare (now, before) < 0)
    {
      when = format_time (before);
      return sp_config_error (config, error, SP_CONFIG_ERROR_INVALID, "tls", "cert",
                              "%s: not valid before %s (is this host's clock right?)",
                              config->tls_cert, when);
    }
  if (after && g_date_time_compare (now, after) > 0)
    {
      when = format_time (after);
      return sp_config_error (config, error, SP_CONFIG_ERROR_INVALID, "tls", "cert",
                              "%s: expired on %s", config->tls_cert, when);
    }
  /* A member presents its certificate as client and as server. */
  errors |= g_tls_database_verify_chain (db, cert, G_TLS_DATABASE_PURPOSE_AUTHENTICATE_CLIENT, NULL,
                                         NULL, G_TLS_DATABASE_VERIFY_NONE, NULL, NULL);
  errors |= g_tls_database_verify_chain (db, cert, G_TLS_DATABASE_PURPOSE_AUTHENTICATE_SERVER, NULL,
                                         NULL, G_TLS_DATABASE_VERIFY_NONE, NULL, NULL);
  if (errors & G_TLS_CERTIFICATE_UNKNOWN_CA)
    return sp_config_error (config, error, SP_CONFIG_ERROR_INVALID, "tls", "cert",
                            "%s: not signed by the CA in %s ([tls] ca)", config->tls_cert,
                            config->tls_ca);
  if (errors != 0)
    return sp_config_error (config, error, SP_CONFIG_ERROR_INVALID, "tls", "cert",
                            "%s: refused by the CA in %s (%s)", config->tls_cert, config->tls_ca,
                            errors & G_TLS_CERTIFICATE_EXPIRED         ? "the CA expired"
                            : errors & G_TLS_CERTIFICATE_NOT_ACTIVATED ? "the CA is not valid yet"
                            : errors & G_TLS_CERTIFICATE_INSECURE      ? "insecure algorithm"
                                                                       : "invalid");
  return TRUE;
}

/* A CA file that holds the member's own certificate trusts it as it is:
 * it would check, and the other members would refuse it. */
static gboolean
ca_is_not (const SpConfig *config, GTlsCertificate *cert, GError **error)
{
  GList *list = g_tls_certificate_list_new_from_file (config->tls_ca, NULL);
  gboolean same = FALSE;

  for (GList *l = list; l; l = l->next)
    same = same || g_tls_certificate_is_same (l->data, cert);
  g_list_free_full (list, g_object_unref);
  if (same)
    return sp_config_error (config, error, SP_CONFIG_ERROR_INVALID, "tls", "ca",
                            "%s holds this member's own certificate (%s), not the CA's",
                            config->tls_ca, config->tls_cert);
  return TRUE;
}

gboolean
sp_tls_files_load (const SpConfig *config, GTlsCertificate **certificate, GTlsDatabase **ca,
                   GError **error)
{
  g_autoptr (GTlsCertificate) alone = NULL;
  g_autoptr (GTlsCertificate) cert = NULL;
  g_autoptr (GTlsDatabase) db = NULL;
  g_autoptr (GError) local = NULL;
  g_autofree char *name = NULL;

  g_return_val_if_fail (!config->insecure, FALSE);
  if (!readable (config, "ca", config->tls_ca, error)
      || !readable (config, "cert", config->tls_cert, error)
      || !readable (config, "key", config->tls_key, error))
    return FALSE;

  db = g_tls_file_database_new (config->tls_ca, &local);
  if (!db)
    return file_error (config, error, "ca", config->tls_ca, local->message);
  alone = g_tls_certificate_new_from_file (config->tls_cert, &local);
  if (!alone)
    return file_error (config, error, "cert", config->tls_cert, local->message);
  cert = g_tls_certificate_new_from_files (config->tls_cert, config->tls_key, &local);
  if (!cert)
    return file_error (config, error, "key", config->tls_key, local->message);
  if (!key_matches (cert))
    return sp_config_error (config, error, SP_CONFIG_ERROR_INVALID, "tls", "key",
                            "%s: not the private key of %s ([tls] cert)", config->tls_key,
                            config->tls_cert);
  if (!ca_is_not (config, alone, error) || !check_chain (config, db, cert, error))
    return FALSE;
  if (!sp_transport_cert_has_name (cert, config->node_name))
    {
      name = cert_name (cert);
      return sp_config_error (config, error, SP_CONFIG_ERROR_INVALID, "tls", "cert",
                              "%s names member \"%s\", not this node \"%s\" ([node] name)",
                              config->tls_cert, name ? name : "", config->node_name);
    }
  *certificate = g_steal_pointer (&cert);
  *ca = g_steal_pointer (&db);
  return TRUE;
}

char *
sp_tls_files_describe (GTlsCertificate *certificate)
{
  g_autoptr (GDateTime) after = NULL;
  g_autofree char *name = cert_name (certificate);
  g_autofree char *issuer = NULL;
  g_autofree char *until = NULL;

  g_object_get (certificate, "not-valid-after", &after, "issuer-name", &issuer, NULL);
  until = format_time (after);
  return g_strdup_printf ("certificate for %s, signed by %s, valid until %s", name, issuer, until);
}
