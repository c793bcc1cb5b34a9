#include "timesync-config.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "text.h"

#define GROUP "timesync"

static const char *const keys[] = {
  "backend", "allow", "local-stratum", "upstream", "minpoll", "maxpoll", NULL,
};

void
sp_timesync_config_free (SpTimesyncConfig *config)
{
  if (!config)
    return;
  g_strfreev (config->allow);
  g_strfreev (config->upstream);
  g_free (config);
}

static gboolean
valid_subnet (const char *text)
{
  const char *slash = strchr (text, '/');
  g_autofree char *host = g_strndup (text, slash ? (gsize)(slash - text) : strlen (text));
  guint8 addr[16];
  int family = inet_pton (AF_INET, host, addr) == 1    ? AF_INET
               : inet_pton (AF_INET6, host, addr) == 1 ? AF_INET6
                                                       : 0;
  guint64 prefix;

  if (!family)
    return FALSE;
  return !slash
         || g_ascii_string_to_unsigned (slash + 1, 10, 0, family == AF_INET ? 32 : 128, &prefix,
                                        NULL);
}

/* A host name or address chronyd and ntpd take on a server line: nothing
 * that would start another directive or option. */
static gboolean
valid_host (const char *text)
{
  if (!*text || strlen (text) > 253 || text[0] == '-')
    return FALSE;
  for (const char *p = text; *p; p++)
    if (!g_ascii_isalnum (*p) && !strchr ("-.:_", *p))
      return FALSE;
  return TRUE;
}

static gboolean
get_poll (SpConfig *config, const char *key, int *out, GError **error)
{
  g_autofree char *text = NULL;
  gint64 value;

  if (!sp_config_get_string (config, GROUP, key, &text, error))
    return FALSE;
  if (!text)
    return TRUE;
  if (!g_ascii_string_to_signed (text, 10, -6, 17, &value, NULL))
    {
      g_autofree char *echo = sp_text_echo (text);

      return sp_config_error (config, error, SP_CONFIG_ERROR_INVALID, GROUP, key,
                              "\"%s\": expected a whole number of -6..17 (log2 seconds)", echo);
    }
  *out = value;
  return TRUE;
}

SpTimesyncConfig *
sp_timesync_config_read (SpConfig *config, GPtrArray *warnings, GError **error)
{
  g_autoptr (SpTimesyncConfig) t = NULL;
  g_autofree char *backend = NULL;

  if (!sp_config_has_group (config, GROUP))
    return NULL;
  sp_config_claim (config, GROUP, keys, warnings);
  t = g_new0 (SpTimesyncConfig, 1);
  t->stratum = 10;
  t->minpoll = 0;
  t->maxpoll = 4;
  if (!sp_config_get_string (config, GROUP, "backend", &backend, error)
      || !sp_config_get_strv (config, GROUP, "allow", &t->allow, error)
      || !sp_config_get_uint (config, GROUP, "local-stratum", 1, 15, &t->stratum, error)
      || !sp_config_get_strv (config, GROUP, "upstream", &t->upstream, error)
      || !get_poll (config, "minpoll", &t->minpoll, error)
      || !get_poll (config, "maxpoll", &t->maxpoll, error))
    return NULL;
  if (backend && g_str_equal (backend, "ntpd"))
    t->backend = SP_TIMESYNC_NTPD;
  else if (backend && !g_str_equal (backend, "chrony"))
    {
      g_autofree char *echo = sp_text_echo (backend);

      sp_config_error (config, error, SP_CONFIG_ERROR_INVALID, GROUP, "backend",
                       "\"%s\": expected chrony or ntpd", echo);
      return NULL;
    }
  if (!t->allow || !t->allow[0])
    {
      sp_config_error (config, error, SP_CONFIG_ERROR_MISSING, GROUP, "allow",
                       "expected at least one subnet, ADDRESS/PREFIX");
      return NULL;
    }
  for (guint i = 0; t->allow[i]; i++)
    if (!valid_subnet (t->allow[i]))
      {
        g_autofree char *echo = sp_text_echo (t->allow[i]);

        sp_config_error (config, error, SP_CONFIG_ERROR_INVALID, GROUP, "allow",
                         "\"%s\": expected ADDRESS/PREFIX, IPv4 or IPv6", echo);
        return NULL;
      }
  if (!t->upstream)
    t->upstream = g_new0 (char *, 1);
  for (guint i = 0; t->upstream[i]; i++)
    if (!valid_host (t->upstream[i]))
      {
        g_autofree char *echo = sp_text_echo (t->upstream[i]);

        sp_config_error (config, error, SP_CONFIG_ERROR_INVALID, GROUP, "upstream",
                         "\"%s\": expected a host name or address", echo);
        return NULL;
      }
  if (t->minpoll > t->maxpoll)
    {
      sp_config_error (config, error, SP_CONFIG_ERROR_INVALID, GROUP, "maxpoll",
                       "%d: expected at least minpoll (%d)", t->maxpoll, t->minpoll);
      return NULL;
    }
  return g_steal_pointer (&t);
}

#define HEADER "# Written by sparrow's timesync plugin; removed when sparrow stops.\n"

