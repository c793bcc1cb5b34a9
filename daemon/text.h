/* How user-supplied text (keys, member names, addresses) is echoed in
 * error and log messages: shortened, and with the characters that would
 * make a terminal line misleading (control characters, bidi overrides and
 * isolates) shown as escapes, so that a message can neither be flooded nor
 * spoofed by the argument it echoes. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* Characters kept before the echo is cut off with "…". */
#define SP_TEXT_ECHO_MAX 64

/* C0 and C1 controls, DEL, and the bidi embeddings, overrides and isolates
 * (U+202A..U+202E, U+2066..U+2069). */
gboolean sp_text_is_unsafe (gunichar c);

/* The text as it can be shown in a message (invalid UTF-8 too); free it. */
char *sp_text_echo (const char *text);
/* The same, whole: data shown one item a line (sparrowctl ls, watch). */
char *sp_text_escape (const char *text);

G_END_DECLS
