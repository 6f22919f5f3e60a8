/* qbak list REPO: the points of a repository, oldest first. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

static const char usage_line[] = "Usage: qbak list [--keep-... N] [--json] REPO";
static const char help[] =
  "Usage: qbak list [--keep-last N] [--keep-hourly N] [--keep-daily N]\n"
  "                 [--keep-weekly N] [--keep-monthly N] [--keep-yearly N]\n"
  "                 [--keep-within DURATION] [--json] REPO\n"
  "\n"
  "List the points of the repository REPO, oldest first: when each was\n"
  "taken, what its last 'qbak verify' found (ok or failed, and when; '*'\n"
  "after a partial pass, --sample or --disk; '-' if never verified) and,\n"
  "for each disk, its level (full or incremental), why, and the bytes\n"
  "copied; then the totals.  Only complete points exist: a point is listed\n"
  "once every file of it was durable.\n"
  "\n"
  "  --keep-...  a retention policy, as qbak prune takes it: a PRUNE\n"
  "              column (JSON: \"prune\": \"keep\" or \"remove\") says what\n"
  "              prune with that policy would do to each point\n"
  "  --json   print the points as JSON on stdout (see qbak-json(7))\n"
  "\n"
  "Exit: 0 done, 2 usage, 3 not a repository or a damaged one.\n";

static const char short_options[] = "h";

static const struct option long_options[] = {
  { "help", no_argument, NULL, OPT_HELP },
  { "long-options", no_argument, NULL, OPT_LONG_OPTIONS },
  { "json", no_argument, NULL, OPT_JSON },
  KEEP_LONG_OPTIONS,
  { NULL, 0, NULL, 0 },
};

/* What prune with the policy would do to point ID: "keep", "remove" or
 * "" (no policy). */
static const char *
prune_action (const struct qbak_prune_plan *plan, const char *id)
{
  size_t n = plan ? qbak_prune_plan_count (plan) : 0;
  for (size_t i = 0; i < n; i++) {
    struct qbak_prune_decision d = { .size = sizeof d };
    if (qbak_prune_plan_get (plan, i, &d) == 0 && strcmp (d.id, id) == 0)
      return d.keep ? "keep" : "remove";
  }
  return "";
}

json_object *
point_to_json (struct qbak_repo *r, size_t i)
{
  struct qbak_point_info p = { .size = sizeof p };
  if (qbak_repo_get_point (r, i, &p) < 0)
    return NULL;
  json_object *o = json_object_new_object ();
  json_object_object_add (o, "id", json_object_new_string (p.id));
  json_object_object_add (o, "time", json_object_new_string (p.time));
  json_object_object_add (o, "unix-time", json_object_new_int64 (p.unix_time));
  json_object_object_add (o, "state", json_object_new_string ("complete"));
  json_object_object_add (o, "qbak-version",
                          json_object_new_string (p.qbak_version));
  json_object *disks = json_object_new_array ();
  for (size_t d = 0; d < p.n_disks; d++) {
    struct qbak_point_disk_info di = { .size = sizeof di };
    if (qbak_repo_get_point_disk (r, i, d, &di) < 0)
      continue;
    json_object *dj = json_object_new_object ();
    json_object_object_add (dj, "name", json_object_new_string (di.name));
    json_object_object_add (dj, "level", json_object_new_string (
                              di.level == QBAK_LEVEL_FULL ? "full"
                                                          : "incremental"));
    json_object_object_add (dj, "reason", json_object_new_string (di.reason));
    json_object_object_add (dj, "file", json_object_new_string (di.file));
    json_object_object_add (dj, "parent", di.parent
                            ? json_object_new_string (di.parent) : NULL);
    json_object_object_add (dj, "format", json_object_new_string (di.format));
    json_object_object_add (dj, "virtual-size", json_u64 (di.virtual_size));
    json_object_object_add (dj, "cluster-size", json_u64 (di.cluster_size));
    json_object_object_add (dj, "bytes-copied", json_u64 (di.bytes_copied));
    json_object_object_add (dj, "seconds", json_object_new_double (di.seconds));
    json_object_array_add (disks, dj);
  }
  json_object_object_add (o, "disks", disks);
  return o;
}

/* What the last verification of point ID found, or NULL (never
 * verified, or its state cannot be read: listing goes on). */
static json_object *
verify_json (struct qbak_repo *r, size_t i)
{
  struct qbak_point_verify_info v = { .size = sizeof v };
  if (qbak_repo_get_point_verify_at (r, i, &v) < 0) {
    qbak_clear_error ();
    return NULL;
  }
  if (v.state == QBAK_VERIFY_NONE)
    return NULL;
  json_object *o = json_object_new_object ();
  json_object_object_add (o, "state", json_object_new_string (
                            qbak_verify_state_name (v.state)));
  json_object_object_add (o, "time", json_object_new_string (v.time));
  json_object_object_add (o, "unix-time", json_object_new_int64 (v.unix_time));
  json_object_object_add (o, "sampled", v.sampled
                          ? json_object_new_int ((int) v.sampled) : NULL);
  json_object_object_add (o, "partial", json_object_new_boolean (v.partial));
  return o;
}

