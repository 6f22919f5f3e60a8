/* qbak verify REPO: read back what a repository's points need. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"

static const char usage_line[] =
  "Usage: qbak verify [--at ID|TIME|latest] [--disk NAME] [--sample PERCENT]\n"
  "                   [--outdated-after DAYS] [--source DISK[=NAME]...]\n"
  "                   [--json] REPO";
static const char help[] =
  "Usage: qbak verify [--at ID|TIME|latest] [--disk NAME] [--sample PERCENT]\n"
  "                   [--outdated-after DAYS] [--source DISK[=NAME]...]\n"
  "                   [--json] REPO\n"
  "\n"
  "Verify the points of the repository REPO without their source: every\n"
  "file a point needs (its own, its parent's, ... down to the full) is read\n"
  "once, however many points share it, and checked for\n"
  "  - its structure, as qemu-img check: refcounts, overlaps, leaks;\n"
  "  - its place in the chain: backing file, backing format, virtual and\n"
  "    cluster size as its record says (a missing, truncated or swapped\n"
  "    file, or a rewritten backing name, is caught here);\n"
  "  - its data, cluster by cluster, against its manifest (the hashes the\n"
  "    backup wrote beside it): the file is read as its own layer, and a\n"
  "    cluster it holds that its manifest does not list is a mismatch too.\n"
  "    A file without a manifest (made by an older qbak) is said so, and\n"
  "    only its structure and chain are checked.\n"
  "Each mismatch is one line on stderr naming the point, disk, file and\n"
  "guest offset (at most 10 per file); on a terminal, each point's state\n"
  "and a summary are printed too (nothing else on success, for cron).  A\n"
  "bad file fails its point and every later point whose chain holds it.\n"
  "What each run found is kept in REPO/state/ and shown by 'qbak list'.\n"
  "\n"
  "  --at ID|TIME|latest   only that point (as qbak restore reads --at)\n"
  "  --disk NAME           only that disk\n"
  "  --sample PERCENT      read only that share of the data clusters (picked\n"
  "                        at random); structure and chain are checked whole\n"
  "  --outdated-after DAYS skip points that passed a complete verification\n"
  "                        less than DAYS days ago (for a nightly run)\n"
  "  --source DISK[=NAME]  also compare DISK (named as qbak backup names it)\n"
  "                        with its latest point, both read as the guest sees\n"
  "                        them.  The repository's bitmap of that point in the\n"
  "                        disk tells what was written since: a difference\n"
  "                        where it was not is a mismatch (exit 5), the others\n"
  "                        are counted as changes.  A disk without that bitmap\n"
  "                        (a raw disk, or one whose bitmap is gone, in use or\n"
  "                        was shrunk under) cannot tell a change from damage:\n"
  "                        every difference is a mismatch, so compare such a\n"
  "                        disk right after its backup or with its guest\n"
  "                        stopped.  A source difference does not change the\n"
  "                        state kept for the point.  Several disks: give\n"
  "                        them after --source (before REPO), or repeat it\n"
  "  --json                print the result as JSON on stdout (qbak-json(7))\n"
  "  -p, --progress        draw a progress bar even when stderr is not a tty\n"
  "  -q, --quiet           print nothing but errors\n"
  "\n"
  "A run with --sample, --disk, or one that is interrupted, never turns a\n"
  "failed point good; only a complete pass that finds nothing does.\n"
  "Exit: 0 every point verified good, 2 usage, 3 not a repository or a\n"
  "damaged record, 4 busy (a backup runs), 5 mismatch, 130 interrupted.\n";

enum {
  OPT_AT = OPT_FIRST_COMMAND_OPTION, OPT_DISK, OPT_SAMPLE, OPT_OUTDATED,
  OPT_SOURCE,
};

static const char short_options[] = "h" PROGRESS_SHORT_OPTIONS;

static const struct option long_options[] = {
  { "help", no_argument, NULL, OPT_HELP },
  { "long-options", no_argument, NULL, OPT_LONG_OPTIONS },
  { "json", no_argument, NULL, OPT_JSON },
  { "at", required_argument, NULL, OPT_AT },
  { "disk", required_argument, NULL, OPT_DISK },
  { "sample", required_argument, NULL, OPT_SAMPLE },
  { "outdated-after", required_argument, NULL, OPT_OUTDATED },
  { "source", required_argument, NULL, OPT_SOURCE },
  PROGRESS_LONG_OPTIONS,
  { NULL, 0, NULL, 0 },
};

struct out {
  const char *repo;
  bool json;
  bool tty;                     /* stdout is a terminal: say what was found */
  bool sampled;
  json_object *points, *sources;
  size_t shown;
};

