/* The repository's JSON files (see repo-record.h), through json-c. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "common/error.h"
#include "common/storage.h"
#include "lib/repo-record.h"

#define CONFIG_FORMAT "qbak-repository"
#define POINT_FORMAT "qbak-point"
#define RECORD_VERSION 1

void
repo_rfc3339 (int64_t unix_time, char *out)
{
  time_t t = (time_t) unix_time;
  struct tm tm;
  gmtime_r (&t, &tm);
  strftime (out, 21, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void
repo_point_id (int64_t unix_time, unsigned n, char *out)
{
  time_t t = (time_t) unix_time;
  struct tm tm;
  gmtime_r (&t, &tm);
  size_t len = strftime (out, REPO_POINT_ID_MAX + 1, "%Y%m%dT%H%M%SZ", &tm);
  if (n >= 2)
    snprintf (out + len, REPO_POINT_ID_MAX + 1 - len, "-%u", n);
}

bool
repo_point_id_valid (const char *id)
{
  /* YYYYMMDDTHHMMSSZ, then "-N" (N from 2) for later points of a second. */
  static const char shape[] = "ddddddddTddddddZ";
  size_t len = strlen (id);
  if (len < 16)
    return false;
  for (size_t i = 0; i < 16; i++)
    if (shape[i] == 'd' ? !(id[i] >= '0' && id[i] <= '9') : id[i] != shape[i])
      return false;
  if (len == 16)
    return true;
  if (id[16] != '-' || len < 18 || len > 22 || id[17] == '0' ||
      strspn (id + 17, "0123456789") != len - 17)
    return false;
  return strtoul (id + 17, NULL, 10) >= 2;
}

/* The number after "-" (1 for none). */
static unsigned long
id_suffix (const char *id)
{
  return id[16] == '-' ? strtoul (id + 17, NULL, 10) : 1;
}

int
repo_point_id_compare (const char *a, const char *b)
{
  int c = strncmp (a, b, 16);
  if (c)
    return c;
  unsigned long x = id_suffix (a), y = id_suffix (b);
  return x < y ? -1 : x > y;
}

static int
add_string (json_object *o, const char *key, const char *v)
{
  json_object *s = v ? json_object_new_string (v) : NULL;
  if (v && !s)
    return -1;
  return json_object_object_add (o, key, s);
}

static int
add_u64 (json_object *o, const char *key, uint64_t v)
{
  json_object *n = json_object_new_uint64 (v);
  return n ? json_object_object_add (o, key, n) : -1;
}

static char *
to_text (json_object *o)
{
  const char *s = json_object_to_json_string_ext (o, JSON_C_TO_STRING_PRETTY |
                                                  JSON_C_TO_STRING_SPACED |
                                                  JSON_C_TO_STRING_NOSLASHESCAPE);
  char *text = NULL;
  if (s && asprintf (&text, "%s\n", s) < 0)
    text = NULL;
  json_object_put (o);
  if (!text)
    set_nomem ();
  return text;
}

char *
repo_config_encode (const struct repo_config *c)
{
  json_object *o = json_object_new_object ();
  if (!o || add_string (o, "format", CONFIG_FORMAT) < 0 ||
      add_u64 (o, "version", RECORD_VERSION) < 0 ||
      add_string (o, "id", c->id) < 0 ||
      add_string (o, "created", c->created) < 0 ||
      (c->timezone && add_string (o, "timezone", c->timezone) < 0)) {
    json_object_put (o);
    set_nomem ();
    return NULL;
  }
  return to_text (o);
}

static const char *
repo_level_name (enum repo_level level)
{
  return level == REPO_LEVEL_FULL ? "full" : "incremental";
}

