/* Each file is parsed on its own (so warnings and syntax errors name it),
 * then merged key by key into one GKeyFile; the file each key last came from
 * is remembered so that a bad value is reported where it was written.
 *
 * Error codes: MISSING for an absent main file or required key, PARSE for a
 * file that cannot be read or is not a key file, INVALID for bad values. */
#include "config.h"

#include <string.h>

#include "address.h"
#include "raft/raft.h"

#define DROP_IN_DIR          "sparrow.conf.d"
#define HEARTBEAT_MIN        1
#define HEARTBEAT_MAX        20000
#define ELECTION_MIN         10
#define ELECTION_MAX         60000
#define SNAPSHOT_ENTRIES_MIN 10
#define FENCE_PART_MAX       60000
/* A timer wake-up and an rtnetlink request take a millisecond or so; more
 * than a second is no keeper's reaction. */
#define KEEPER_MIN      1
#define KEEPER_MAX      1000
#define ADDRESS_EXPECTS SP_ADDRESS_EXPECTS

typedef struct
{
  const char *group;
  const char *keys[12];
} SchemaGroup;

static const SchemaGroup schema[] = {
  { "node", { "name", "listen", "data-dir", "strict", NULL } },
  { "cluster",
    { "initial-members", "heartbeat-ms", "election-ms", "join", "snapshot-entries", "fence",
      "keeper-ms", "leader-watchdog-ms", "cleanup-ms", "units-stop-ms", "fence-keeper", NULL } },
  { "tls", { "ca", "cert", "key", "insecure", "revoked", NULL } },
};

GQuark
sp_config_error_quark (void)
{
  return g_quark_from_static_string ("sp-config-error-quark");
}