static void
on_problem (const struct qbak_verify_problem *p, void *opaque)
{
  struct out *o = opaque;
  char at[64] = "";
  /* Notes are for a person watching; cron mails only failures. */
  if (!p->mismatch && !o->tty)
    return;
  if (p->has_offset)
    snprintf (at, sizeof at, " at offset %#" PRIx64, p->offset);
  progress_pause ();
  fprintf (stderr, "%s: %s: point %s, disk %s, %s%s: %s%s\n", progname,
           o->repo, p->point, p->disk, p->file, at,
           p->mismatch ? "" : "note: ", p->what);
}

static void
on_point (const struct qbak_verify_point *p, void *opaque)
{
  struct out *o = opaque;
  if (o->json) {
    json_object *pj = json_object_new_object ();
    json_object *disks = json_object_new_array ();
    json_object_object_add (pj, "id", json_object_new_string (p->id));
    json_object_object_add (pj, "state", json_object_new_string (
                              qbak_verify_state_name (p->state)));
    for (size_t i = 0; i < p->n_disks; i++) {
      const struct qbak_verify_disk *d = &p->disks[i];
      json_object *dj = json_object_new_object ();
      json_object *errors = json_object_new_array ();
      json_object_object_add (dj, "name", json_object_new_string (d->name));
      json_object_object_add (dj, "state", json_object_new_string (
                                qbak_verify_state_name (d->state)));
      json_object_object_add (dj, "data", json_object_new_string (
                                d->data_checked ? "checked"
                                                : "not-checked"));
      for (size_t k = 0; k < d->n_errors; k++) {
        const struct qbak_verify_error *e = &d->errors[k];
        json_object *ej = json_object_new_object ();
        json_object_object_add (ej, "file", json_object_new_string (e->file));
        json_object_object_add (ej, "offset", e->has_offset
                                ? json_u64 (e->offset) : NULL);
        json_object_object_add (ej, "what", json_object_new_string (e->what));
        json_object_array_add (errors, ej);
      }
      json_object_object_add (dj, "errors", errors);
      json_object_array_add (disks, dj);
    }
    json_object_object_add (pj, "disks", disks);
    json_object_array_add (o->points, pj);
    return;
  }
  if (!o->tty)
    return;
  progress_pause ();
  if (o->shown++ == 0)
    printf ("%-22s %-12s %-12s %s\n", "POINT", "STATE", "DISK", "DATA");
  for (size_t i = 0; i < p->n_disks; i++) {
    const struct qbak_verify_disk *d = &p->disks[i];
    printf ("%-22s %-12s %-12s %s\n", i == 0 ? p->id : "",
            qbak_verify_state_name (d->state), d->name,
            d->state == QBAK_VERIFY_SKIPPED || d->state == QBAK_VERIFY_FAILED
            ? "-" : !d->data_checked ? "not checked (no manifest)"
            : o->sampled ? "sampled" : "checked");
  }
}

static void
on_source (const struct qbak_verify_source *s, void *opaque)
{
  struct out *o = opaque;
  if (o->json) {
    json_object *sj = json_object_new_object ();
    json_object_object_add (sj, "source", json_object_new_string (s->path));
    json_object_object_add (sj, "disk", json_object_new_string (s->disk));
    json_object_object_add (sj, "point", json_object_new_string (s->point));
    json_object_object_add (sj, "bitmap", json_object_new_boolean (s->bitmap));
    json_object_object_add (sj, "unit", json_u64 (s->unit));
    json_object_object_add (sj, "compared", json_u64 (s->units_compared));
    json_object_object_add (sj, "changed", json_u64 (s->units_changed));
    json_object_object_add (sj, "mismatch", json_u64 (s->units_mismatch));
    json_object_object_add (sj, "size-changed",
                            json_object_new_boolean (s->size_changed));
    json_object_array_add (o->sources, sj);
    return;
  }
  if (!o->tty)
    return;
  progress_pause ();
  printf ("source %s (disk %s) against point %s: %" PRIu64 " of %" PRIu64
          " units of %" PRIu64 " bytes differ where %s%s", s->path, s->disk,
          s->point, s->units_mismatch, s->units_compared, s->unit,
          s->bitmap ? "it was not written since"
                    : "nothing tells whether it was written since",
          s->size_changed ? "; its size changed" : "");
  if (s->bitmap)
    printf ("; %" PRIu64 " changed since (expected)", s->units_changed);
  printf ("\n");
}

/* Append ARG (DISK[=NAME]) to *SOURCES; on failure *SOURCES is freed
 * and the error printed. */
static int
add_source (struct qbak_backup_disk **sources, size_t *n, char *arg)
{
  struct qbak_backup_disk *v = realloc (*sources, (*n + 1) * sizeof *v);
  if (!v) {
    free (*sources);
    *sources = NULL;
    perror (progname);
    return -1;
  }
  *sources = v;
  v[(*n)++] = parse_disk_arg (arg);
  return 0;
}

