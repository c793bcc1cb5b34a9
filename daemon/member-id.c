#include "member-id.h"

guint64
sp_member_id (const char *name)
{
  /* FNV-1a: stable across hosts and releases, never 0 (reserved). */
  guint64 h = 0xcbf29ce484222325ULL;

  for (const guchar *p = (const guchar *)name; *p; p++)
    h = (h ^ *p) * 0x100000001b3ULL;
  return h ? h : 1;
}
