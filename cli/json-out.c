/* The one JSON emitter of the CLI, on json-c: no hand-written JSON. */
#include "cli/cli.h"

void
json_print (json_object *obj)
{
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
json_bitmap_info (const struct qbak_bitmap_info *b)
{
  json_object *o = json_object_new_object ();
  json_object_object_add (o, "name", json_object_new_string (b->name));
  json_object_object_add (o, "granularity", json_u64 (b->granularity));
  json_object_object_add (o, "in-use", json_object_new_boolean (b->in_use));
  json_object_object_add (o, "auto", json_object_new_boolean (b->enabled));
  json_object_object_add (o, "dirty-bytes",
                          b->dirty_known ? json_u64 (b->dirty_bytes) : NULL);
  return o;
}

void
json_print_failure (const char *message, int exit_code)
{
  json_object *o = json_object_new_object ();
  json_object_object_add (o, "status", json_object_new_string ("failed"));
  json_object_object_add (o, "error", json_object_new_string (
                            message ? message : qbak_get_error ()));
  json_object_object_add (o, "exit-code", json_object_new_int (exit_code));
  json_print (o);
}
