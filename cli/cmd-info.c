/* qbak info IMAGE [--json] [-U]: what qemu-img info shows, plus every
 * bitmap's dirty bytes. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"

enum { OPT_NO_BACKING_CHAIN = OPT_FIRST_COMMAND_OPTION };

static const char usage_line[] =
  "Usage: qbak info [--json] [-U] [-f FMT] [--no-backing-chain] IMAGE";
static const char help[] =
  "Usage: qbak info [--json] [-U] [-f FMT] [--no-backing-chain] IMAGE\n"
  "\n"
  "Show an image: format (probed by content), virtual size, cluster size,\n"
  "features, backing chain (each name as stored and the path it resolves\n"
  "to), and every persistent bitmap (name, granularity, in-use and auto\n"
  "flags, dirty bytes).\n"
  "\n"
  "  --json            print a JSON object\n"
  "  -U, --force-share read without taking QEMU's image locks\n"
  "  -f, --format FMT  require IMAGE to be in format FMT (qcow2, qcow,\n"
  "                    raw) instead of probing its content\n"
  "  --no-backing-chain open no file the image names (backing files,\n"
  "                    external data file): for images from untrusted\n"
  "                    sources, whose names a guest may have chosen\n"
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

static uint64_t
disk_usage (const char *path)
{
  struct stat st;
  return stat (path, &st) == 0 ? (uint64_t) st.st_blocks * 512 : 0;
}

/* The info of IMG, which cannot fail with the size set by the init. */
static void
get_info (struct qbak_image *img, struct qbak_image_info *in)
{
  qbak_image_info_init (in);
  qbak_image_get_info (img, in);
}

/* The next layer of IMG's chain, or NULL; the chain was loaded whole
 * before anything is printed, so no error is left here. */
static struct qbak_image *
next_layer (struct qbak_image *img)
{
  struct qbak_image *b;
  return qbak_image_backing (img, &b) > 0 ? b : NULL;
}

static json_object *
image_json (struct qbak_image *img)
{
  struct qbak_image_info in;
  get_info (img, &in);
  json_object *o = json_object_new_object ();
  json_object_object_add (o, "filename", json_object_new_string (in.filename));
  json_object_object_add (o, "format", json_object_new_string (in.format));
  json_object_object_add (o, "virtual-size", json_u64 (in.virtual_size));
  json_object_object_add (o, "actual-size", json_u64 (disk_usage (in.filename)));
  if (in.cluster_size)
    json_object_object_add (o, "cluster-size", json_u64 (in.cluster_size));
  if (in.backing_filename) {
    json_object_object_add (o, "backing-filename",
                            json_object_new_string (in.backing_filename));
    json_object_object_add (o, "full-backing-filename",
                            json_object_new_string (in.backing_full));
    if (in.backing_format)
      json_object_object_add (o, "backing-filename-format",
                              json_object_new_string (in.backing_format));
  }
  json_object_object_add (o, "corrupt", json_object_new_boolean (in.corrupt));
  json_object_object_add (o, "dirty-flag", json_object_new_boolean (in.dirty));
  json_object *bitmaps = json_object_new_array ();
  json_object *qemu_bitmaps = json_object_new_array ();
  for (size_t i = 0; i < qbak_bitmap_count (img); i++) {
    struct qbak_bitmap_info b;
    qbak_bitmap_info_init (&b);
    if (qbak_bitmap_get_info (img, i, &b) < 0)
      continue;
    json_object_array_add (bitmaps, json_bitmap_info (&b));
    /* qemu-img's own list: its three keys, nothing of qbak's */
    json_object *qb = json_object_new_object ();
    json_object_object_add (qb, "flags", json_bitmap_flags (&b));
    json_object_object_add (qb, "name", json_object_new_string (b.name));
    json_object_object_add (qb, "granularity", json_u64 (b.granularity));
    json_object_array_add (qemu_bitmaps, qb);
  }
  if (in.qcow2_version) {
    /* qemu-img info's nesting: {"type": "qcow2", "data": {...}} */
    json_object *fs = json_object_new_object ();
    json_object_object_add (fs, "compat", json_object_new_string (
                              in.qcow2_version == 2 ? "0.10" : "1.1"));
    json_object_object_add (fs, "compression-type",
                            json_object_new_string (in.compression_type));
    json_object_object_add (fs, "lazy-refcounts",
                            json_object_new_boolean (in.lazy_refcounts));
    /* qemu-img lists bitmaps only when the image has some */
    if (json_object_array_length (qemu_bitmaps))
      json_object_object_add (fs, "bitmaps", json_object_get (qemu_bitmaps));
    json_object_object_add (fs, "refcount-bits", json_u64 (in.refcount_bits));
    json_object_object_add (fs, "corrupt", json_object_new_boolean (in.corrupt));
    json_object_object_add (fs, "extended-l2",
                            json_object_new_boolean (in.extended_l2));
    json_object_object_add (fs, "bitmaps-consistent",
                            json_object_new_boolean (in.bitmaps_consistent));
    if (in.data_file) {
      json_object_object_add (fs, "data-file",
                              json_object_new_string (in.data_file));
      json_object_object_add (fs, "full-data-file",
                              json_object_new_string (in.data_file_full));
      json_object_object_add (fs, "data-file-raw", json_object_new_boolean (
                                in.data_file_mode == QBAK_DATA_FILE_RAW));
    }
    json_object *spec = json_object_new_object ();
    json_object_object_add (spec, "type", json_object_new_string ("qcow2"));
    json_object_object_add (spec, "data", fs);
    json_object_object_add (o, "format-specific", spec);
  }
  json_object_put (qemu_bitmaps);
  json_object_object_add (o, "bitmaps", bitmaps);
  return o;
}

