/* qbak prune REPO --keep-...: remove what a retention policy does not keep
 * (or, with --dry-run, say what it would do). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"

static const char usage_line[] =
  "Usage: qbak prune [--keep-last N] [--keep-hourly N] [--keep-daily N]\n"
  "                  [--keep-weekly N] [--keep-monthly N] [--keep-yearly N]\n"
  "                  [--keep-within DURATION] [--dry-run] [--json] REPO";
static const char help[] =
  "Usage: qbak prune [--keep-last N] [--keep-hourly N] [--keep-daily N]\n"
  "                  [--keep-weekly N] [--keep-monthly N] [--keep-yearly N]\n"
  "                  [--keep-within DURATION] [--dry-run] [--json] REPO\n"
  "\n"
  "Remove the points of the repository REPO that a retention policy does\n"
  "not keep.  The policy has restic's rules (`restic forget`), ORed: a\n"
  "point is kept if any rule keeps it.\n"
  "\n"
  "  --keep-last N       the N newest points\n"
  "  --keep-hourly N     the newest point of each of the N newest hours that\n"
  "                      hold a point (an hour without one does not count)\n"
  "  --keep-daily N      the same for days\n"
  "  --keep-weekly N     the same for ISO weeks (Monday to Sunday; a week\n"
  "                      belongs to the year of its Thursday)\n"
  "  --keep-monthly N, --keep-yearly N: the same for months and years\n"
  "  --keep-within DURATION\n"
  "                      every point newer than the newest point minus\n"
  "                      DURATION: 1y2m3d4h, any parts in that order\n"
  "                      (years, months, days, hours)\n"
  "  -n, --dry-run       list every point, oldest first, with keep or remove\n"
  "                      and the rules that keep it; change nothing\n"
  "  --json              print the points and actions as JSON on stdout\n"
  "  -p, --progress      accepted as the other commands take it (prune\n"
  "                      draws no progress bar)\n"
  "  -q, --quiet         print nothing but errors\n"
  "\n"
  "Days, weeks, months and years are those of the repository's time zone,\n"
  "fixed when it was made (`qbak backup --tz`; by default the local zone\n"
  "then), whatever the zone of this run.  Points pinned with `qbak protect`\n"
  "are always kept (reason \"protected\"); they count in the rules as any\n"
  "other point does.  A policy without any rule is refused.\n"
  "\n"
  "Without --dry-run, the points no rule keeps are removed, at the cost of\n"
  "their own data, never of the disk's size: a removed point's clusters\n"
  "that its kept child does not hold move into the child (or, for a full,\n"
  "the child's into it, and it takes the child's place), so every kept\n"
  "point reads exactly as it did, at every instant.  An intent written\n"
  "first makes the next prune or backup finish a prune that was killed.\n"
  "The repository is locked meanwhile (exit 4 if another run holds it).\n"
  "\n"
  "Exit: 0 done, 1 I/O error, 2 usage, 3 not a repository or a damaged one,\n"
  "4 the repository is locked.\n";

enum {
  OPT_DRY_RUN = OPT_FIRST_COMMAND_OPTION,
};

static const char short_options[] = "hn" PROGRESS_SHORT_OPTIONS;

static const struct option long_options[] = {
  { "help", no_argument, NULL, OPT_HELP },
  { "long-options", no_argument, NULL, OPT_LONG_OPTIONS },
  { "json", no_argument, NULL, OPT_JSON },
  KEEP_LONG_OPTIONS,
  { "dry-run", no_argument, NULL, OPT_DRY_RUN },
  PROGRESS_LONG_OPTIONS,
  { NULL, 0, NULL, 0 },
};

static const char *const count_names[] = {
  "keep-last", "keep-hourly", "keep-daily", "keep-weekly", "keep-monthly",
  "keep-yearly",
};

/* The reasons of D, each a name ("within" as "within 1y2m"). */
static size_t
reason_names (const struct qbak_prune_decision *d, const char *within,
              char names[][80])
{
  size_t n = 0;
  for (unsigned bit = 1; bit <= QBAK_PRUNE_PROTECTED; bit <<= 1)
    if (d->reasons & bit) {
      const char *name = qbak_prune_reason_name (bit);
      if (bit == QBAK_PRUNE_KEEP_WITHIN)
        snprintf (names[n++], 80, "within %s", within);
      else
        snprintf (names[n++], 80, "%s", name ? name : "?");
    }
  return n;
}

/* The local time of D in the repository's zone: "2026-03-29 03:30 +02:00". */
static void
local_time (const struct qbak_prune_decision *d, char *out, size_t len)
{
  time_t t = (time_t) (d->unix_time + d->utc_offset);
  struct tm tm;
  gmtime_r (&t, &tm);
  char day[32];
  strftime (day, sizeof day, "%Y-%m-%d %H:%M:%S", &tm);
  int32_t off = d->utc_offset < 0 ? -d->utc_offset : d->utc_offset;
  snprintf (out, len, "%s %c%02d:%02d", day, d->utc_offset < 0 ? '-' : '+',
            (int) (off / 3600), (int) (off / 60 % 60));
}

int
keep_option (int c, const char *arg, struct qbak_prune_opts *o,
             const char *command, const char *usage)
{
  unsigned *counts[] = { &o->keep_last, &o->keep_hourly, &o->keep_daily,
                         &o->keep_weekly, &o->keep_monthly, &o->keep_yearly };
  if (c == OPT_KEEP_WITHIN) {
    o->keep_within = arg;
    return 1;
  }
  if (c < OPT_KEEP_LAST || c > OPT_KEEP_YEARLY)
    return 0;
  size_t k = (size_t) (c - OPT_KEEP_LAST);
  char *end;
  unsigned long v = strtoul (arg, &end, 10);
  if (arg[0] < '0' || arg[0] > '9' || *end || v > 1000000)
    return usage_error (usage, "%s: invalid --%s '%s' (a count, 0 to "
                        "1000000)", command, count_names[k], arg);
  *counts[k] = (unsigned) v;
  return 1;
}

