/* qbak map IMAGE [--json] [-U]: allocation extents with the fields and
 * meaning of qemu-img map --output=json. */
#include <inttypes.h>

#include "cli/cli.h"

enum { OPT_NO_BACKING_CHAIN = OPT_FIRST_COMMAND_OPTION };

static const char usage_line[] =
  "Usage: qbak map [--json] [-U] [-f FMT] [--no-backing-chain] IMAGE";
static const char help[] =
  "Usage: qbak map [--json] [-U] [-f FMT] [--no-backing-chain] IMAGE\n"
  "\n"
  "Show where the guest data of IMAGE lives, through its backing chain,\n"
  "with the fields of 'qemu-img map --output=json': start, length, depth\n"
  "(0 = IMAGE itself), present, zero, data, offset.\n"
  "\n"
  "  --json            print a JSON array\n"
  "  -U, --force-share read without taking QEMU's image locks\n"
  "  -f, --format FMT  require IMAGE to be in format FMT (qcow2, qcow,\n"
  "                    raw) instead of probing its content\n"
  "  --no-backing-chain open no file the image names (backing files,\n"
  "                    external data file): map IMAGE's own metadata\n"
  "                    only; what it does not hold shows as absent\n"
  "  -h, --help        this text\n";

static const char short_options[] = "hUf:";

static const struct option long_options[] = {
  { "help", no_argument, NULL, OPT_HELP },
  { "long-options", no_argument, NULL, OPT_LONG_OPTIONS },
  { "json", no_argument, NULL, OPT_JSON },
  { "force-share", no_argument, NULL, 'U' },
  { "format", required_argument, NULL, 'f' },
  { "no-backing-chain", no_argument, NULL, OPT_NO_BACKING_CHAIN },
  { NULL, 0, NULL, 0 },
};

static int
add_json (const struct qbak_map_extent *e, void *opaque)
{
  json_object *o = json_object_new_object ();
  json_object_object_add (o, "start", json_u64 (e->start));
  json_object_object_add (o, "length", json_u64 (e->length));
  json_object_object_add (o, "depth", json_object_new_int (e->depth));
  json_object_object_add (o, "present", json_object_new_boolean (e->present));
  json_object_object_add (o, "zero", json_object_new_boolean (e->zero));
  json_object_object_add (o, "data", json_object_new_boolean (e->data));
  if (e->offset_valid)
    json_object_object_add (o, "offset", json_u64 (e->offset));
  json_object_array_add (opaque, o);
  return 0;
}

static int
print_line (const struct qbak_map_extent *e, void *opaque)
{
  (void) opaque;
  char off[24] = "-";
  if (e->offset_valid)
    snprintf (off, sizeof off, "%#" PRIx64, e->offset);
  printf ("%#-18" PRIx64 " %#-18" PRIx64 " %5d %-7s %-5s %-5s %s\n",
          e->start, e->length, e->depth, e->present ? "true" : "false",
          e->zero ? "true" : "false", e->data ? "true" : "false", off);
  return 0;
}

int
cmd_map (int argc, char **argv)
{
  bool json = false;
  unsigned flags = QBAK_OPEN_INSPECT;
  const char *format = NULL;
  int c;

  while ((c = getopt_long (argc, argv, short_options, long_options,
                           NULL)) != -1) {
    switch (c) {
    case 'h':
    case OPT_HELP: print_help_and_exit (help);
    case OPT_LONG_OPTIONS: print_long_options_and_exit (long_options);
    case OPT_JSON: json = json_output = true; break;
    case 'U': flags |= QBAK_OPEN_FORCE_SHARE; break;
    case 'f': format = optarg; break;
    case OPT_NO_BACKING_CHAIN: flags |= QBAK_OPEN_NO_BACKING; break;
    default:
      return bad_option (usage_line, "map", argc, argv, short_options,
                         long_options);
    }
  }
  if (optind >= argc)
    return usage_error (usage_line, "map: missing IMAGE");
  if (argc - optind > 1)
    return usage_error (usage_line, "map: too many arguments");

  struct qbak_image *img = qbak_image_open_format (argv[optind], format, flags);
  if (!img)
    return report_error ();
  struct qbak_image_info in;
  qbak_image_info_init (&in);
  if (qbak_image_get_info (img, &in) < 0) {
    int ret = report_error ();
    qbak_image_close (img);
    return ret;
  }

  int r;
  if (json) {
    json_object *arr = json_object_new_array ();
    r = qbak_image_map (img, 0, in.virtual_size, add_json, arr);
    if (r == 0)
      json_print (arr);
    else
      json_object_put (arr);
  }
  else {
    printf ("%-18s %-18s %5s %-7s %-5s %-5s %s\n", "START", "LENGTH", "DEPTH",
            "PRESENT", "ZERO", "DATA", "OFFSET");
    r = qbak_image_map (img, 0, in.virtual_size, print_line, NULL);
  }
  int ret = r == 0 ? EXIT_OK : report_error ();
  qbak_image_close (img);
  return ret;
}