/* The same as a column: "ok 2026-12-01T18:10:00Z", or "-". */
static void
verify_text (struct qbak_repo *r, size_t i, char *out, size_t size)
{
  struct qbak_point_verify_info v = { .size = sizeof v };
  if (qbak_repo_get_point_verify_at (r, i, &v) < 0) {
    qbak_clear_error ();
    snprintf (out, size, "?");
  }
  else if (v.state == QBAK_VERIFY_NONE)
    snprintf (out, size, "-");
  else
    snprintf (out, size, "%s %s%s", qbak_verify_state_name (v.state), v.time,
              v.sampled || v.partial ? "*" : "");
}

int
cmd_list (int argc, char **argv)
{
  bool json = false;
  struct qbak_prune_opts po;
  qbak_prune_opts_init (&po);
  int c;
  while ((c = getopt_long (argc, argv, short_options, long_options,
                           NULL)) != -1) {
    switch (c) {
    case 'h':
    case OPT_HELP: print_help_and_exit (help);
    case OPT_LONG_OPTIONS: print_long_options_and_exit (long_options);
    case OPT_JSON: json = json_output = true; break;
    default: {
      int k = keep_option (c, optarg, &po, "list", usage_line);
      if (k == 0)
        return bad_option (usage_line, "list", argc, argv, short_options,
                           long_options);
      if (k > 1)
        return k;
      break;
    }
    }
  }
  if (argc - optind != 1)
    return usage_error (usage_line, argc - optind == 0 ? "list: missing REPO"
                                                       : "list: too many "
                                                         "arguments");
  struct qbak_prune_plan *plan = NULL;
  if (keep_any (&po)) {
    po.repository = argv[optind];
    if (!(plan = qbak_prune_plan_make (&po))) {
      int ret = report_error_usage (usage_line);
      if (json)
        json_print_failure (NULL, ret);
      return ret;
    }
  }
  struct qbak_repo *r = qbak_repo_open (argv[optind]);
  if (!r) {
    qbak_prune_plan_free (plan);
    int ret = report_error ();
    if (json)
      json_print_failure (NULL, ret);
    return ret;
  }
  size_t n = qbak_repo_point_count (r);
  uint64_t total = 0;
  if (json) {
    json_object *o = json_object_new_object ();
    json_object *points = json_object_new_array ();
    for (size_t i = 0; i < n; i++) {
      json_object *p = point_to_json (r, i);
      json_object *disks, *id;
      if (p)
        json_object_object_add (p, "verify", verify_json (r, i));
      if (p && plan && json_object_object_get_ex (p, "id", &id))
        json_object_object_add (p, "prune", json_object_new_string
                                (prune_action (plan,
                                               json_object_get_string (id))));
      if (p && json_object_object_get_ex (p, "disks", &disks))
        for (size_t d = 0; d < json_object_array_length (disks); d++) {
          json_object *b;
          if (json_object_object_get_ex (json_object_array_get_idx (disks, d),
                                         "bytes-copied", &b))
            total += (uint64_t) json_object_get_int64 (b);
        }
      json_object_array_add (points, p);
    }
    json_object_object_add (o, "points", points);
    json_object_object_add (o, "bytes-copied", json_u64 (total));
    json_print (o);
  }
  else {
    printf ("%-22s %-20s %-12s %-11s %10s  %-27s %s%s\n", "POINT",
            "TIME (UTC)", "DISK", "LEVEL", "COPIED", "VERIFIED",
            plan ? "PRUNE   " : "", "REASON");
    if (n == 0)
      printf ("(no points in %s)\n", argv[optind]);
    for (size_t i = 0; i < n; i++) {
      struct qbak_point_info p = { .size = sizeof p };
      if (qbak_repo_get_point (r, i, &p) < 0)
        continue;
      char verified[64];
      verify_text (r, i, verified, sizeof verified);
      for (size_t d = 0; d < p.n_disks; d++) {
        struct qbak_point_disk_info di = { .size = sizeof di };
        if (qbak_repo_get_point_disk (r, i, d, &di) < 0)
          continue;
        total += di.bytes_copied;
        char action[16] = "";
        if (plan)
          snprintf (action, sizeof action, "%-8s",
                    d == 0 ? prune_action (plan, p.id) : "");
        char copied[HUMAN_SIZE_LEN];
        printf ("%-22s %-20s %-12s %-11s %10s  %-27s %s%s\n",
                d == 0 ? p.id : "", d == 0 ? p.time : "", di.name,
                di.level == QBAK_LEVEL_FULL ? "full" : "incremental",
                human_size (copied, di.bytes_copied), d == 0 ? verified : "",
                action, di.reason);
      }
    }
    if (n) {
      char all[HUMAN_SIZE_LEN];
      printf ("%zu point%s, %s copied in all\n", n, n == 1 ? "" : "s",
              human_size_exact (all, total));
    }
  }
  qbak_repo_close (r);
  qbak_prune_plan_free (plan);
  return EXIT_OK;
}