int
cmd_verify (int argc, char **argv)
{
  struct qbak_verify_opts o;
  qbak_verify_opts_init (&o);
  struct out out = { 0 };
  struct qbak_backup_disk *sources = NULL;
  size_t n_sources = 0;
  int c;
  while ((c = getopt_long (argc, argv, short_options, long_options,
                           NULL)) != -1) {
    if (progress_option (c))
      continue;
    switch (c) {
    case 'h':
    case OPT_HELP: print_help_and_exit (help);
    case OPT_LONG_OPTIONS: print_long_options_and_exit (long_options);
    case OPT_JSON: out.json = json_output = true; break;
    case OPT_AT: o.at = optarg; break;
    case OPT_DISK: o.disk = optarg; break;
    case OPT_SAMPLE: {
      char *end;
      long n = strtol (optarg, &end, 10);
      if (*end == '%')
        end++;
      if (end == optarg || *end || n < 1 || n > 100) {
        free (sources);
        return usage_error (usage_line, "verify: invalid --sample '%s' (a "
                            "percentage, 1 to 100)", optarg);
      }
      o.sample_percent = n == 100 ? 0 : (unsigned) n;
      break;
    }
    case OPT_OUTDATED: {
      char *end;
      double days = strtod (optarg, &end);
      if (end == optarg || *end || !(days >= 0) || days > 100000) {
        free (sources);
        return usage_error (usage_line, "verify: invalid --outdated-after "
                            "'%s' (days, 0 to 100000)", optarg);
      }
      o.outdated_after = (int64_t) (days * 86400);
      break;
    }
    case OPT_SOURCE:
      if (add_source (&sources, &n_sources, optarg) < 0)
        return EXIT_JOB_FAILED;
      break;
    default:
      free (sources);
      return bad_option (usage_line, "verify", argc, argv, short_options,
                         long_options);
    }
  }
  /* "--source A B REPO": the arguments before REPO are sources too. */
  if (argc - optind < 1 || (argc - optind > 1 && n_sources == 0)) {
    free (sources);
    return usage_error (usage_line, argc - optind == 0 ? "verify: missing "
                        "REPO" : "verify: too many arguments");
  }
  for (int i = optind; i < argc - 1; i++)
    if (add_source (&sources, &n_sources, argv[i]) < 0)
      return EXIT_JOB_FAILED;
  out.repo = o.repository = argv[argc - 1];
  out.sampled = o.sample_percent != 0;
  out.tty = summary_wanted ();
  o.sources = sources;
  o.n_sources = n_sources;
  out.points = json_object_new_array ();
  out.sources = json_object_new_array ();
  o.problem = on_problem;
  o.point = on_point;
  o.source = on_source;
  o.opaque = &out;
  o.cancel = cancel_on_signals ();
  struct progress prog;
  progress_init (&prog);
  o.progress = progress_update;
  o.progress_opaque = &prog;

  struct qbak_verify_result res;
  qbak_verify_result_init (&res);
  int rc = qbak_verify (&o, &res);
  progress_end (&prog);
  bool mismatch = rc < 0 && qbak_get_status () == QBAK_STATUS_MISMATCH;
  int ret = rc == 0 ? EXIT_OK : report_error_usage (usage_line);
  if (out.json) {
    if (rc < 0 && !mismatch)
      json_print_failure (NULL, ret);
    else {
      json_object *j = json_object_new_object ();
      json_object_object_add (j, "status", json_object_new_string (
                                mismatch ? "mismatch" : "ok"));
      json_object_object_add (j, "points", json_object_get (out.points));
      json_object_object_add (j, "sources", json_object_get (out.sources));
      json_object_object_add (j, "files", json_u64 (res.files_verified));
      json_object_object_add (j, "files-failed", json_u64 (res.files_failed));
      json_object_object_add (j, "bytes-read", json_u64 (res.bytes_read));
      json_object_object_add (j, "seconds",
                              json_object_new_double (res.seconds));
      if (mismatch)
        json_add_failure (j, NULL, ret);
      else
        json_object_object_add (j, "exit-code", json_object_new_int (ret));
      json_print (j);
    }
  }
  else if (out.tty && (rc == 0 || mismatch))
    {
      char read[HUMAN_SIZE_LEN];
      printf ("%zu point%s ok, %zu failed, %zu skipped; %zu file%s (%zu "
              "without a manifest), %s read in %.2f s\n",
              res.points_ok, res.points_ok == 1 ? "" : "s",
              res.points_failed, res.points_skipped, res.files_verified,
              res.files_verified == 1 ? "" : "s", res.files_without_manifest,
              human_size_exact (read, res.bytes_read), res.seconds);
    }
  json_object_put (out.points);
  json_object_put (out.sources);
  free (sources);
  return ret;
}