GStrv
sp_timesync_chrony_local (const SpTimesyncConfig *config, gboolean leading)
{
  GStrvBuilder *b = g_strv_builder_new ();
  GStrv args;

  g_strv_builder_add (b, "local");
  if (!leading)
    g_strv_builder_add (b, "off");
  else
    {
      g_autofree char *stratum = g_strdup_printf ("%u", config->stratum);

      g_strv_builder_add (b, "stratum");
      g_strv_builder_add (b, stratum);
      /* Without upstream servers the leader serves its own clock at once,
       * even when it was just synchronised to the previous leader: that
       * reference would otherwise stay (until its distance reached 1 s),
       * and the previous leader, now a follower, refuses a source whose
       * reference is itself. */
      if (!config->upstream[0])
        {
          g_strv_builder_add (b, "distance");
          g_strv_builder_add (b, "0");
        }
    }
  args = g_strv_builder_end (b);
  g_strv_builder_unref (b);
  return args;
}

char *
sp_timesync_chrony_conf (const SpTimesyncConfig *config)
{
  GString *out = g_string_new (HEADER);
  g_auto (GStrv) local = sp_timesync_chrony_local (config, TRUE);
  g_autofree char *line = g_strjoinv (" ", local);

  for (guint i = 0; config->allow[i]; i++)
    g_string_append_printf (out, "allow %s\n", config->allow[i]);
  /* For a start of chronyd: followers turn it off at run time. */
  g_string_append_printf (out, "%s\n", line);
  return g_string_free (out, FALSE);
}

char *
sp_timesync_chrony_sources (const SpTimesyncConfig *config, const char *leader)
{
  GString *out;

  /* The leader's address comes from the cluster: a line of its own only
   * once it is a host and nothing else. */
  if (leader && !valid_host (leader))
    return NULL;
  out = g_string_new (HEADER);
  if (leader)
    /* prefer: the leader wins over the admin's own sources that agree. */
    g_string_append_printf (out, "server %s iburst minpoll %d maxpoll %d prefer\n", leader,
                            config->minpoll, config->maxpoll);
  else
    for (guint i = 0; config->upstream[i]; i++)
      g_string_append_printf (out, "server %s iburst\n", config->upstream[i]);
  return g_string_free (out, FALSE);
}

char *
sp_timesync_ntpd_conf (const SpTimesyncConfig *config, const char *leader)
{
  GString *out;

  if (leader && !valid_host (leader))
    return NULL;
  out = g_string_new (HEADER);
  g_string_append_printf (out, "includefile %s\n", SP_TIMESYNC_NTPD_ADMIN_CONF);
  if (leader)
    /* One source is enough here (Debian's file asks for 3); ntpd polls
     * every 8 s at least. */
    g_string_append_printf (out,
                            "tos minsane 1 minclock 1\n"
                            "server %s iburst minpoll %d maxpoll %d prefer\n",
                            leader, MAX (config->minpoll, 3), MAX (config->maxpoll, 3));
  else
    {
      for (guint i = 0; config->upstream[i]; i++)
        g_string_append_printf (out, "server %s iburst\n", config->upstream[i]);
      /* ntpsec has no local clock driver: orphan mode serves the cluster
       * at that stratum, at once, while no upstream server answers. */
      g_string_append_printf (out, "tos orphan %u orphanwait 0\n", config->stratum);
    }
  return g_string_free (out, FALSE);
}

gboolean
sp_timesync_chrony_parse_sources (const char *output, char **source, guint *stratum, double *offset)
{
  g_auto (GStrv) lines = g_strsplit (output, "\n", -1);

  /* mode,state,name,stratum,poll,reach,last-rx,adjusted offset,measured
   * offset,error */
  for (guint i = 0; lines[i]; i++)
    {
      g_auto (GStrv) f = g_strsplit (lines[i], ",", -1);
      guint64 st;

      if (g_strv_length (f) < 10 || !g_str_equal (f[1], "*")
          || !g_ascii_string_to_unsigned (f[3], 10, 0, 16, &st, NULL))
        continue;
      *source = g_strdup (f[2]);
      *stratum = st;
      *offset = g_ascii_strtod (f[8], NULL);
      return TRUE;
    }
  return FALSE;
}

gboolean
sp_timesync_ntpq_parse_peers (const char *output, char **source, guint *stratum, double *offset)
{
  g_auto (GStrv) lines = g_strsplit (output, "\n", -1);

  /* *remote refid st t when poll reach delay offset jitter (offset in ms) */
  for (guint i = 0; lines[i]; i++)
    {
      g_auto (GStrv) f = NULL;
      const char *w[9];
      guint n = 0;
      guint64 st;

      if (lines[i][0] != '*')
        continue;
      f = g_strsplit_set (lines[i] + 1, " \t", -1);
      for (guint j = 0; f[j] && n < G_N_ELEMENTS (w); j++)
        if (*f[j])
          w[n++] = f[j];
      if (n < G_N_ELEMENTS (w) || !g_ascii_string_to_unsigned (w[2], 10, 0, 16, &st, NULL))
        return FALSE;
      *source = g_strdup (w[0]);
      *stratum = st;
      *offset = g_ascii_strtod (w[8], NULL) / 1000;
      return TRUE;
    }
  return FALSE;
}

char *
sp_timesync_host_of (const char *address)
{
  const char *colon;
  g_autofree char *host = NULL;

  if (address[0] == '[')
    {
      const char *end = strchr (address, ']');

      host = end ? g_strndup (address + 1, end - address - 1) : NULL;
    }
  else
    {
      colon = strrchr (address, ':');
      host = colon ? g_strndup (address, colon - address) : g_strdup (address);
    }
  return host && valid_host (host) ? g_steal_pointer (&host) : NULL;
}
