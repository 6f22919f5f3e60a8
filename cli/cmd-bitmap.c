/* qbak bitmap SUBCOMMAND: list, dump and change persistent dirty bitmaps
 * (QEMU 7.2 qemu-img bitmap semantics; several images form one
 * all-or-none transaction). */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"

static const char usage_line[] =
  "Usage: qbak bitmap list|dump [--json] [-U] IMAGE [NAME]\n"
  "       qbak bitmap add [--granularity SIZE] [--disabled] IMAGE NAME\n"
  "       qbak bitmap remove|clear|enable|disable IMAGE NAME\n"
  "       qbak bitmap merge [--from-image OTHER] IMAGE DEST SRC...\n"
  "       (any change: --image IMG ... NAME for several images at once)";
static const char help[] =
  "Usage: qbak bitmap list [--json] [-U] IMAGE\n"
  "       qbak bitmap dump [--json] [-U] IMAGE NAME\n"
  "       qbak bitmap add [--granularity SIZE] [--disabled] IMAGE NAME\n"
  "       qbak bitmap remove|clear|enable|disable IMAGE NAME\n"
  "       qbak bitmap merge [--from-image OTHER] IMAGE DEST SRC...\n"
  "\n"
  "add      create an empty persistent bitmap, recording guest writes\n"
  "         unless --disabled; granularity defaults to the cluster size\n"
  "         clamped to 4k..64k (as qemu-img bitmap --add)\n"
  "remove   delete a bitmap (the only change allowed on an in-use one)\n"
  "clear    reset every bit\n"
  "enable   start / stop recording guest writes (the 'auto' flag)\n"
  "disable\n"
  "merge    OR the SRC bitmaps into DEST (SRCs from OTHER with\n"
  "         --from-image; sizes must match)\n"
  "\n"
  "Changes are written as QEMU writes them: new clusters, flush, one header\n"
  "write, flush, then the old clusters are freed; a crash leaves every\n"
  "bitmap old or new.  With --image IMG repeated, IMAGE is not given and\n"
  "the change is one transaction: every image is opened, locked and\n"
  "checked first, and if one fails the others are put back.\n"
  "\n"
  "list  every persistent bitmap: name, granularity, in-use and auto\n"
  "      (enabled) flags, dirty bytes\n"
  "dump  the bitmap's extents over the whole disk, adjacent extents of the\n"
  "      same state merged; the same view as qemu-nbd --bitmap with\n"
  "      nbdinfo --map=qemu:dirty-bitmap:NAME\n"
  "\n"
  "  --json            print JSON\n"
  "  -U, --force-share read without taking QEMU's image locks\n"
  "  -f, --format FMT  require the image to be in format FMT instead of\n"
  "                    probing its content\n"
  "  --help            this text\n";

static const struct option long_options[] = {
  { "help", no_argument, NULL, OPT_HELP },
  { "long-options", no_argument, NULL, OPT_LONG_OPTIONS },
  { "json", no_argument, NULL, OPT_JSON },
  { "force-share", no_argument, NULL, 'U' },
  { "granularity", required_argument, NULL, 'g' },
  { "disabled", no_argument, NULL, OPT_FIRST_COMMAND_OPTION },
  { "image", required_argument, NULL, 'i' },
  { "from-image", required_argument, NULL, 'b' },
  { "format", required_argument, NULL, 'f' },
  { NULL, 0, NULL, 0 },
};

static const struct {
  const char *name;
  enum qbak_bitmap_op_kind kind;
} change_commands[] = {
  { "add", QBAK_BITMAP_ADD }, { "remove", QBAK_BITMAP_REMOVE },
  { "clear", QBAK_BITMAP_CLEAR }, { "enable", QBAK_BITMAP_ENABLE },
  { "disable", QBAK_BITMAP_DISABLE }, { "merge", QBAK_BITMAP_MERGE },
};

