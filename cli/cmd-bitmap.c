/* qbak bitmap SUBCOMMAND: list and dump persistent dirty bitmaps.
 * (add/remove/clear/enable/disable/merge come with the metadata writer.) */
#include <inttypes.h>
#include <string.h>

#include "cli/cli.h"

static const char usage_line[] =
  "Usage: qbak bitmap list [--json] [-U] IMAGE\n"
  "       qbak bitmap dump [--json] [-U] IMAGE NAME";
static const char help[] =
  "Usage: qbak bitmap list [--json] [-U] IMAGE\n"
  "       qbak bitmap dump [--json] [-U] IMAGE NAME\n"
  "\n"
  "list  every persistent bitmap: name, granularity, in-use and auto\n"
  "      (enabled) flags, dirty bytes\n"
  "dump  the bitmap's extents over the whole disk, adjacent extents of the\n"
  "      same state merged; the same view as qemu-nbd --bitmap with\n"
  "      nbdinfo --map=qemu:dirty-bitmap:NAME\n"
  "\n"
  "  --json            print JSON\n"
  "  -U, --force-share read without taking QEMU's image locks\n"
  "  --help            this text\n";

static const struct option long_options[] = {
  { "help", no_argument, NULL, OPT_HELP },
  { "long-options", no_argument, NULL, OPT_LONG_OPTIONS },
  { "json", no_argument, NULL, OPT_JSON },
  { "force-share", no_argument, NULL, 'U' },
  { NULL, 0, NULL, 0 },
};

static int
do_list (struct qbak_image *img, bool json)
{
  size_t n = qbak_bitmap_count (img);
  json_object *arr = json ? json_object_new_array () : NULL;
  for (size_t i = 0; i < n; i++) {
    struct qbak_bitmap_info b;
    if (qbak_bitmap_get_info (img, i, &b) < 0)
      continue;
    if (json)
      json_object_array_add (arr, json_bitmap_info (&b));
    else if (b.dirty_known)
      printf ("%s %" PRIu64 " %s %" PRIu64 "\n", b.name, b.granularity,
              b.in_use ? "in-use" : b.enabled ? "auto" : "disabled",
              b.dirty_bytes);
    else
      printf ("%s %" PRIu64 " %s unknown\n", b.name, b.granularity,
              b.in_use ? "in-use" : b.enabled ? "auto" : "disabled");
  }
  if (json)
    json_print (arr);
  return EXIT_OK;
}

static int
add_extent (const struct qbak_bitmap_extent *e, void *opaque)
{
  json_object *o = json_object_new_object ();
  json_object_object_add (o, "start", json_u64 (e->start));
  json_object_object_add (o, "length", json_u64 (e->length));
  json_object_object_add (o, "dirty", json_object_new_boolean (e->dirty));
  json_object_array_add (opaque, o);
  return 0;
}

static int
print_extent (const struct qbak_bitmap_extent *e, void *opaque)
{
  (void) opaque;
  printf ("%" PRIu64 " %" PRIu64 " %s\n", e->start, e->length,
          e->dirty ? "dirty" : "clean");
  return 0;
}

static int
do_dump (struct qbak_image *img, const char *name, bool json)
{
  struct qbak_bitmap_info b = { 0 };
  for (size_t i = 0; i < qbak_bitmap_count (img); i++)
    if (qbak_bitmap_get_info (img, i, &b) == 0 && strcmp (b.name, name) == 0)
      break;
  if (!json)
    return qbak_bitmap_extents (img, name, print_extent, NULL) == 0
           ? EXIT_OK : report_error ();

  json_object *arr = json_object_new_array ();
  if (qbak_bitmap_extents (img, name, add_extent, arr) != 0) {
    json_object_put (arr);
    return report_error ();
  }
  struct qbak_image_info in;
  qbak_image_get_info (img, &in);
  json_object *o = json_object_new_object ();
  json_object_object_add (o, "name", json_object_new_string (name));
  json_object_object_add (o, "granularity", json_u64 (b.granularity));
  json_object_object_add (o, "size", json_u64 (in.virtual_size));
  json_object_object_add (o, "extents", arr);
  json_print (o);
  return EXIT_OK;
}

int
cmd_bitmap (int argc, char **argv)
{
  bool json = false;
  unsigned flags = QBAK_OPEN_INSPECT;
  int c;

  if (argc >= 2 && (strcmp (argv[1], "--help") == 0))
    print_help_and_exit (help);
  if (argc < 2 || argv[1][0] == '-')
    return usage_error (usage_line, "bitmap: missing subcommand");
  const char *sub = argv[1];
  argc--;
  argv++;
  while ((c = getopt_long (argc, argv, "U", long_options, NULL)) != -1) {
    switch (c) {
    case OPT_HELP: print_help_and_exit (help);
    case OPT_LONG_OPTIONS: print_long_options_and_exit (long_options);
    case OPT_JSON: json = true; break;
    case 'U': flags |= QBAK_OPEN_FORCE_SHARE; break;
    default: return usage_error (usage_line, "bitmap %s: invalid option", sub);
    }
  }
  int nargs = argc - optind;
  int want;
  if (strcmp (sub, "list") == 0)
    want = 1;
  else if (strcmp (sub, "dump") == 0)
    want = 2;
  else
    return usage_error (usage_line, "bitmap: unknown subcommand '%s'", sub);
  if (nargs < want)
    return usage_error (usage_line, "bitmap %s: missing %s", sub,
                        nargs == 0 ? "IMAGE" : "NAME");
  if (nargs > want)
    return usage_error (usage_line, "bitmap %s: too many arguments", sub);

  struct qbak_image *img = qbak_image_open (argv[optind], flags);
  if (!img)
    return report_error ();
  int ret = want == 1 ? do_list (img, json)
                      : do_dump (img, argv[optind + 1], json);
  qbak_image_close (img);
  return ret;
}
