/* qbak backup DISK... REPO: one point in time into a repository. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"

static const char usage_line[] =
  "Usage: qbak backup [-f FMT] [--full] [--full-every N] [--tz ZONE] [--json]\n"
  "                   [--freeze-cmd CMD --thaw-cmd CMD [--freeze-timeout S]]\n"
  "                   DISK[=NAME]... REPO";
static const char help[] =
  "Usage: qbak backup [-f FMT] [--full] [--full-every N] [--tz ZONE] [--json]\n"
  "                   [--freeze-cmd CMD --thaw-cmd CMD [--freeze-timeout S]]\n"
  "                   DISK[=NAME]... REPO\n"
  "\n"
  "Back up every DISK into the repository REPO as one point in time.  The\n"
  "first run on a missing or empty REPO creates it and takes a full backup;\n"
  "later runs take incrementals from a persistent bitmap the repository\n"
  "keeps in each disk (named after the repository, so two repositories on\n"
  "one disk keep their own chains, and your own bitmaps are not touched).\n"
  "A disk gets a full instead when it has no chain in REPO yet, it shrank,\n"
  "--full is given, or --full-every N incrementals were taken since its\n"
  "last full.  Where no bitmap can say what changed (a raw disk, a bitmap\n"
  "missing or in use), the incremental compares checksums with the previous\n"
  "point instead.  `qbak list REPO` shows the level of every point and why.\n"
  "\n"
  "  DISK=NAME           the disk's name in REPO (default: its file name\n"
  "                      without extension)\n"
  "  -f FMT              require every DISK to be in format FMT (qcow2, qcow\n"
  "                      or raw).  The format a disk had at its first backup\n"
  "                      is required from then on: a raw disk that later\n"
  "                      reads as qcow2 (its guest may have written a\n"
  "                      header) is refused\n"
  "  --full              a full backup of every disk\n"
  "  --full-every N      a full after N incrementals of a disk\n"
  "  --tz ZONE           the time zone of a repository this run makes\n"
  "                      (Europe/Berlin, UTC; default: the local zone),\n"
  "                      whose days and weeks `qbak prune` keeps; with an\n"
  "                      existing REPO, refused unless it is REPO's zone\n"
  "  --freeze-cmd CMD, --thaw-cmd CMD, --freeze-timeout S: as in qbak copy\n"
  "  --json              print the new point as JSON on stdout\n"
  "  -p, --progress      draw a progress bar even when stderr is not a tty\n"
  "  -q, --quiet         print nothing but errors\n"
  "\n"
  "The point's record is written only once every file of it is durable; a\n"
  "run that fails or is killed leaves every earlier point as it was, and the\n"
  "next run removes what it left.  Two runs on one REPO never interleave:\n"
  "the second exits 4 naming the first.\n"
  "Exit: 0 done, 1 failed, 2 usage, 3 unusable disk or repository, 4 busy,\n"
  "130 interrupted.\n";

enum {
  OPT_FULL = OPT_FIRST_COMMAND_OPTION, OPT_FULL_EVERY, OPT_FREEZE, OPT_THAW,
  OPT_FREEZE_TIMEOUT, OPT_TZ,
};

static const char short_options[] = "hf:" PROGRESS_SHORT_OPTIONS;

static const struct option long_options[] = {
  { "help", no_argument, NULL, OPT_HELP },
  { "long-options", no_argument, NULL, OPT_LONG_OPTIONS },
  { "json", no_argument, NULL, OPT_JSON },
  { "full", no_argument, NULL, OPT_FULL },
  { "full-every", required_argument, NULL, OPT_FULL_EVERY },
  { "freeze-cmd", required_argument, NULL, OPT_FREEZE },
  { "thaw-cmd", required_argument, NULL, OPT_THAW },
  { "freeze-timeout", required_argument, NULL, OPT_FREEZE_TIMEOUT },
  { "tz", required_argument, NULL, OPT_TZ },
  PROGRESS_LONG_OPTIONS,
  { NULL, 0, NULL, 0 },
};

/* The new point as `qbak list --json` shows one. */
static json_object *
point_json (const char *repo, const char *id)
{
  struct qbak_repo *r = qbak_repo_open (repo);
  json_object *o = NULL;
  if (!r)
    return NULL;
  for (size_t i = qbak_repo_point_count (r); i-- > 0;) {
    struct qbak_point_info p = { .size = sizeof p };
    if (qbak_repo_get_point (r, i, &p) == 0 && strcmp (p.id, id) == 0) {
      o = point_to_json (r, i);
      break;
    }
  }
  qbak_repo_close (r);
  return o;
}

/* DISK[=NAME] as backup takes it (verify --source too): ARG is split in
 * place.  A file name with '=' in it can be given as ./a=b=NAME, and a
 * '/' after the last '=' means there is no NAME. */
