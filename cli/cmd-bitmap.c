/* qbak bitmap SUBCOMMAND: list, dump and change persistent dirty bitmaps
 * (QEMU 7.2 qemu-img bitmap semantics; several images form one
 * all-or-none transaction). */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"

static const char usage_line[] =
  "Usage: qbak bitmap list|dump [--json] [-U] [-f FMT] IMAGE [NAME]\n"
  "       qbak bitmap add [--granularity SIZE] [--disabled] [-f FMT] IMAGE "
  "NAME\n"
  "       qbak bitmap remove|clear|enable|disable [-f FMT] IMAGE NAME\n"
  "       qbak bitmap merge [--from-image OTHER] [-f FMT] IMAGE DEST SRC...\n"
  "       (any change: --image IMG ... NAME for several images at once)";
static const char help[] =
  "Usage: qbak bitmap list [--json] [-U] [-f FMT] IMAGE\n"
  "       qbak bitmap dump [--json] [-U] [-f FMT] IMAGE NAME\n"
  "       qbak bitmap add [--granularity SIZE] [--disabled] [-f FMT] IMAGE "
  "NAME\n"
  "       qbak bitmap remove|clear|enable|disable [-f FMT] IMAGE NAME\n"
  "       qbak bitmap merge [--from-image OTHER] [-f FMT] IMAGE DEST SRC...\n"
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
  "  -f, --format FMT  require every image (--from-image too) to be in\n"
  "                    format FMT instead of probing its content; only\n"
  "                    qcow2 images hold bitmaps\n"
  "  -g, --granularity SIZE\n"
  "                    add: the bytes one bit stands for, a power of two\n"
  "                    from 512 to 2G\n"
  "  --disabled        add: the new bitmap records nothing until enabled\n"
  "  --from-image OTHER\n"
  "                    merge: read the SRC bitmaps from OTHER\n"
  "  --image IMG       a change on several images at once: repeat it per\n"
  "                    image, and give no IMAGE\n"
  "  -h, --help        this text\n"
  "\n"
  "Options may come before or after the subcommand.\n";

static const char short_options[] = "hUg:f:";

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
           bool have_granularity, bool disabled, const char *from, bool json)
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
    return usage_error (usage_line, "bitmap %s: unexpected argument '%s'",
                        sub, args[1]);
  for (size_t i = 0; i < n_images; i++)
    for (size_t j = 0; j < i; j++)
      if (same_file (images[i], images[j]))
        return usage_error (usage_line, "bitmap %s: %s is named twice", sub,
                            images[i]);

  struct qbak_bitmap_op op = {
    .size = sizeof op, .kind = kind, .name = args[0],
    .granularity = granularity, .disabled = disabled,
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
      src = qbak_image_open_format (from, format, QBAK_OPEN_NO_BACKING);
      if (!src) {
        ret = report_error ();
        goto out;
      }
      op.source_image = src;
    }
  }
  if (qbak_bitmap_apply (imgs, n_images, &op, 1) < 0)
    ret = report_error_usage (usage_line);
  else if (json) {
    json_object *o = json_object_new_object ();
    json_add_ok (o);
    json_object_object_add (o, "command", json_object_new_string (sub));
    json_object_object_add (o, "name", json_object_new_string (op.name));
    json_object *names = json_object_new_array ();
    for (size_t i = 0; i < n_images; i++)
      json_object_array_add (names, json_object_new_string (images[i]));
    json_object_object_add (o, "images", names);
    json_print (o);
  }
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
  if (!json) {
    print_bitmap_table (img, "");
    return EXIT_OK;
  }
  size_t n = qbak_bitmap_count (img);
  json_object *arr = json_object_new_array ();
  for (size_t i = 0; i < n; i++) {
    struct qbak_bitmap_info b;
    qbak_bitmap_info_init (&b);
    if (qbak_bitmap_get_info (img, i, &b) == 0)
      json_object_array_add (arr, json_bitmap_info (&b));
  }
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
  struct qbak_bitmap_info b;
  qbak_bitmap_info_init (&b);
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
  qbak_image_info_init (&in);
  if (qbak_image_get_info (img, &in) < 0)
    return report_error ();
  json_object *o = json_object_new_object ();
  json_object_object_add (o, "name", json_object_new_string (name));
  json_object_object_add (o, "granularity", json_u64 (b.granularity));
  json_object_object_add (o, "virtual-size", json_u64 (in.virtual_size));
  json_object_object_add (o, "extents", arr);
  json_print (o);
  return EXIT_OK;
}

