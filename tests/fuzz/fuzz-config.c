/* The configuration parser (daemon/config.c) with the plugins' groups
 * ([timesync]: plugins/timesync/timesync-config.c, [vip]:
 * plugins/vip/vip-config.c) on hostile text: the input is sparrow.conf,
 * and what follows a line "# sparrow-fuzz: drop-in" is a drop-in of
 * sparrow.conf.d.  Loading either fails with an error or gives a
 * configuration the plugins read, and timesync's files are written from
 * it (the first initial member as the leader). */
#define _GNU_SOURCE /* memmem */
#include "fuzz.h"

#include <glib/gstdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "timesync-config.h"
#include "vip-config.h"

#define DROP_IN_MARK "\n# sparrow-fuzz: drop-in\n"

static void
timesync (SpConfig *config, GPtrArray *warnings)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (SpTimesyncConfig) ts = sp_timesync_config_read (config, warnings, &error);
  g_autofree char *leader = NULL;
  g_autofree char *host = NULL;
  g_autofree char *chrony = NULL;
  g_autofree char *sources = NULL;
  g_autofree char *ntpd = NULL;
  g_autofree char *ntpd_leading = NULL;
  g_auto (GStrv) local = NULL;
  g_auto (GStrv) local_leading = NULL;

  if (!ts)
    {
      if (sp_config_has_group (config, "timesync") && !error)
        abort ();
      return;
    }
  if (config->initial_members->len > 0)
    {
      const SpConfigMember *m = g_ptr_array_index (config->initial_members, 0);

      leader = strchr (m->host, ':') ? g_strdup_printf ("[%s]:%u", m->host, m->port)
                                     : g_strdup_printf ("%s:%u", m->host, m->port);
      host = sp_timesync_host_of (leader);
    }
  chrony = sp_timesync_chrony_conf (ts);
  local = sp_timesync_chrony_local (ts, FALSE);
  local_leading = sp_timesync_chrony_local (ts, TRUE);
  sources = sp_timesync_chrony_sources (ts, leader);
  ntpd = sp_timesync_ntpd_conf (ts, leader);
  ntpd_leading = sp_timesync_ntpd_conf (ts, NULL);
}

static void
vip (SpConfig *config, GPtrArray *warnings)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (SpVipConfig) v = sp_vip_config_read (config, warnings, &error);

  if (!v && sp_config_has_group (config, "vip") && !error)
    abort ();
  if (v && v->addresses->len == 0)
    abort ();
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  g_autofree char *dir = NULL;
  g_autofree char *path = NULL;
  g_autofree char *drop_ins = NULL;
  g_autoptr (GPtrArray) warnings = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GError) error = NULL;
  g_autoptr (SpConfig) config = NULL;
  const uint8_t *mark = size >= strlen (DROP_IN_MARK)
                            ? memmem (data, size, DROP_IN_MARK, strlen (DROP_IN_MARK))
                            : NULL;
  size_t main_size = mark ? (size_t)(mark - data) + 1 : size;

  sp_fuzz_init ();
  dir = sp_fuzz_make_dir ();
  sp_fuzz_write_file (dir, "sparrow.conf", data, main_size);
  if (mark)
    {
      const uint8_t *rest = mark + strlen (DROP_IN_MARK);

      drop_ins = g_build_filename (dir, "sparrow.conf.d", NULL);
      g_mkdir (drop_ins, 0700);
      sp_fuzz_write_file (drop_ins, "50-fuzz.conf", rest, size - (size_t)(rest - data));
    }
  path = g_build_filename (dir, "sparrow.conf", NULL);
  config = sp_config_load (path, warnings, &error);
  if (config)
    {
      timesync (config, warnings);
      vip (config, warnings);
      sp_config_warn_unclaimed (config, warnings);
    }
  else if (!error || !error->message)
    abort ();
  sp_fuzz_remove_dir (dir);
  return 0;
}
