/* A point's mutable state (repo-state.h), as JSON through json-c. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "common/error.h"
#include "lib/repo-record.h"
#include "lib/repo-state.h"

#define STATE_FORMAT "qbak-point-state"
#define STATE_VERSION 1

static void
state_key (const char *id, char *key)
{
  snprintf (key, REPO_POINT_ID_MAX + 16, "state/%s.json", id);
}

void
repo_state_free (struct repo_verify_state *s)
{
  for (size_t i = 0; i < s->n_errors; i++) {
    free (s->errors[i].disk);
    free (s->errors[i].file);
    free (s->errors[i].what);
  }
  free (s->errors);
  memset (s, 0, sizeof *s);
}

static json_object *
time_object (int64_t t)
{
  char text[32];
  repo_rfc3339 (t, text);
  json_object *o = json_object_new_object ();
  json_object_object_add (o, "time", json_object_new_string (text));
  json_object_object_add (o, "unix-time", json_object_new_int64 (t));
  return o;
}

static json_object *
nullable_string (const char *s)
{
  return s ? json_object_new_string (s) : NULL;
}

int
repo_state_write (struct storage *st, const char *id,
                  const struct repo_verify_state *s)
{
  char now[32];
  repo_rfc3339 (s->unix_time, now);
  json_object *o = json_object_new_object ();
  json_object *v = json_object_new_object ();
  json_object *errors = json_object_new_array ();
  json_object_object_add (o, "format", json_object_new_string (STATE_FORMAT));
  json_object_object_add (o, "version", json_object_new_int (STATE_VERSION));
  json_object_object_add (o, "id", json_object_new_string (id));
  json_object_object_add (v, "state", json_object_new_string (
                            s->failed ? "failed" : "ok"));
  json_object_object_add (v, "time", json_object_new_string (now));
  json_object_object_add (v, "unix-time", json_object_new_int64 (s->unix_time));
  json_object_object_add (v, "sampled", s->sampled
                          ? json_object_new_int ((int) s->sampled) : NULL);
  json_object_object_add (v, "partial", json_object_new_boolean (s->partial));
  for (size_t i = 0; i < s->n_errors; i++) {
    const struct repo_state_error *e = &s->errors[i];
    json_object *ej = json_object_new_object ();
    json_object_object_add (ej, "disk", nullable_string (e->disk));
    json_object_object_add (ej, "file", nullable_string (e->file));
    json_object_object_add (ej, "offset", e->has_offset
                            ? json_object_new_uint64 (e->offset) : NULL);
    json_object_object_add (ej, "what", nullable_string (e->what));
    json_object_array_add (errors, ej);
  }
  json_object_object_add (v, "errors", errors);
  json_object_object_add (v, "last-complete-ok", s->last_complete_ok
                          ? time_object (s->last_complete_ok) : NULL);
  json_object_object_add (o, "verify", v);
  const char *text = json_object_to_json_string_ext (
    o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
       JSON_C_TO_STRING_NOSLASHESCAPE);
  int rc = -1;
  char key[REPO_POINT_ID_MAX + 16];
  state_key (id, key);
  char *line = NULL;
  if (!text || asprintf (&line, "%s\n", text) < 0)
    set_nomem ();
  else
    rc = storage_replace (st, key, line, strlen (line));
  free (line);
  json_object_put (o);
  return rc;
}

static bool
get (json_object *o, const char *key, json_type type, json_object **out)
{
  return json_object_object_get_ex (o, key, out) && *out &&
    json_object_is_type (*out, type);
}

static char *
dup_field (json_object *o, const char *key)
{
  json_object *v;
  if (!get (o, key, json_type_string, &v))
    return NULL;
  return strdup (json_object_get_string (v));
}

int
repo_state_read (struct storage *st, const char *id,
                 struct repo_verify_state *s)
{
  memset (s, 0, sizeof *s);
  char key[REPO_POINT_ID_MAX + 16];
  state_key (id, key);
  uint64_t size;
  int has = storage_size (st, key, &size);
  if (has <= 0)
    return has;
  void *buf;
  size_t len;
  if (storage_get (st, key, &buf, &len) < 0)
    return -1;
  json_object *o = json_tokener_parse (buf);
  free (buf);
  json_object *f, *v, *x;
  if (!o || !json_object_is_type (o, json_type_object) ||
      !get (o, "format", json_type_string, &f) ||
      strcmp (json_object_get_string (f), STATE_FORMAT) != 0 ||
      !get (o, "version", json_type_int, &f) ||
      json_object_get_int (f) != STATE_VERSION ||
      !get (o, "verify", json_type_object, &v) ||
      !get (v, "state", json_type_string, &x) ||
      (strcmp (json_object_get_string (x), "ok") != 0 &&
       strcmp (json_object_get_string (x), "failed") != 0)) {
    json_object_put (o);
    set_invalid ("%s/%s: not a state qbak wrote", st->location, key);
    return -1;
  }
  s->known = true;
  s->failed = strcmp (json_object_get_string (x), "failed") == 0;
  if (get (v, "unix-time", json_type_int, &x))
    s->unix_time = json_object_get_int64 (x);
  if (get (v, "sampled", json_type_int, &x))
    s->sampled = (unsigned) json_object_get_int (x);
  if (get (v, "partial", json_type_boolean, &x))
    s->partial = json_object_get_boolean (x);
  json_object *last;
  if (get (v, "last-complete-ok", json_type_object, &last) &&
      get (last, "unix-time", json_type_int, &x))
    s->last_complete_ok = json_object_get_int64 (x);
  json_object *errors;
  if (get (v, "errors", json_type_array, &errors)) {
    size_t n = json_object_array_length (errors);
    s->errors = calloc (n ? n : 1, sizeof *s->errors);
    if (!s->errors) {
      json_object_put (o);
      set_nomem ();
      return -1;
    }
    for (size_t i = 0; i < n; i++) {
      json_object *ej = json_object_array_get_idx (errors, i);
      if (!json_object_is_type (ej, json_type_object))
        continue;
      struct repo_state_error *e = &s->errors[s->n_errors++];
      e->disk = dup_field (ej, "disk");
      e->file = dup_field (ej, "file");
      e->what = dup_field (ej, "what");
      if (get (ej, "offset", json_type_int, &x)) {
        e->has_offset = true;
        e->offset = json_object_get_uint64 (x);
      }
    }
  }
  json_object_put (o);
  return 0;
}
