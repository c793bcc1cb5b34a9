#include "vip-config.h"

#include <arpa/inet.h>
#include <net/if.h>
#include <string.h>

#include "text.h"

#define GROUP "vip"

static const char *const keys[] = {
  "addresses", "announce-count", "announce-interval-ms", "refresh-s", "probe-ms", "on-failure",
  NULL,
};

void
sp_vip_address_free (SpVipAddress *address)
{
  if (!address)
    return;
  g_free (address->ifname);
  g_free (address->address);
  g_free (address->text);
  g_free (address);
}

static gboolean
valid_ifname (const char *name)
{
  if (!*name || strlen (name) >= IFNAMSIZ || g_str_equal (name, ".") || g_str_equal (name, ".."))
    return FALSE;
  for (const char *p = name; *p; p++)
    if (*p == '/' || *p == ':' || g_ascii_isspace (*p) || !g_ascii_isprint (*p))
      return FALSE;
  return TRUE;
}

SpVipAddress *
sp_vip_address_parse (const char *text, GError **error)
{
  g_autoptr (SpVipAddress) a = g_new0 (SpVipAddress, 1);
  g_autofree char *echo = sp_text_echo (text);
  const char *at = strrchr (text, '@');
  const char *slash = at ? memchr (text, '/', at - text) : NULL;
  g_autofree char *host = slash ? g_strndup (text, slash - text) : NULL;
  g_autofree char *prefix = slash ? g_strndup (slash + 1, at - slash - 1) : NULL;
  guint64 len = 0;
  char buf[INET6_ADDRSTRLEN];

  if (!slash || !valid_ifname (at + 1))
    {
      g_set_error (error, SP_CONFIG_ERROR, SP_CONFIG_ERROR_INVALID,
                   "\"%s\": expected ADDRESS/PREFIX@INTERFACE", echo);
      return NULL;
    }
  if (inet_pton (AF_INET, host, a->addr) == 1)
    a->family = AF_INET;
  else if (inet_pton (AF_INET6, host, a->addr) == 1)
    a->family = AF_INET6;
  else
    {
      g_set_error (error, SP_CONFIG_ERROR, SP_CONFIG_ERROR_INVALID,
                   "\"%s\": expected ADDRESS/PREFIX@INTERFACE with an IPv4 or IPv6 address", echo);
      return NULL;
    }
  if (!g_ascii_string_to_unsigned (prefix, 10, 0, a->family == AF_INET ? 32 : 128, &len, NULL))
    {
      g_set_error (error, SP_CONFIG_ERROR, SP_CONFIG_ERROR_INVALID,
                   "\"%s\": expected ADDRESS/PREFIX@INTERFACE with a prefix of 0..%d for %s", echo,
                   a->family == AF_INET ? 32 : 128, a->family == AF_INET ? "IPv4" : "IPv6");
      return NULL;
    }
  a->prefix = len;
  a->ifname = g_strdup (at + 1);
  a->address = g_strdup (inet_ntop (a->family, a->addr, buf, sizeof buf));
  a->text = g_strdup_printf ("%s/%u@%s", a->address, a->prefix, a->ifname);
  return g_steal_pointer (&a);
}

void
sp_vip_config_free (SpVipConfig *config)
{
  if (!config)
    return;
  g_ptr_array_unref (config->addresses);
  g_free (config);
}