static bool
same_file (const char *a, const char *b)
{
  struct stat sa, sb;
  return stat (a, &sa) == 0 && stat (b, &sb) == 0 &&
         sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* add/remove/clear/enable/disable/merge over one or more images. */
static int
do_change (const char *sub, const char *format,
           enum qbak_bitmap_op_kind kind, char **images,
           size_t n_images, char **args, int nargs, uint64_t granularity,
           bool have_granularity, bool disabled, const char *from)
{
  if (have_granularity && kind != QBAK_BITMAP_ADD)
    return usage_error (usage_line, "bitmap %s: --granularity is only for "
                        "add", sub);
  if (disabled && kind != QBAK_BITMAP_ADD)
    return usage_error (usage_line, "bitmap %s: --disabled is only for add",
                        sub);
  if (from && kind != QBAK_BITMAP_MERGE)
    return usage_error (usage_line, "bitmap %s: --from-image is only for "
                        "merge", sub);
  int want = kind == QBAK_BITMAP_MERGE ? 2 : 1;
  if (nargs < want)
    return usage_error (usage_line, "bitmap %s: missing %s", sub,
                        nargs == 0 ? "NAME" : "SRC");
  if (kind != QBAK_BITMAP_MERGE && nargs > 1)
    return usage_error (usage_line, "bitmap %s: too many arguments", sub);
  for (size_t i = 0; i < n_images; i++)
    for (size_t j = 0; j < i; j++)
      if (same_file (images[i], images[j]))
        return usage_error (usage_line, "bitmap %s: %s is named twice", sub,
                            images[i]);

  struct qbak_bitmap_op op = {
    .kind = kind, .name = args[0], .granularity = granularity,
    .disabled = disabled,
    .sources = (const char *const *) (args + 1),
    .n_sources = kind == QBAK_BITMAP_MERGE ? (size_t) nargs - 1 : 0,
  };
  struct qbak_image **imgs = calloc (n_images, sizeof *imgs);
  struct qbak_image *src = NULL;
  int ret = EXIT_OK;
  if (!imgs) {
    perror (progname);
    return EXIT_JOB_FAILED;
  }
  for (size_t i = 0; i < n_images; i++) {
    imgs[i] = qbak_image_open_format (images[i], format, QBAK_OPEN_WRITE |
                                                         QBAK_OPEN_NO_BACKING);
    if (!imgs[i]) {
      ret = report_error ();
      goto out;
    }
  }
  if (from) {
    bool self = false;
    for (size_t i = 0; i < n_images; i++)
      self |= same_file (from, images[i]);
    if (self && n_images > 1) {
      ret = usage_error (usage_line, "bitmap merge: --from-image must not be "
                         "one of the images changed");
      goto out;
    }
    if (!self) {
      src = qbak_image_open (from, QBAK_OPEN_NO_BACKING);
      if (!src) {
        ret = report_error ();
        goto out;
      }
      op.source_image = src;
    }
  }
  if (qbak_bitmap_apply (imgs, n_images, &op, 1) < 0)
    ret = report_error_usage (usage_line);
out:
  for (size_t i = 0; i < n_images; i++)
    qbak_image_close (imgs[i]);
  qbak_image_close (src);
  free (imgs);
  return ret;
}

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
  bool json = false, disabled = false, have_granularity = false;
  unsigned flags = QBAK_OPEN_INSPECT;
  uint64_t granularity = 0;
  const char *from = NULL, *format = NULL;
  char **images = NULL;
  size_t n_images = 0;
  int c, ret;

  if (argc >= 2 && (strcmp (argv[1], "--help") == 0))
    print_help_and_exit (help);
  if (argc >= 2 && (strcmp (argv[1], "--long-options") == 0))
    print_long_options_and_exit (long_options);
  if (argc < 2 || argv[1][0] == '-')
    return usage_error (usage_line, "bitmap: missing subcommand");
  const char *sub = argv[1];
  argc--;
  argv++;
  while ((c = getopt_long (argc, argv, "Ug:f:", long_options, NULL)) != -1) {
    switch (c) {
    case OPT_HELP: print_help_and_exit (help);
    case OPT_LONG_OPTIONS: print_long_options_and_exit (long_options);
    case OPT_JSON: json = true; break;
    case 'U': flags |= QBAK_OPEN_FORCE_SHARE; break;
    case 'g':
      if (parse_size (optarg, &granularity) < 0) {
        free (images);
        return usage_error (usage_line, "bitmap %s: invalid granularity "
                            "'%s'", sub, optarg);
      }
      have_granularity = true;
      break;
    case OPT_FIRST_COMMAND_OPTION: disabled = true; break;
    case 'i': {
      char **n = realloc (images, (n_images + 1) * sizeof *n);
      if (!n) {
        perror (progname);
        free (images);
        return EXIT_JOB_FAILED;
      }
      images = n;
      images[n_images++] = optarg;
      break;
    }
    case 'b': from = optarg; break;
    case 'f': format = optarg; break;
    default:
      free (images);
      return bad_option (usage_line, sub, argv);
    }
  }
  int nargs = argc - optind;
  int want;
  for (size_t k = 0; k < sizeof change_commands / sizeof change_commands[0];
       k++) {
    if (strcmp (sub, change_commands[k].name) != 0)
      continue;
    if (json || (flags & QBAK_OPEN_FORCE_SHARE)) {
      free (images);
      return usage_error (usage_line, "bitmap %s: --json and -U are for "
                          "list and dump", sub);
    }
    if (n_images == 0) {
      if (nargs < 1) {
        free (images);
        return usage_error (usage_line, "bitmap %s: missing IMAGE", sub);
      }
      ret = do_change (sub, format, change_commands[k].kind, argv + optind, 1,
                       argv + optind + 1, nargs - 1, granularity,
                       have_granularity, disabled, from);
    }
    else
      ret = do_change (sub, format, change_commands[k].kind, images, n_images,
                       argv + optind, nargs, granularity, have_granularity,
                       disabled, from);
    free (images);
    return ret;
  }
  free (images);
  if (have_granularity || disabled || from)
    return usage_error (usage_line, "bitmap %s: option not valid here", sub);
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

  struct qbak_image *img = qbak_image_open_format (argv[optind], format,
                                                   flags);
  if (!img)
    return report_error ();
  ret = want == 1 ? do_list (img, json)
                      : do_dump (img, argv[optind + 1], json);
  qbak_image_close (img);
  return ret;
}
