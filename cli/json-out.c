/* The one JSON emitter of the CLI, on json-c: no hand-written JSON. */
#include <string.h>

#include "cli/cli.h"

bool json_output;
/* Whether this run printed its JSON document: at most one per run. */
static bool json_printed;

void
json_print (json_object *obj)
{
  json_printed = true;
  puts (json_object_to_json_string_ext (obj, JSON_C_TO_STRING_PRETTY |
                                             JSON_C_TO_STRING_SPACED |
                                             JSON_C_TO_STRING_NOSLASHESCAPE));
  json_object_put (obj);
}

json_object *
json_u64 (uint64_t v)
{
  /* json-c's int64 covers every size qcow2 allows (< 2^63). */
  return json_object_new_int64 ((int64_t) v);
}

json_object *
json_bitmap_flags (const struct qbak_bitmap_info *b)
{
  /* qemu-img info's order: "in-use" before "auto". */
  json_object *flags = json_object_new_array ();
  if (b->in_use)
    json_object_array_add (flags, json_object_new_string ("in-use"));
  if (b->enabled)
    json_object_array_add (flags, json_object_new_string ("auto"));
  return flags;
}

json_object *
json_bitmap_info (const struct qbak_bitmap_info *b)
{
  json_object *o = json_object_new_object ();
  json_object_object_add (o, "name", json_object_new_string (b->name));
  json_object_object_add (o, "granularity", json_u64 (b->granularity));
  json_object_object_add (o, "flags", json_bitmap_flags (b));
  json_object_object_add (o, "dirty-bytes",
                          b->dirty_known ? json_u64 (b->dirty_bytes) : NULL);
  return o;
}

void
json_add_ok (json_object *o)
{
  json_object_object_add (o, "status", json_object_new_string ("ok"));
  json_object_object_add (o, "exit-code", json_object_new_int (EXIT_OK));
}

const char *
json_status_name (int exit_code)
{
  switch (exit_code) {
  case EXIT_OK: return "ok";
  case EXIT_INTERRUPTED: return "cancelled";
  default: return "failed";
  }
}

void
json_add_failure (json_object *o, const char *message, int exit_code)
{
  if (!message)
    message = last_error_message ();
  json_object_object_add (o, "error", json_object_new_string (message));
  json_object_object_add (o, "exit-code", json_object_new_int (exit_code));
}

void
json_print_failure (const char *message, int exit_code)
{
  json_object *o = json_object_new_object ();
  json_object_object_add (o, "status", json_object_new_string (
                            json_status_name (exit_code)));
  json_add_failure (o, message, exit_code);
  json_print (o);
}

int
json_finish (int exit_code)
{
  /* A command that failed before its output (a usage error, a missing
   * file) still answers a script that asked for JSON with one object. */
  if (json_output && !json_printed && exit_code != EXIT_OK)
    json_print_failure (NULL, exit_code);
  return exit_code;
}