struct qbak_backup_disk
parse_disk_arg (char *arg)
{
  struct qbak_backup_disk d = { .path = arg };
  char *eq = strrchr (arg, '=');
  if (eq && !strchr (eq, '/')) {
    *eq = '\0';
    d.name = eq + 1;
  }
  return d;
}

int
cmd_backup (int argc, char **argv)
{
  struct qbak_backup_opts o;
  qbak_backup_opts_init (&o);
  bool json = false;
  const char *tz = NULL;
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
    case OPT_FULL: o.full = true; break;
    case OPT_FULL_EVERY: {
      uint64_t n;
      if (parse_size (optarg, &n) < 0 || n == 0 || n > 100000)
        return usage_error (usage_line, "backup: invalid --full-every '%s' "
                            "(1 to 100000)", optarg);
      o.full_every = (unsigned) n;
      break;
    }
    case OPT_FREEZE: o.freeze_cmd = optarg; break;
    case OPT_THAW: o.thaw_cmd = optarg; break;
    case OPT_TZ: tz = optarg; break;
    case OPT_FREEZE_TIMEOUT: {
      uint64_t n;
      if (parse_size (optarg, &n) < 0 || n == 0 || n > 86400)
        return usage_error (usage_line, "backup: invalid --freeze-timeout "
                            "'%s' (seconds, 1 to 86400)", optarg);
      o.freeze_timeout = (unsigned) n;
      break;
    }
    case 'f':
      if (check_image_format (usage_line, "backup", optarg) != 0)
        return EXIT_USAGE;
      o.source_format = optarg;
      break;
    default:
      return bad_option (usage_line, "backup", argc, argv, short_options,
                         long_options);
    }
  }
  if (argc - optind < 2)
    return usage_error (usage_line, "backup: missing %s",
                        argc - optind == 0 ? "DISK and REPO" : "REPO");
  if ((o.thaw_cmd != NULL) != (o.freeze_cmd != NULL))
    return usage_error (usage_line, "backup: --freeze-cmd and --thaw-cmd go "
                        "together");
  size_t n = (size_t) (argc - optind - 1);
  struct qbak_backup_disk *disks = calloc (n, sizeof *disks);
  struct qbak_copy_result *copies = calloc (n, sizeof *copies);
  if (!disks || !copies) {
    free (disks);
    free (copies);
    perror (progname);
    return EXIT_JOB_FAILED;
  }
  for (size_t i = 0; i < n; i++) {
    disks[i] = parse_disk_arg (argv[optind + (int) i]);
    qbak_copy_result_init (&copies[i]);
  }
  o.disks = disks;
  o.n_disks = n;
  o.repository = argv[argc - 1];
  /* The zone is fixed when the repository is made: make it first with
   * that zone, or check an existing one's. */
  bool tz_created = false;
  if (tz && qbak_repo_init (o.repository, tz, &tz_created) < 0) {
    free (disks);
    free (copies);
    int ret = report_error_usage (usage_line);
    if (json)
      json_print_failure (NULL, ret);
    return ret;
  }

  volatile int *cancel = cancel_on_signals ();
  struct progress prog;
  progress_init (&prog);
  o.cancel = cancel;
  o.progress = progress_update;
  o.progress_opaque = &prog;

  struct qbak_backup_result res;
  qbak_backup_result_init (&res);
  int rc = qbak_backup (&o, &res, copies);
  progress_end (&prog);
  int ret = EXIT_OK;
  if ((res.created || tz_created) && !opt_quiet)
    fprintf (stderr, "%s: created the repository %s\n", progname,
             o.repository);
  if (rc < 0)
    ret = report_error_usage (usage_line);
  if (json) {
    json_object *p = rc == 0 ? point_json (o.repository, res.point) : NULL;
    json_object *pd;
    /* Beside each disk's data ("bytes-copied"), what this run copied:
     * less when it continued an interrupted run of the point.  The record
     * lists the disks in the order they were given. */
    if (p && json_object_object_get_ex (p, "disks", &pd))
      for (size_t i = 0; i < n && i < json_object_array_length (pd); i++)
        json_object_object_add (json_object_array_get_idx (pd, i),
                                "bytes-this-run",
                                json_object_new_int64
                                ((int64_t) copies[i].bytes_copied));
    if (p) {
      json_add_ok (p);
      json_print (p);
    }
    else
      json_print_failure (rc == 0 ? "the new point could not be read back"
                                  : NULL, ret);
  }
  else if (rc == 0 && summary_wanted ()) {
    /* One line per disk: its job's summary. */
    for (size_t i = 0; i < n; i++) {
      char copied[HUMAN_SIZE_LEN];
      printf ("%s: point %s: %s: copied %s in %.2f s\n", o.repository,
              res.point, disks[i].path,
              human_size_exact (copied, copies[i].bytes_copied),
              copies[i].seconds);
    }
  }
  free (disks);
  free (copies);
  return ret;
}
