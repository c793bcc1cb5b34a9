#include "text.h"

gboolean
sp_text_is_unsafe (gunichar c)
{
  return c < 0x20 || (c >= 0x7f && c <= 0x9f) || (c >= 0x202a && c <= 0x202e)
         || (c >= 0x2066 && c <= 0x2069);
}

/* The text valid, unsafe characters as escapes, cut after max characters. */
static char *
escape (const char *text, guint max)
{
  g_autofree char *valid = g_utf8_make_valid (text, -1);
  GString *out = g_string_new (NULL);
  guint n = 0;

  for (const char *p = valid; *p; p = g_utf8_next_char (p), n++)
    {
      gunichar c = g_utf8_get_char (p);

      if (n == max)
        {
          g_string_append (out, "…");
          break;
        }
      if (sp_text_is_unsafe (c))
        g_string_append_printf (out, c < 0x100 ? "\\x%02x" : "\\u%04x", c);
      else
        g_string_append_unichar (out, c);
    }
  return g_string_free (out, FALSE);
}

char *
sp_text_echo (const char *text)
{
  return escape (text, SP_TEXT_ECHO_MAX);
}

char *
sp_text_escape (const char *text)
{
  return escape (text, G_MAXUINT);
}