bool
keep_any (const struct qbak_prune_opts *o)
{
  return o->keep_within || o->keep_last || o->keep_hourly || o->keep_daily ||
         o->keep_weekly || o->keep_monthly || o->keep_yearly;
}

int
cmd_prune (int argc, char **argv)
{
  struct qbak_prune_opts o;
  qbak_prune_opts_init (&o);
  unsigned *counts[] = { &o.keep_last, &o.keep_hourly, &o.keep_daily,
                         &o.keep_weekly, &o.keep_monthly, &o.keep_yearly };
  bool json = false, dry_run = false;
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
    case 'n':
    case OPT_DRY_RUN: dry_run = true; break;
    default: {
      int k = keep_option (c, optarg, &o, "prune", usage_line);
      if (k == 0)
        return bad_option (usage_line, "prune", argc, argv, short_options,
                           long_options);
      if (k > 1)
        return k;
      break;
    }
    }
  }
  if (argc - optind != 1)
    return usage_error (usage_line, argc - optind == 0 ? "prune: missing REPO"
                                                       : "prune: too many "
                                                         "arguments");
  bool any = o.keep_within != NULL;
  for (size_t k = 0; k < 6; k++)
    any |= *counts[k] > 0;
  if (!any)
    return usage_error (usage_line, "prune: no rule: give at least one "
                        "--keep-... option (an empty policy would keep "
                        "every point)");
  o.repository = argv[optind];
  struct qbak_prune_plan *plan = NULL;
  if (dry_run)
    plan = qbak_prune_plan_make (&o);
  else if (qbak_prune (&o, &plan) < 0)
    plan = NULL;
  if (!plan) {
    int ret = report_error_usage (usage_line);
    if (json)
      json_print_failure (NULL, ret);
    return ret;
  }
  size_t n = qbak_prune_plan_count (plan);
  const char *within = qbak_prune_plan_within (plan);
  size_t kept = 0;
  if (json) {
    json_object *top = json_object_new_object ();
    json_object *points = json_object_new_array ();
    for (size_t i = 0; i < n; i++) {
      struct qbak_prune_decision d = { .size = sizeof d };
      if (qbak_prune_plan_get (plan, i, &d) < 0)
        continue;
      char names[8][80];
      size_t nr = reason_names (&d, within, names);
      json_object *pj = json_object_new_object ();
      json_object *rj = json_object_new_array ();
      for (size_t k = 0; k < nr; k++)
        json_object_array_add (rj, json_object_new_string (names[k]));
      char local[64];
      local_time (&d, local, sizeof local);
      json_object_object_add (pj, "id", json_object_new_string (d.id));
      json_object_object_add (pj, "time", json_object_new_string (d.time));
      json_object_object_add (pj, "unix-time",
                              json_object_new_int64 (d.unix_time));
      json_object_object_add (pj, "local-time",
                              json_object_new_string (local));
      json_object_object_add (pj, "action", json_object_new_string
                              (d.keep ? "keep" : "remove"));
      json_object_object_add (pj, "reasons", rj);
      json_object_array_add (points, pj);
    }
    json_object *pol = json_object_new_object ();
    for (size_t k = 0; k < 6; k++)
      if (*counts[k])
        json_object_object_add (pol, count_names[k],
                                json_object_new_int64 (*counts[k]));
    if (o.keep_within)
      json_object_object_add (pol, "keep-within",
                              json_object_new_string (within));
    json_add_ok (top);
    json_object_object_add (top, "points", points);
    json_object_object_add (top, "policy", pol);
    json_object_object_add (top, "timezone", json_object_new_string
                            (qbak_prune_plan_timezone (plan)));
    json_object_object_add (top, "dry-run",
                            json_object_new_boolean (dry_run));
    json_print (top);
  }
  else if (opt_quiet || (!dry_run && !isatty (STDOUT_FILENO))) {
    /* Quiet for cron: the removal is done; --json or a terminal tell. */
  }
  else {
    printf ("%-22s %-26s %-7s %s\n", "POINT", "LOCAL TIME", "ACTION",
            "REASONS");
    if (n == 0)
      printf ("(no points in %s)\n", o.repository);
    for (size_t i = 0; i < n; i++) {
      struct qbak_prune_decision d = { .size = sizeof d };
      if (qbak_prune_plan_get (plan, i, &d) < 0)
        continue;
      char names[8][80], local[64], line[720] = "";
      size_t nr = reason_names (&d, within, names);
      for (size_t k = 0; k < nr; k++) {
        strcat (line, k ? ", " : "");
        strcat (line, names[k]);
      }
      local_time (&d, local, sizeof local);
      kept += d.keep;
      printf ("%-22s %-26s %-7s %s\n", d.id, local,
              d.keep ? "keep" : "remove", line);
    }
    if (n)
      printf ("%zu point%s: %zu kept, %zu %s (%stime zone %s)\n", n,
              n == 1 ? "" : "s", kept, n - kept,
              dry_run ? "to remove" : "removed", dry_run ? "dry run; " : "",
              qbak_prune_plan_timezone (plan));
  }
  qbak_prune_plan_free (plan);
  return EXIT_OK;
}