/* qemu-img's " (actual path: ...)" after a name stored in an image, when
 * the name does not already say where the file is. */
static void
print_actual_path (const char *name, const char *full)
{
  if (full && strcmp (name, full) != 0)
    printf (" (actual path: %s)", full);
}

/* The backing file of one layer: the name as stored, the path it resolves
 * to, the recorded format. */
static void
print_backing (const struct qbak_image_info *in, const char *indent)
{
  if (!in->backing_filename)
    return;
  printf ("%sbacking file: %s", indent, in->backing_filename);
  print_actual_path (in->backing_filename, in->backing_full);
  printf ("\n");
  if (in->backing_format)
    printf ("%sbacking file format: %s\n", indent, in->backing_format);
}

static void
print_text (struct qbak_image *img)
{
  struct qbak_image_info in;
  get_info (img, &in);
  printf ("image: %s\n", in.filename);
  printf ("file format: %s\n", in.format);
  char size[HUMAN_SIZE_LEN];
  /* qemu-img info's lines */
  printf ("virtual size: %s\n", human_size_exact (size, in.virtual_size));
  printf ("disk size: %s\n", human_size (size, disk_usage (in.filename)));
  if (in.cluster_size)
    printf ("cluster_size: %" PRIu32 "\n", in.cluster_size);
  print_backing (&in, "");
  if (in.qcow2_version) {
    printf ("qcow2 version: %" PRIu32 "\n", in.qcow2_version);
    printf ("compression type: %s\n", in.compression_type);
    printf ("refcount bits: %" PRIu32 "\n", in.refcount_bits);
    printf ("extended l2: %s\n", in.extended_l2 ? "true" : "false");
    printf ("lazy refcounts: %s\n", in.lazy_refcounts ? "true" : "false");
    if (in.data_file) {
      printf ("data file: %s", in.data_file);
      print_actual_path (in.data_file, in.data_file_full);
      printf ("%s\n", in.data_file_mode == QBAK_DATA_FILE_RAW ? " (raw)"
                                                            : "");
    }
    if (!in.bitmaps_consistent)
      printf ("bitmaps: inconsistent (a program without bitmap support "
              "wrote the image)\n");
  }
  printf ("corrupt: %s\n", in.corrupt ? "true" : "false");
  if (in.dirty)
    printf ("dirty flag: true (refcounts may be stale)\n");
  for (struct qbak_image *b = next_layer (img); b; b = next_layer (b)) {
    struct qbak_image_info bi;
    get_info (b, &bi);
    printf ("chain: %s (%s, %s)\n", bi.filename, bi.format,
            human_size_exact (size, bi.virtual_size));
    print_backing (&bi, "  ");
  }
  if (qbak_bitmap_count (img)) {
    printf ("bitmaps:\n");
    print_bitmap_table (img, "  ");
  }
}

int
cmd_info (int argc, char **argv)
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
      return bad_option (usage_line, "info", argc, argv, short_options,
                         long_options);
    }
  }
  if (optind >= argc)
    return usage_error (usage_line, "info: missing IMAGE");
  if (argc - optind > 1)
    return usage_error (usage_line, "info: too many arguments");

  struct qbak_image *img = qbak_image_open_format (argv[optind], format, flags);
  if (!img)
    return report_error ();
  /* Every layer must load (its bitmaps too) before anything is printed,
   * so a broken backing file is an error, not a silently shorter chain. */
  for (struct qbak_image *l = img; l;) {
    struct qbak_image *next;
    if (qbak_image_backing (l, &next) < 0) {
      int ret = report_error ();
      qbak_image_close (img);
      return ret;
    }
    l = next;
  }
  if (json) {
    json_object *o = image_json (img);
    json_object *chain = json_object_new_array ();
    for (struct qbak_image *b = next_layer (img); b; b = next_layer (b))
      json_object_array_add (chain, image_json (b));
    json_object_object_add (o, "backing-chain", chain);
    json_print (o);
  }
  else
    print_text (img);
  qbak_image_close (img);
  return EXIT_OK;
}