/* "list, dump, add, ... or merge" */
static const char subcommand_names[] =
  "list, dump, add, remove, clear, enable, disable or merge";

static int
unknown_subcommand (const char *sub)
{
  static const char *const all[] = { "list", "dump", "add", "remove", "clear",
                                     "enable", "disable", "merge" };
  struct suggestion s = { 0 };
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
    suggest_consider (&s, sub, all[i]);
  if (s.best)
    return usage_error (usage_line, "bitmap: unknown subcommand '%s': did "
                        "you mean '%s'?", sub, s.best);
  return usage_error (usage_line, "bitmap: unknown subcommand '%s' (%s)", sub,
                      subcommand_names);
}

/* list and dump: read one image. */
static int
do_read (const char *sub, const char *format, unsigned flags, bool json,
         char **args, int nargs)
{
  int want = strcmp (sub, "list") == 0 ? 1 : 2;
  if (nargs < want)
    return usage_error (usage_line, "bitmap %s: missing %s", sub,
                        nargs == 0 ? "IMAGE" : "NAME");
  if (nargs > want)
    return usage_error (usage_line, "bitmap %s: unexpected argument '%s'",
                        sub, args[want]);

  struct qbak_image *img = qbak_image_open_format (args[0], format, flags);
  if (!img)
    return report_error ();
  int ret = want == 1 ? do_list (img, json) : do_dump (img, args[1], json);
  qbak_image_close (img);
  return ret;
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

  /* Options may come before the subcommand too ("bitmap -f raw add ..."):
   * the subcommand is the first word that is not an option. */
  while ((c = getopt_long (argc, argv, short_options, long_options,
                           NULL)) != -1) {
    switch (c) {
    case 'h':
    case OPT_HELP: free (images); print_help_and_exit (help);
    case OPT_LONG_OPTIONS: print_long_options_and_exit (long_options);
    case OPT_JSON: json = json_output = true; break;
    case 'U': flags |= QBAK_OPEN_FORCE_SHARE; break;
    case 'g':
      if (parse_size (optarg, &granularity) < 0) {
        free (images);
        return usage_error (usage_line, "bitmap: invalid --granularity '%s' "
                            "(a size such as 64k)", optarg);
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
    case 'f':
      format = optarg;
      if (check_image_format (usage_line, "bitmap", format) != 0) {
        free (images);
        return EXIT_USAGE;
      }
      break;
    default:
      free (images);
      return bad_option (usage_line, "bitmap", argc, argv, short_options,
                         long_options);
    }
  }
  if (optind >= argc) {
    free (images);
    return usage_error (usage_line, "bitmap: missing subcommand (%s)",
                        subcommand_names);
  }
  const char *sub = argv[optind];
  char **args = argv + optind + 1;
  int nargs = argc - optind - 1;

  for (size_t k = 0; k < sizeof change_commands / sizeof change_commands[0];
       k++) {
    if (strcmp (sub, change_commands[k].name) != 0)
      continue;
    if (flags & QBAK_OPEN_FORCE_SHARE) {
      free (images);
      return usage_error (usage_line, "bitmap %s: -U is for list and dump",
                          sub);
    }
    if (n_images == 0) {
      if (nargs < 1) {
        free (images);
        return usage_error (usage_line, "bitmap %s: missing IMAGE", sub);
      }
      ret = do_change (sub, format, change_commands[k].kind, args, 1,
                       args + 1, nargs - 1, granularity, have_granularity,
                       disabled, from, json);
    }
    else
      ret = do_change (sub, format, change_commands[k].kind, images, n_images,
                       args, nargs, granularity, have_granularity, disabled,
                       from, json);
    free (images);
    return ret;
  }
  free (images);
  if (strcmp (sub, "list") != 0 && strcmp (sub, "dump") != 0)
    return unknown_subcommand (sub);
  if (have_granularity || disabled)
    return usage_error (usage_line, "bitmap %s: --%s is only for add", sub,
                        have_granularity ? "granularity" : "disabled");
  if (from)
    return usage_error (usage_line, "bitmap %s: --from-image is only for "
                        "merge", sub);
  if (n_images)
    return usage_error (usage_line, "bitmap %s: --image is for the changes "
                        "(add, remove, clear, enable, disable, merge); "
                        "name one IMAGE", sub);
  return do_read (sub, format, flags, json, args, nargs);
}