char *
repo_point_encode (const struct repo_point *p)
{
  json_object *o = json_object_new_object ();
  json_object *disks = json_object_new_array ();
  if (!o || !disks)
    goto nomem;
  if (add_string (o, "format", POINT_FORMAT) < 0 ||
      add_u64 (o, "version", RECORD_VERSION) < 0 ||
      add_string (o, "id", p->id) < 0 ||
      add_string (o, "time", p->time) < 0 ||
      json_object_object_add (o, "unix-time",
                              json_object_new_int64 (p->unix_time)) < 0 ||
      add_string (o, "qbak-version", p->qbak_version) < 0)
    goto nomem;
  for (size_t i = 0; i < p->n_disks; i++) {
    const struct repo_disk_record *d = &p->disks[i];
    json_object *dj = json_object_new_object ();
    if (!dj || json_object_array_add (disks, dj) < 0) {
      json_object_put (dj);
      goto nomem;
    }
    if (add_string (dj, "name", d->name) < 0 ||
        add_string (dj, "level", repo_level_name (d->level)) < 0 ||
        add_string (dj, "reason", d->reason) < 0 ||
        add_string (dj, "file", d->file) < 0 ||
        add_string (dj, "parent", d->parent) < 0 ||
        add_string (dj, "format", d->format) < 0 ||
        add_u64 (dj, "virtual-size", d->virtual_size) < 0 ||
        add_u64 (dj, "cluster-size", d->cluster_size) < 0 ||
        add_u64 (dj, "bytes-copied", d->bytes_copied) < 0 ||
        json_object_object_add (dj, "seconds",
                                json_object_new_double (d->seconds)) < 0 ||
        add_string (dj, "manifest", d->manifest) < 0 ||
        add_string (dj, "manifest-digest", d->manifest_digest) < 0)
      goto nomem;
  }
  if (json_object_object_add (o, "disks", disks) < 0)
    goto nomem;
  return to_text (o);
 nomem:
  if (o && disks && !json_object_object_get_ex (o, "disks", NULL))
    json_object_put (disks);
  json_object_put (o);
  set_nomem ();
  return NULL;
}

/* ---- decoding ---------------------------------------------------------- */

struct reader {
  const char *where;
  bool failed;
};

static void
bad (struct reader *r, const char *what)
{
  if (!r->failed)
    set_invalid ("%s: not a record qbak wrote (%s); a repository holds only "
                 "files qbak made", r->where, what);
  r->failed = true;
}

static json_object *
field (struct reader *r, json_object *o, const char *key, json_type type,
       bool nullable)
{
  json_object *v;
  if (!json_object_object_get_ex (o, key, &v)) {
    char what[128];
    snprintf (what, sizeof what, "no '%s'", key);
    bad (r, what);
    return NULL;
  }
  if (v == NULL && nullable)
    return NULL;
  if (!json_object_is_type (v, type)) {
    char what[128];
    snprintf (what, sizeof what, "'%s' has the wrong type", key);
    bad (r, what);
    return NULL;
  }
  return v;
}

static char *
get_string (struct reader *r, json_object *o, const char *key, bool nullable)
{
  json_object *v = field (r, o, key, json_type_string, nullable);
  if (!v)
    return NULL;
  const char *s = json_object_get_string (v);
  if (strlen (s) != (size_t) json_object_get_string_len (v)) {
    bad (r, "a string holds a NUL byte");
    return NULL;
  }
  char *copy = strdup (s);
  if (!copy && !r->failed) {
    set_nomem ();
    r->failed = true;
  }
  return copy;
}

static uint64_t
get_u64 (struct reader *r, json_object *o, const char *key)
{
  json_object *v = field (r, o, key, json_type_int, false);
  if (!v)
    return 0;
  int64_t n = json_object_get_int64 (v);
  if (n < 0) {
    bad (r, "a size is negative");
    return 0;
  }
  return (uint64_t) n;
}