SpVipConfig *
sp_vip_config_read (SpConfig *config, GPtrArray *warnings, GError **error)
{
  g_autoptr (SpVipConfig) vip = NULL;
  g_auto (GStrv) addresses = NULL;
  g_autofree char *on_failure = NULL;

  if (!sp_config_has_group (config, GROUP))
    return NULL;
  sp_config_claim (config, GROUP, keys, warnings);
  vip = g_new0 (SpVipConfig, 1);
  vip->addresses = g_ptr_array_new_with_free_func ((GDestroyNotify)sp_vip_address_free);
  vip->announce_count = 3;
  vip->announce_interval_ms = 100;
  vip->probe_ms = 20;
  vip->transfer_on_failure = TRUE;
  if (!sp_config_get_strv (config, GROUP, "addresses", &addresses, error)
      || !sp_config_get_uint (config, GROUP, "announce-count", 0, 100, &vip->announce_count, error)
      || !sp_config_get_uint (config, GROUP, "announce-interval-ms", 1, 10000,
                              &vip->announce_interval_ms, error)
      || !sp_config_get_uint (config, GROUP, "refresh-s", 0, 86400, &vip->refresh_s, error)
      || !sp_config_get_uint (config, GROUP, "probe-ms", 0, 5000, &vip->probe_ms, error)
      || !sp_config_get_string (config, GROUP, "on-failure", &on_failure, error))
    return NULL;
  if (!addresses || !addresses[0])
    {
      sp_config_error (config, error, SP_CONFIG_ERROR_MISSING, GROUP, "addresses",
                       "expected at least one ADDRESS/PREFIX@INTERFACE");
      return NULL;
    }
  for (guint i = 0; addresses[i]; i++)
    {
      g_autoptr (GError) local = NULL;
      g_autoptr (SpVipAddress) a = sp_vip_address_parse (addresses[i], &local);

      if (!a)
        {
          sp_config_error (config, error, SP_CONFIG_ERROR_INVALID, GROUP, "addresses", "%s",
                           local->message);
          return NULL;
        }
      for (guint j = 0; j < vip->addresses->len; j++)
        {
          SpVipAddress *b = g_ptr_array_index (vip->addresses, j);

          if (memcmp (a->addr, b->addr, sizeof a->addr) == 0 && a->family == b->family)
            {
              sp_config_error (config, error, SP_CONFIG_ERROR_INVALID, GROUP, "addresses",
                               "\"%s\": %s is listed twice", a->text, a->address);
              return NULL;
            }
        }
      g_ptr_array_add (vip->addresses, g_steal_pointer (&a));
    }
  if (on_failure && !g_str_equal (on_failure, "transfer") && !g_str_equal (on_failure, "stay"))
    {
      g_autofree char *echo = sp_text_echo (on_failure);

      sp_config_error (config, error, SP_CONFIG_ERROR_INVALID, GROUP, "on-failure",
                       "\"%s\": expected transfer or stay", echo);
      return NULL;
    }
  vip->transfer_on_failure = !on_failure || g_str_equal (on_failure, "transfer");
  return g_steal_pointer (&vip);
}

gboolean
sp_vip_record_save (const char *path, GPtrArray *addresses, GError **error)
{
  g_autoptr (GString) text = g_string_new (NULL);

  for (guint i = 0; i < addresses->len; i++)
    g_string_append_printf (text, "%s\n", ((SpVipAddress *)addresses->pdata[i])->text);
  return g_file_set_contents_full (path, text->str, text->len, G_FILE_SET_CONTENTS_CONSISTENT, 0600,
                                   error);
}

GPtrArray *
sp_vip_record_load (const char *path, GError **error)
{
  g_autoptr (GPtrArray) addresses
      = g_ptr_array_new_with_free_func ((GDestroyNotify)sp_vip_address_free);
  g_autoptr (GError) local = NULL;
  g_autofree char *text = NULL;
  g_auto (GStrv) lines = NULL;

  if (!g_file_get_contents (path, &text, NULL, &local))
    {
      if (g_error_matches (local, G_FILE_ERROR, G_FILE_ERROR_NOENT))
        return NULL;
      g_propagate_error (error, g_steal_pointer (&local));
      return NULL;
    }
  lines = g_strsplit (text, "\n", -1);
  for (guint i = 0; lines[i]; i++)
    {
      SpVipAddress *a;

      if (!*lines[i])
        continue;
      a = sp_vip_address_parse (lines[i], &local);
      if (!a)
        {
          g_propagate_prefixed_error (error, g_steal_pointer (&local), "%s:%u: ", path, i + 1);
          return NULL;
        }
      g_ptr_array_add (addresses, a);
    }
  return g_steal_pointer (&addresses);
}
