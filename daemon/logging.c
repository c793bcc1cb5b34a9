#include "logging.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char *
level_name (GLogLevelFlags level)
{
  if (level & G_LOG_LEVEL_ERROR)
    return "ERROR";
  if (level & G_LOG_LEVEL_CRITICAL)
    return "CRITICAL";
  if (level & G_LOG_LEVEL_WARNING)
    return "WARNING";
  if (level & G_LOG_LEVEL_MESSAGE)
    return "NOTICE";
  if (level & G_LOG_LEVEL_INFO)
    return "INFO";
  return "DEBUG";
}

static const char *
field (const GLogField *fields, gsize n_fields, const char *key)
{
  for (gsize i = 0; i < n_fields; i++)
    if (g_str_equal (fields[i].key, key))
      return fields[i].length < 0 ? fields[i].value : NULL;
  return NULL;
}

static GLogWriterOutput
write_line (GLogLevelFlags level, const GLogField *fields, gsize n_fields)
{
  const char *message = field (fields, n_fields, "MESSAGE");
  const char *domain = field (fields, n_fields, "GLIB_DOMAIN");
  g_autoptr (GDateTime) now = g_date_time_new_now_local ();
  g_autofree char *time = g_date_time_format (now, "%H:%M:%S");
  g_autofree char *tag = NULL;
  g_autofree char *line = NULL;
  gsize length;

  /* sparrowd's own domain goes without saying */
  if (domain && !g_str_equal (domain, G_LOG_DOMAIN))
    tag = g_strdup_printf ("[%s] ", domain);
  line = g_strdup_printf ("%s.%03d %s %s%s\n", time, g_date_time_get_microsecond (now) / 1000,
                          level_name (level), tag ? tag : "", message ? message : "(no message)");
  length = strlen (line);
  /* one write: lines of threads do not interleave */
  return write (STDERR_FILENO, line, length) == (gssize)length ? G_LOG_WRITER_HANDLED
                                                               : G_LOG_WRITER_UNHANDLED;
}

static GLogWriterOutput
writer (GLogLevelFlags level, const GLogField *fields, gsize n_fields, gpointer user_data)
{
  gboolean journal = GPOINTER_TO_INT (user_data);

  if (g_log_writer_default_would_drop (level, field (fields, n_fields, "GLIB_DOMAIN")))
    return G_LOG_WRITER_HANDLED;
  if (journal && g_log_writer_journald (level, fields, n_fields, NULL) == G_LOG_WRITER_HANDLED)
    return G_LOG_WRITER_HANDLED;
  return write_line (level, fields, n_fields);
}

void
sp_logging_init (void)
{
  gboolean journal = g_log_writer_is_journald (fileno (stderr));

  g_log_set_writer_func (writer, GINT_TO_POINTER (journal), NULL);
}