static json_object *
parse (struct reader *r, const char *text, size_t len)
{
  if (len > INT32_MAX || strlen (text) != len) {
    bad (r, "not text");
    return NULL;
  }
  json_tokener *tok = json_tokener_new ();
  if (!tok) {
    set_nomem ();
    r->failed = true;
    return NULL;
  }
  json_object *o = json_tokener_parse_ex (tok, text, (int) len);
  enum json_tokener_error e = json_tokener_get_error (tok);
  size_t end = json_tokener_get_parse_end (tok);
  json_tokener_free (tok);
  if (!o || e != json_tokener_success ||
      strspn (text + end, " \t\r\n") != len - end) {
    json_object_put (o);
    bad (r, "not JSON");
    return NULL;
  }
  if (!json_object_is_type (o, json_type_object)) {
    json_object_put (o);
    bad (r, "not a JSON object");
    return NULL;
  }
  return o;
}

static void
check_format (struct reader *r, json_object *o, const char *format)
{
  char *f = get_string (r, o, "format", false);
  if (f && strcmp (f, format) != 0)
    bad (r, "another format");
  free (f);
  uint64_t v = get_u64 (r, o, "version");
  if (!r->failed && v != RECORD_VERSION) {
    char what[64];
    snprintf (what, sizeof what, "version %" PRIu64 ", this qbak reads %d",
              v, RECORD_VERSION);
    bad (r, what);
  }
}

int
repo_config_decode (const char *where, const char *text, size_t len,
                    struct repo_config *c)
{
  struct reader r = { .where = where };
  memset (c, 0, sizeof *c);
  json_object *o = parse (&r, text, len);
  if (!o)
    return -1;
  check_format (&r, o, CONFIG_FORMAT);
  char *id = get_string (&r, o, "id", false);
  if (id && (strlen (id) != REPO_ID_HEX ||
             strspn (id, "0123456789abcdef") != REPO_ID_HEX))
    bad (&r, "the id is not 32 hexadecimal digits");
  else if (id)
    memcpy (c->id, id, REPO_ID_HEX + 1);
  free (id);
  c->created = get_string (&r, o, "created", false);
  /* Optional: repositories made before it are on UTC. */
  if (json_object_object_get_ex (o, "timezone", NULL))
    c->timezone = get_string (&r, o, "timezone", false);
  else if (!r.failed && !(c->timezone = strdup ("UTC"))) {
    set_nomem ();
    r.failed = true;
  }
  if (c->timezone && (!c->timezone[0] || strlen (c->timezone) > 200))
    bad (&r, "the time zone is not a zone name");
  json_object_put (o);
  if (r.failed) {
    repo_config_free (c);
    return -1;
  }
  return 0;
}

static bool
valid_format (const char *f)
{
  return strcmp (f, "qcow2") == 0 || strcmp (f, "qcow") == 0 ||
    strcmp (f, "raw") == 0;
}

static void
decode_disk (struct reader *r, json_object *dj, struct repo_disk_record *d)
{
  if (!json_object_is_type (dj, json_type_object)) {
    bad (r, "a disk is not an object");
    return;
  }
  d->name = get_string (r, dj, "name", false);
  char *level = get_string (r, dj, "level", false);
  if (level && strcmp (level, "full") == 0)
    d->level = REPO_LEVEL_FULL;
  else if (level && strcmp (level, "incremental") == 0)
    d->level = REPO_LEVEL_INCREMENTAL;
  else if (level)
    bad (r, "unknown level");
  free (level);
  d->reason = get_string (r, dj, "reason", false);
  d->file = get_string (r, dj, "file", false);
  d->parent = get_string (r, dj, "parent", true);
  d->format = get_string (r, dj, "format", false);
  d->virtual_size = get_u64 (r, dj, "virtual-size");
  d->cluster_size = get_u64 (r, dj, "cluster-size");
  d->bytes_copied = get_u64 (r, dj, "bytes-copied");
  json_object *s = field (r, dj, "seconds", json_type_double, false);
  if (!s && !r->failed)
    s = field (r, dj, "seconds", json_type_int, false);
  d->seconds = s ? json_object_get_double (s) : 0;
  d->manifest = get_string (r, dj, "manifest", true);
  d->manifest_digest = get_string (r, dj, "manifest-digest", true);
  if (r->failed)
    return;
  /* What restores follow must stay inside the disk's own folder. */
  char prefix[300];
  snprintf (prefix, sizeof prefix, "disks/%s/", d->name);
  if (strchr (d->name, '/') || !storage_key_valid (d->name))
    bad (r, "a disk name is not a valid name");
  else if (strncmp (d->file, prefix, strlen (prefix)) != 0 ||
           strchr (d->file + strlen (prefix), '/') ||
           !storage_key_valid (d->file))
    bad (r, "a disk's file is outside its folder");
  else if (d->parent && !repo_point_id_valid (d->parent))
    bad (r, "a parent is not a point id");
  else if (!valid_format (d->format))
    bad (r, "unknown disk format");
  else if ((d->level == REPO_LEVEL_FULL) != (d->parent == NULL))
    bad (r, "a full with a parent, or an incremental without one");
  else if ((d->manifest == NULL) != (d->manifest_digest == NULL))
    bad (r, "a manifest without a digest, or a digest without one");
  else if (d->manifest &&
           (strncmp (d->manifest, prefix, strlen (prefix)) != 0 ||
            strchr (d->manifest + strlen (prefix), '/') ||
            !storage_key_valid (d->manifest)))
    bad (r, "a disk's manifest is outside its folder");
  else if (d->manifest_digest &&
           (strlen (d->manifest_digest) != 32 ||
            strspn (d->manifest_digest, "0123456789abcdef") != 32))
    bad (r, "a manifest digest is not 32 hexadecimal digits");
}