static void
member_free (SpConfigMember *m)
{
  g_free (m->name);
  g_free (m->host);
  g_free (m);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC (SpConfigMember, member_free)

static void loader_free (struct _SpConfigLoader *l);

void
sp_config_free (SpConfig *config)
{
  if (!config)
    return;
  g_free (config->path);
  g_free (config->node_name);
  g_free (config->listen_host);
  g_free (config->data_dir);
  g_free (config->fence_keeper);
  g_clear_pointer (&config->initial_members, g_ptr_array_unref);
  g_free (config->tls_ca);
  g_free (config->tls_cert);
  g_free (config->tls_key);
  g_strfreev (config->tls_revoked);
  g_clear_pointer (&config->loader, loader_free);
  g_free (config);
}

const SpConfigMember *
sp_config_find_member (const SpConfig *config, const char *name)
{
  for (guint i = 0; i < config->initial_members->len; i++)
    {
      const SpConfigMember *m = g_ptr_array_index (config->initial_members, i);

      if (g_str_equal (m->name, name))
        return m;
    }
  return NULL;
}

/* ---- reading files ------------------------------------------------------ */

/* GLib quotes the offending line but does not number it: the first line
 * whose prefix no longer parses is the one (parsing is line by line). */
static guint
bad_line (const char *contents, gsize length)
{
  g_autoptr (GArray) ends = g_array_new (FALSE, FALSE, sizeof (gsize));
  guint lo = 1, hi;

  for (gsize i = 1; i <= length; i++)
    if (i == length || contents[i - 1] == '\n')
      g_array_append_val (ends, i);
  hi = MAX (ends->len, 1);
  while (lo < hi)
    {
      guint mid = lo + (hi - lo) / 2;
      g_autoptr (GKeyFile) kf = g_key_file_new ();

      if (g_key_file_load_from_data (kf, contents, g_array_index (ends, gsize, mid - 1),
                                     G_KEY_FILE_NONE, NULL))
        lo = mid + 1;
      else
        hi = mid;
    }
  return lo;
}

static GKeyFile *
load_file (const char *path, GError **error)
{
  g_autoptr (GKeyFile) kf = g_key_file_new ();
  g_autoptr (GError) local = NULL;
  g_autofree char *contents = NULL;
  gsize length;

  if (!g_file_get_contents (path, &contents, &length, &local))
    {
      /* GLib's message names the file */
      g_set_error_literal (error, SP_CONFIG_ERROR,
                           g_error_matches (local, G_FILE_ERROR, G_FILE_ERROR_NOENT)
                               ? SP_CONFIG_ERROR_MISSING
                               : SP_CONFIG_ERROR_PARSE,
                           local->message);
      return NULL;
    }
  if (!g_key_file_load_from_data (kf, contents, length, G_KEY_FILE_NONE, &local))
    {
      g_set_error (error, SP_CONFIG_ERROR, SP_CONFIG_ERROR_PARSE, "%s:%u: %s", path,
                   bad_line (contents, length), local->message);
      return NULL;
    }
  return g_steal_pointer (&kf);
}

static gint
compare_paths (gconstpointer a, gconstpointer b)
{
  return strcmp (*(char *const *)a, *(char *const *)b);
}

/* Names of *.conf in the drop-in directory beside path, sorted. */
static GPtrArray *
list_drop_ins (const char *path, GError **error)
{
  g_autofree char *parent = g_path_get_dirname (path);
  g_autofree char *dir_path = g_build_filename (parent, DROP_IN_DIR, NULL);
  g_autoptr (GPtrArray) files = g_ptr_array_new_with_free_func (g_free);
  g_autoptr (GError) local = NULL;
  g_autoptr (GDir) dir = g_dir_open (dir_path, 0, &local);
  const char *name;

  if (!dir)
    {
      if (g_error_matches (local, G_FILE_ERROR, G_FILE_ERROR_NOENT))
        return g_steal_pointer (&files);
      g_set_error_literal (error, SP_CONFIG_ERROR, SP_CONFIG_ERROR_PARSE, local->message);
      return NULL;
    }
  while ((name = g_dir_read_name (dir)))
    if (name[0] != '.' && g_str_has_suffix (name, ".conf"))
      g_ptr_array_add (files, g_build_filename (dir_path, name, NULL));
  g_ptr_array_sort (files, compare_paths);
  return g_steal_pointer (&files);
}

static const SchemaGroup *
schema_group (const char *group)
{
  for (guint i = 0; i < G_N_ELEMENTS (schema); i++)
    if (g_str_equal (schema[i].group, group))
      return &schema[i];
  return NULL;
}

static gboolean
schema_has_key (const SchemaGroup *g, const char *key)
{
  for (guint i = 0; g->keys[i]; i++)
    if (g_str_equal (g->keys[i], key))
      return TRUE;
  return FALSE;
}

/* Edit distance, for "did you mean": keys are short. */
static guint
distance (const char *a, const char *b)
{
  gsize la = strlen (a), lb = strlen (b);
  g_autofree guint *row = g_new (guint, lb + 1);

  for (gsize j = 0; j <= lb; j++)
    row[j] = j;
  for (gsize i = 1; i <= la; i++)
    {
      guint diagonal = row[0];

      row[0] = i;
      for (gsize j = 1; j <= lb; j++)
        {
          guint up = row[j];

          row[j] = MIN (MIN (row[j] + 1, row[j - 1] + 1), diagonal + (a[i - 1] != b[j - 1]));
          diagonal = up;
        }
    }
  return row[lb];
}

static char *
unknown_key (const char *path, const char *group, const char *key, const char *const *known)
{
  const char *best = NULL;
  /* A typo changes a few characters, and never most of the key. */
  guint best_distance = MIN (MAX (2, strlen (key) / 3), strlen (key) - 1) + 1;

  for (guint i = 0; known[i]; i++)
    {
      guint d = distance (key, known[i]);

      if (d < best_distance)
        {
          best = known[i];
          best_distance = d;
        }
    }
  if (best)
    return g_strdup_printf ("%s: [%s] %s: unknown key, ignored (did you mean %s?)", path, group,
                            key, best);
  return g_strdup_printf ("%s: [%s] %s: unknown key, ignored", path, group, key);
}

/* Unknown keys of the core's groups; the other groups are plugins' until
 * sp_config_warn_unclaimed(). */
static void
warn_unknown (GKeyFile *kf, const char *path, GPtrArray *warnings)
{
  g_auto (GStrv) groups = g_key_file_get_groups (kf, NULL);

  for (guint i = 0; groups[i]; i++)
    {
      const SchemaGroup *g = schema_group (groups[i]);
      g_auto (GStrv) keys = g_key_file_get_keys (kf, groups[i], NULL, NULL);

      for (guint j = 0; g && keys[j]; j++)
        if (!schema_has_key (g, keys[j]))
          g_ptr_array_add (warnings, unknown_key (path, groups[i], keys[j], g->keys));
    }
}

/* ---- merged view -------------------------------------------------------- */

struct _SpConfigLoader
{
  char *main_path;
  GKeyFile *merged;
  GHashTable *origin;  /* "[group] key" -> file it was last set in */
  GHashTable *claimed; /* groups plugins took */
};
typedef struct _SpConfigLoader Loader;

static void
loader_free (Loader *l)
{
  g_key_file_unref (l->merged);
  g_hash_table_unref (l->origin);
  g_hash_table_unref (l->claimed);
  g_free (l->main_path);
  g_free (l);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC (Loader, loader_free)

static void
merge (Loader *l, GKeyFile *kf, const char *path)
{
  g_auto (GStrv) groups = g_key_file_get_groups (kf, NULL);

  for (guint i = 0; groups[i]; i++)
    {
      g_auto (GStrv) keys = g_key_file_get_keys (kf, groups[i], NULL, NULL);

      for (guint j = 0; keys[j]; j++)
        {
          g_autofree char *value = g_key_file_get_value (kf, groups[i], keys[j], NULL);

          g_key_file_set_value (l->merged, groups[i], keys[j], value);
          g_hash_table_insert (l->origin, g_strdup_printf ("[%s] %s", groups[i], keys[j]),
                               g_strdup (path));
        }
    }
}

static gboolean
add_file (Loader *l, const char *path, GPtrArray *warnings, GError **error)
{
  g_autoptr (GKeyFile) kf = load_file (path, error);

  if (!kf)
    return FALSE;
  if (warnings)
    warn_unknown (kf, path, warnings);
  merge (l, kf, path);
  return TRUE;
}

/* The file that set group/key, or the main file for defaults. */
static const char *
origin (Loader *l, const char *group, const char *key)
{
  g_autofree char *id = g_strdup_printf ("[%s] %s", group, key);
  const char *path = g_hash_table_lookup (l->origin, id);

  return path ? path : l->main_path;
}

static gboolean key_error (Loader *l, GError **error, SpConfigError code, const char *group,
                           const char *key, const char *format, ...) G_GNUC_PRINTF (6, 7);

static gboolean
key_error (Loader *l, GError **error, SpConfigError code, const char *group, const char *key,
           const char *format, ...)
{
  g_autofree char *what = NULL;
  va_list args;

  va_start (args, format);
  what = g_strdup_vprintf (format, args);
  va_end (args);
  g_set_error (error, SP_CONFIG_ERROR, code, "%s: [%s] %s: %s", origin (l, group, key), group, key,
               what);
  return FALSE;
}

/* The raw value with surrounding blanks removed, NULL when absent. */
static char *
get_raw (Loader *l, const char *group, const char *key)
{
  char *raw = g_key_file_get_value (l->merged, group, key, NULL);

  return raw ? g_strstrip (raw) : NULL;
}

/* Leaves *out alone when the key is absent. */
static gboolean
get_string (Loader *l, const char *group, const char *key, char **out, GError **error)
{
  g_autoptr (GError) local = NULL;
  char *s;

  if (!g_key_file_has_key (l->merged, group, key, NULL))
    return TRUE;
  s = g_key_file_get_string (l->merged, group, key, &local);
  if (!s)
    return key_error (l, error, SP_CONFIG_ERROR_INVALID, group, key, "%s", local->message);
  g_free (*out);
  *out = g_strchomp (s);
  return TRUE;
}

static gboolean
get_uint (Loader *l, const char *group, const char *key, guint min, guint max, guint *out,
          GError **error)
{
  g_autofree char *raw = get_raw (l, group, key);
  guint64 v;

  if (!raw)
    return TRUE;
  if (!g_ascii_string_to_unsigned (raw, 10, min, max, &v, NULL))
    return key_error (l, error, SP_CONFIG_ERROR_INVALID, group, key,
                      "expected an integer between %u and %u, got \"%s\"", min, max, raw);
  *out = (guint)v;
  return TRUE;
}

static gboolean
get_bool (Loader *l, const char *group, const char *key, gboolean *out, GError **error)
{
  g_autofree char *raw = get_raw (l, group, key);

  if (!raw)
    return TRUE;
  if (g_str_equal (raw, "true") || g_str_equal (raw, "1"))
    *out = TRUE;
  else if (g_str_equal (raw, "false") || g_str_equal (raw, "0"))
    *out = FALSE;
  else
    return key_error (l, error, SP_CONFIG_ERROR_INVALID, group, key,
                      "expected true or false, got \"%s\"", raw);
  return TRUE;
}

/* ---- value syntax ------------------------------------------------------- */

gboolean
sp_config_valid_name (const char *s)
{
  return sp_address_is_token (s, strlen (s), SP_CONFIG_NAME_MAX);
}

static gboolean
get_path (Loader *l, const char *group, const char *key, char **out, GError **error)
{
  if (!get_string (l, group, key, out, error))
    return FALSE;
  if (*out && !g_path_is_absolute (*out))
    return key_error (l, error, SP_CONFIG_ERROR_INVALID, group, key,
                      "expected an absolute path, got \"%s\"", *out);
  return TRUE;
}

/* ---- sections ----------------------------------------------------------- */

static gboolean
load_node (Loader *l, SpConfig *c, GError **error)
{
  g_autofree char *listen = NULL;

  if (!get_string (l, "node", "name", &c->node_name, error))
    return FALSE;
  if (!c->node_name)
    return key_error (l, error, SP_CONFIG_ERROR_MISSING, "node", "name",
                      "missing; expected this member's name (" SP_CONFIG_NAME_RULE ")");
  if (!sp_config_valid_name (c->node_name))
    return key_error (l, error, SP_CONFIG_ERROR_INVALID, "node", "name",
                      "expected " SP_CONFIG_NAME_RULE ", got \"%s\"", c->node_name);

  if (!get_string (l, "node", "listen", &listen, error))
    return FALSE;
  if (!listen)
    return key_error (l, error, SP_CONFIG_ERROR_MISSING, "node", "listen",
                      "missing; expected the " ADDRESS_EXPECTS " to listen on");
  if (!sp_address_parse (listen, &c->listen_host, &c->listen_port))
    return key_error (l, error, SP_CONFIG_ERROR_INVALID, "node", "listen",
                      "expected " ADDRESS_EXPECTS ", got \"%s\"", listen);

  return get_path (l, "node", "data-dir", &c->data_dir, error)
         && get_bool (l, "node", "strict", &c->strict, error);
}

static gboolean
members_error (Loader *l, GError **error, const char *what)
{
  return key_error (l, error, SP_CONFIG_ERROR_INVALID, "cluster", "initial-members", "%s", what);
}

static gboolean
load_members (Loader *l, SpConfig *c, GError **error)
{
  g_auto (GStrv) items = NULL;
  g_autoptr (GError) local = NULL;
  gsize n;

  if (!g_key_file_has_key (l->merged, "cluster", "initial-members", NULL))
    return TRUE;
  items = g_key_file_get_string_list (l->merged, "cluster", "initial-members", &n, &local);
  if (!items)
    return members_error (l, error, local->message);
  if (n > SP_RAFT_MAX_NODES)
    {
      g_autofree char *what = g_strdup_printf ("expected at most %d members, got %" G_GSIZE_FORMAT,
                                               SP_RAFT_MAX_NODES, n);
      return members_error (l, error, what);
    }

  for (gsize i = 0; i < n; i++)
    {
      g_autofree char *what = NULL;
      char *item = g_strstrip (items[i]);
      char *eq = strchr (item, '=');
      g_autoptr (SpConfigMember) m = g_new0 (SpConfigMember, 1);

      if (!eq)
        what = g_strdup_printf ("expected name=host:port, got \"%s\"", item);
      else
        {
          m->name = g_strstrip (g_strndup (item, eq - item));
          if (!sp_config_valid_name (m->name))
            what = g_strdup_printf (
                "\"%s\": expected a name of " SP_CONFIG_NAME_RULE ", got \"%s\"", item, m->name);
          else if (!sp_address_parse (g_strstrip (eq + 1), &m->host, &m->port))
            what = g_strdup_printf ("\"%s\": expected " ADDRESS_EXPECTS ", got \"%s\"", item,
                                    eq + 1);
        }
      for (guint j = 0; !what && j < c->initial_members->len; j++)
        {
          const SpConfigMember *o = g_ptr_array_index (c->initial_members, j);

          if (g_str_equal (o->name, m->name))
            what = g_strdup_printf ("\"%s\" is listed twice", m->name);
          else if (o->port == m->port && g_ascii_strcasecmp (o->host, m->host) == 0)
            what = g_strdup_printf ("\"%s\" and \"%s\" have the same address", o->name, m->name);
        }
      if (what)
        return members_error (l, error, what);
      g_ptr_array_add (c->initial_members, g_steal_pointer (&m));
    }

  if (n > 0 && !sp_config_find_member (c, c->node_name))
    {
      g_autofree char *what = g_strdup_printf (
          "this node ([node] name = \"%s\") is not among the members", c->node_name);
      return members_error (l, error, what);
    }
  return TRUE;
}

static gboolean
load_cluster (Loader *l, SpConfig *c, GError **error)
{
  if (!get_uint (l, "cluster", "heartbeat-ms", HEARTBEAT_MIN, HEARTBEAT_MAX, &c->heartbeat_ms,
                 error)
      || !get_uint (l, "cluster", "election-ms", ELECTION_MIN, ELECTION_MAX, &c->election_ms, error)
      || !get_bool (l, "cluster", "join", &c->join, error)
      || !get_uint (l, "cluster", "snapshot-entries", SNAPSHOT_ENTRIES_MIN, G_MAXUINT,
                    &c->snapshot_entries, error)
      || !get_bool (l, "cluster", "fence", &c->fence, error)
      || !get_uint (l, "cluster", "keeper-ms", KEEPER_MIN, KEEPER_MAX, &c->keeper_ms, error)
      || !get_uint (l, "cluster", "cleanup-ms", 0, FENCE_PART_MAX, &c->cleanup_ms, error)
      || !get_uint (l, "cluster", "units-stop-ms", 0, FENCE_PART_MAX, &c->units_stop_ms, error)
      || !get_path (l, "cluster", "fence-keeper", &c->fence_keeper, error))
    return FALSE;
  c->leader_watchdog_ms = c->heartbeat_ms + SP_CONFIG_LEADER_WATCHDOG_MARGIN_MS;
  if (!get_uint (l, "cluster", "leader-watchdog-ms", 1, FENCE_PART_MAX, &c->leader_watchdog_ms,
                 error))
    return FALSE;
  /* The leader feeds the watchdog when it wakes, at least once per
   * heartbeat. */
  if (c->leader_watchdog_ms <= c->heartbeat_ms)
    return key_error (l, error, SP_CONFIG_ERROR_INVALID, "cluster", "leader-watchdog-ms",
                      "expected more than heartbeat-ms (%u), got %u", c->heartbeat_ms,
                      c->leader_watchdog_ms);
  /* A follower campaigns after election-ms without a heartbeat: with fewer
   * than two in that time, one late heartbeat starts an election. */
  if (c->election_ms < 2 * c->heartbeat_ms)
    {
      const char *key = g_key_file_has_key (l->merged, "cluster", "election-ms", NULL)
                            ? "election-ms"
                            : "heartbeat-ms";

      return key_error (l, error, SP_CONFIG_ERROR_INVALID, "cluster", key,
                        "expected election-ms (%u) to be at least twice heartbeat-ms (%u)",
                        c->election_ms, c->heartbeat_ms);
    }
  return load_members (l, c, error);
}

char *
sp_config_normalize_fingerprint (const char *fingerprint)
{
  GString *out = g_string_new (NULL);

  for (const char *p = fingerprint; *p; p++)
    {
      if (*p == ':')
        continue;
      if (!g_ascii_isxdigit (*p) || out->len == 64)
        {
          g_string_free (out, TRUE);
          return NULL;
        }
      g_string_append_c (out, g_ascii_tolower (*p));
    }
  if (out->len != 64)
    {
      g_string_free (out, TRUE);
      return NULL;
    }
  return g_string_free (out, FALSE);
}

static gboolean
load_revoked (Loader *l, SpConfig *c, GError **error)
{
  g_autoptr (GError) local = NULL;
  g_auto (GStrv) items = NULL;

  if (!g_key_file_has_key (l->merged, "tls", "revoked", NULL))
    return TRUE;
  items = g_key_file_get_string_list (l->merged, "tls", "revoked", NULL, &local);
  if (!items)
    return key_error (l, error, SP_CONFIG_ERROR_INVALID, "tls", "revoked", "%s", local->message);
  for (guint i = 0; items[i]; i++)
    {
      char *normal = sp_config_normalize_fingerprint (g_strstrip (items[i]));

      if (!normal)
        return key_error (l, error, SP_CONFIG_ERROR_INVALID, "tls", "revoked",
                          "\"%s\" is not a SHA-256 fingerprint (64 hex digits, colons allowed)",
                          items[i]);
      g_free (items[i]);
      items[i] = normal;
    }
  c->tls_revoked = g_steal_pointer (&items);
  return TRUE;
}

static gboolean
load_tls (Loader *l, SpConfig *c, GError **error)
{
  const struct
  {
    const char *key;
    char **value;
    const char *what;
  } files[] = {
    { "ca", &c->tls_ca, "the CA certificate that signs every member's certificate" },
    { "cert", &c->tls_cert, "this member's certificate" },
    { "key", &c->tls_key, "this member's private key" },
  };

  if (!get_bool (l, "tls", "insecure", &c->insecure, error))
    return FALSE;
  for (guint i = 0; i < G_N_ELEMENTS (files); i++)
    {
      if (!get_path (l, "tls", files[i].key, files[i].value, error))
        return FALSE;
      if (!*files[i].value && !c->insecure)
        return key_error (l, error, SP_CONFIG_ERROR_MISSING, "tls", files[i].key,
                          "missing; expected the path of %s (PEM), or set insecure = true",
                          files[i].what);
    }
  return load_revoked (l, c, error);
}

guint
sp_config_failures_tolerated (guint voters)
{
  return voters == 0 ? 0 : (voters - 1) / 2;
}

/* What the configured number of voters survives, when it is less than it
 * looks: one or two voters tolerate no failure, an even number no more
 * than one voter fewer. */
static void
warn_voters (Loader *l, const SpConfig *c, GPtrArray *warnings)
{
  guint n = MAX (c->initial_members->len, 1);
  guint tolerated = sp_config_failures_tolerated (n);
  const char *where = origin (l, "cluster", "initial-members");

  /* A joining node learns the voters from the cluster. */
  if (c->join)
    return;
  if (n == 1)
    g_ptr_array_add (warnings,
                     g_strdup_printf ("%s: [cluster] initial-members: one voter (this node "
                                      "alone) tolerates no failure and has nothing to fail over "
                                      "to; 3 voters tolerate 1",
                                      where));
  else if (n == 2)
    g_ptr_array_add (warnings,
                     g_strdup_printf ("%s: [cluster] initial-members: 2 voters tolerate no "
                                      "failure: a quorum is both, so either one down stops the "
                                      "cluster; 3 voters tolerate 1",
                                      where));
  else if (n % 2 == 0)
    g_ptr_array_add (warnings,
                     g_strdup_printf ("%s: [cluster] initial-members: %u voters tolerate %u "
                                      "failure%s, no more than %u do",
                                      where, n, tolerated, tolerated == 1 ? "" : "s", n - 1));
}

SpConfig *
sp_config_load (const char *path, GPtrArray *warnings, GError **error)
{
  g_autoptr (Loader) loader = g_new0 (Loader, 1);
  Loader *l = loader;
  g_autoptr (SpConfig) c = g_new0 (SpConfig, 1);
  g_autoptr (GPtrArray) drop_ins = NULL;

  l->main_path = g_strdup (path);
  l->merged = g_key_file_new ();
  l->origin = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  l->claimed = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  /* the main file first: when it is missing, that is the error to report */
  if (!add_file (l, path, warnings, error) || !(drop_ins = list_drop_ins (path, error)))
    return NULL;
  for (guint i = 0; i < drop_ins->len; i++)
    if (!add_file (l, drop_ins->pdata[i], warnings, error))
      return NULL;

  c->path = g_strdup (path);
  c->data_dir = g_strdup (SP_CONFIG_DEFAULT_DATA_DIR);
  c->initial_members = g_ptr_array_new_with_free_func ((GDestroyNotify)member_free);
  c->heartbeat_ms = 250;
  c->election_ms = 600;
  c->snapshot_entries = 10000;
  c->fence = TRUE;
  c->cleanup_ms = SP_CONFIG_DEFAULT_CLEANUP_MS;
  c->keeper_ms = SP_CONFIG_DEFAULT_KEEPER_MS;
  c->units_stop_ms = SP_CONFIG_DEFAULT_UNITS_STOP_MS;
  c->fence_keeper = g_strdup (SP_CONFIG_DEFAULT_FENCE_KEEPER);
  if (!load_node (l, c, error) || !load_cluster (l, c, error) || !load_tls (l, c, error))
    return NULL;
  if (warnings)
    warn_voters (l, c, warnings);
  c->loader = g_steal_pointer (&loader);
  return g_steal_pointer (&c);
}

/* ---- for plugins -------------------------------------------------------- */

gboolean
sp_config_has_group (const SpConfig *config, const char *group)
{
  return g_key_file_has_group (config->loader->merged, group);
}

void
sp_config_claim (SpConfig *config, const char *group, const char *const *keys, GPtrArray *warnings)
{
  Loader *l = config->loader;
  g_auto (GStrv) present = g_key_file_get_keys (l->merged, group, NULL, NULL);

  g_hash_table_add (l->claimed, g_strdup (group));
  for (guint i = 0; present && present[i]; i++)
    if (!g_strv_contains (keys, present[i]) && warnings)
      g_ptr_array_add (warnings,
                       unknown_key (origin (l, group, present[i]), group, present[i], keys));
}

void
sp_config_warn_unclaimed (const SpConfig *config, GPtrArray *warnings)
{
  Loader *l = config->loader;
  g_auto (GStrv) groups = g_key_file_get_groups (l->merged, NULL);

  for (guint i = 0; groups[i]; i++)
    {
      g_auto (GStrv) keys = NULL;
      g_autofree char *list = NULL;

      if (schema_group (groups[i]) || g_hash_table_contains (l->claimed, groups[i]))
        continue;
      keys = g_key_file_get_keys (l->merged, groups[i], NULL, NULL);
      list = g_strjoinv (", ", keys);
      g_ptr_array_add (warnings, g_strdup_printf ("%s: [%s]: unknown group (keys: %s), ignored",
                                                  origin (l, groups[i], keys[0] ? keys[0] : ""),
                                                  groups[i], list));
    }
}

gboolean
sp_config_error (const SpConfig *config, GError **error, SpConfigError code, const char *group,
                 const char *key, const char *format, ...)
{
  g_autofree char *what = NULL;
  va_list args;

  va_start (args, format);
  what = g_strdup_vprintf (format, args);
  va_end (args);
  return key_error (config->loader, error, code, group, key, "%s", what);
}

gboolean
sp_config_get_string (const SpConfig *config, const char *group, const char *key, char **out,
                      GError **error)
{
  return get_string (config->loader, group, key, out, error);
}

gboolean
sp_config_get_strv (const SpConfig *config, const char *group, const char *key, GStrv *out,
                    GError **error)
{
  Loader *l = config->loader;
  g_autoptr (GError) local = NULL;
  char **items;

  if (!g_key_file_has_key (l->merged, group, key, NULL))
    return TRUE;
  items = g_key_file_get_string_list (l->merged, group, key, NULL, &local);
  if (!items)
    return key_error (l, error, SP_CONFIG_ERROR_INVALID, group, key, "%s", local->message);
  for (guint i = 0; items[i]; i++)
    g_strstrip (items[i]);
  g_strfreev (*out);
  *out = items;
  return TRUE;
}

gboolean
sp_config_get_uint (const SpConfig *config, const char *group, const char *key, guint min,
                    guint max, guint *out, GError **error)
{
  return get_uint (config->loader, group, key, min, max, out, error);
}

gboolean
sp_config_get_bool (const SpConfig *config, const char *group, const char *key, gboolean *out,
                    GError **error)
{
  return get_bool (config->loader, group, key, out, error);
}
