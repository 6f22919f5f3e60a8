/* qbak restore REPO OUT: a point of a repository as standalone images. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"

static const char usage_line[] =
  "Usage: qbak restore [--at ID|TIME|latest] [--disk NAME] [-O qcow2|raw]\n"
  "                    [--overlay] [--json] REPO OUT";
static const char help[] =
  "Usage: qbak restore [--at ID|TIME|latest] [--disk NAME] [-O qcow2|raw]\n"
  "                    [--overlay] [--json] REPO OUT\n"
  "\n"
  "Restore a point of the repository REPO: with --disk, that disk into the\n"
  "new file OUT; without, every disk of the point into the folder OUT (made\n"
  "if missing) as NAME.qcow2 or NAME.raw.  Each image stands alone: its\n"
  "chain is flattened, what reads as zeroes is not allocated, and it is\n"
  "durable before qbak exits 0.\n"
  "\n"
  "  --at ID|TIME|latest  the point: its id, or the newest point at or\n"
  "                       before TIME (YYYY-MM-DD[THH:MM[:SS]], with Z or\n"
  "                       +HH:MM for a zone, else local time); default latest\n"
  "  --disk NAME          one disk into the file OUT\n"
  "  -O qcow2|raw         the format of the images (default qcow2)\n"
  "  --overlay            instead, OUT is a small qcow2 whose backing file is\n"
  "                       the point's file in REPO (by absolute name): a VM can\n"
  "                       boot from it at once; REPO is only read\n"
  "  --json               print what was restored as JSON\n"
  "  -p, --progress       draw a progress bar even when stderr is not a tty\n"
  "  -q, --quiet          print nothing but errors\n"
  "\n"
  "Exit: 0 done, 1 failed, 2 usage (no such point or disk), 3 damaged\n"
  "repository, 130 interrupted.\n";

enum { OPT_AT = OPT_FIRST_COMMAND_OPTION, OPT_DISK, OPT_OVERLAY };

static const char short_options[] = "hO:" PROGRESS_SHORT_OPTIONS;

static const struct option long_options[] = {
  { "help", no_argument, NULL, OPT_HELP },
  { "long-options", no_argument, NULL, OPT_LONG_OPTIONS },
  { "json", no_argument, NULL, OPT_JSON },
  { "at", required_argument, NULL, OPT_AT },
  { "disk", required_argument, NULL, OPT_DISK },
  { "overlay", no_argument, NULL, OPT_OVERLAY },
  PROGRESS_LONG_OPTIONS,
  { NULL, 0, NULL, 0 },
};

int
cmd_restore (int argc, char **argv)
{
  struct qbak_restore_opts o;
  qbak_restore_opts_init (&o);
  bool json = false;
  int c;
  while ((c = getopt_long (argc, argv, short_options, long_options,
                           NULL)) != -1) {
    if (progress_option (c))
      continue;
    switch (c) {
    case 'h':
    case OPT_HELP: print_help_and_exit (help);
    case OPT_LONG_OPTIONS: print_long_options_and_exit (long_options);
    case OPT_JSON: json = json_output = true; break;
    case OPT_AT: o.at = optarg; break;
    case OPT_DISK: o.disk = optarg; break;
    case OPT_OVERLAY: o.overlay = true; break;
    case 'O':
      if (strcmp (optarg, "qcow2") == 0) o.format = QBAK_TARGET_QCOW2;
      else if (strcmp (optarg, "raw") == 0) o.format = QBAK_TARGET_RAW;
      else
        return usage_error (usage_line, "restore: invalid -O '%s' (qcow2 or "
                            "raw)", optarg);
      break;
    default:
      return bad_option (usage_line, "restore", argc, argv, short_options,
                         long_options);
    }
  }
  if (argc - optind != 2)
    return usage_error (usage_line, "restore: %s", argc - optind < 2
                        ? "missing REPO and OUT" : "too many arguments");
  if (o.overlay && !o.disk)
    return usage_error (usage_line, "restore: --overlay needs --disk");
  if (o.overlay && o.format == QBAK_TARGET_RAW)
    return usage_error (usage_line, "restore: an overlay is qcow2");
  o.repository = argv[optind];
  o.out = argv[optind + 1];

  volatile int *cancel = cancel_on_signals ();
  struct progress prog;
  progress_init (&prog);
  o.cancel = cancel;
  o.progress = progress_update;
  o.progress_opaque = &prog;

  char point[40] = "";
  int rc = qbak_restore (&o, point);
  progress_end (&prog);
  int ret = rc == 0 ? EXIT_OK : report_error_usage (usage_line);
  if (json) {
    if (rc < 0)
      json_print_failure (NULL, ret);
    else {
      json_object *j = json_object_new_object ();
      json_add_ok (j);
      json_object_object_add (j, "point", json_object_new_string (point));
      json_object_object_add (j, "out", json_object_new_string (o.out));
      json_print (j);
    }
  }
  else if (rc == 0 && summary_wanted ())
    printf ("%s: point %s restored to %s\n", o.repository, point, o.out);
  return ret;
}