int
repo_point_decode (const char *where, const char *text, size_t len,
                   struct repo_point *p)
{
  struct reader r = { .where = where };
  memset (p, 0, sizeof *p);
  json_object *o = parse (&r, text, len);
  if (!o)
    return -1;
  check_format (&r, o, POINT_FORMAT);
  char *id = get_string (&r, o, "id", false);
  if (id && (!repo_point_id_valid (id) || strlen (id) > REPO_POINT_ID_MAX))
    bad (&r, "the id is not a point id");
  else if (id)
    strcpy (p->id, id);
  free (id);
  p->time = get_string (&r, o, "time", false);
  json_object *t = field (&r, o, "unix-time", json_type_int, false);
  p->unix_time = t ? json_object_get_int64 (t) : 0;
  p->qbak_version = get_string (&r, o, "qbak-version", false);
  json_object *disks = field (&r, o, "disks", json_type_array, false);
  if (disks) {
    size_t n = json_object_array_length (disks);
    if (n == 0 || n > 4096)
      bad (&r, "no disks, or too many");
    else if (!(p->disks = calloc (n, sizeof *p->disks))) {
      set_nomem ();
      r.failed = true;
    }
    else {
      p->n_disks = n;
      for (size_t i = 0; i < n && !r.failed; i++)
        decode_disk (&r, json_object_array_get_idx (disks, i), &p->disks[i]);
      for (size_t i = 0; i < n && !r.failed; i++)
        for (size_t j = 0; j < i; j++)
          if (strcmp (p->disks[i].name, p->disks[j].name) == 0)
            bad (&r, "a disk is named twice");
    }
  }
  json_object_put (o);
  if (r.failed) {
    repo_point_free (p);
    return -1;
  }
  return 0;
}

void
repo_config_free (struct repo_config *c)
{
  free (c->created);
  c->created = NULL;
  free (c->timezone);
  c->timezone = NULL;
}

void
repo_point_free (struct repo_point *p)
{
  for (size_t i = 0; i < p->n_disks; i++) {
    struct repo_disk_record *d = &p->disks[i];
    free (d->name);
    free (d->reason);
    free (d->file);
    free (d->manifest);
    free (d->manifest_digest);
    free (d->parent);
    free (d->format);
  }
  free (p->disks);
  free (p->time);
  free (p->qbak_version);
  memset (p, 0, sizeof *p);
}

const struct repo_disk_record *
repo_point_disk (const struct repo_point *p, const char *name)
{
  for (size_t i = 0; i < p->n_disks; i++)
    if (strcmp (p->disks[i].name, name) == 0)
      return &p->disks[i];
  return NULL;
}
