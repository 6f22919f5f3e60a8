/* qbak copy SRC TARGET --sync ...: one backup job, QEMU's vocabulary. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"

static const char usage_line[] =
  "Usage: qbak copy SRC TARGET --sync full|top|incremental|bitmap|checksums\n"
  "                 [--bitmap NAME] [--bitmap-mode on-success|always|never]\n"
  "                 [--backing PREV [-F FMT] | --no-backing] [-O qcow2|raw]\n"
  "                 [--cluster-size SIZE] [--on-error report|ignore]\n"
  "                 [--retry N] [--resume] [--json]\n"
  "       qbak copy --job src=A,target=T[,bitmap=B][,backing=P] ... "
  "--sync ...\n"
  "                 [--completion-mode grouped|individual]\n"
  "                 [--freeze-cmd CMD --thaw-cmd CMD "
  "[--freeze-timeout S]]";
static const char help[] =
  "Usage: qbak copy SRC TARGET --sync full|top|incremental|bitmap|checksums\n"
  "                 [--bitmap NAME] [--bitmap-mode on-success|always|never]\n"
  "                 [--backing PREV [-F FMT] | --no-backing] [-O qcow2|raw]\n"
  "                 [--cluster-size SIZE] [--json]\n"
  "\n"
  "Copy SRC (qcow2, raw or qcow, with its backing chain) into a new TARGET,\n"
  "as QEMU's backup job does, offline:\n"
  "  --sync full         every guest cluster that is not zero\n"
  "  --sync top          clusters allocated in SRC itself (not its backing)\n"
  "  --sync incremental  the clusters dirty in --bitmap; the bitmap is\n"
  "                      cleared when the backup succeeds (on-success)\n"
  "  --sync bitmap       the clusters dirty in --bitmap, with --bitmap-mode:\n"
  "      on-success  clear the bitmap only if the backup succeeds\n"
  "      always      clear it on success; after a failure it holds exactly\n"
  "                  what was not copied\n"
  "      never       leave it unchanged\n"
  "  --sync checksums    the clusters that differ from --backing's chain:\n"
  "                      every cluster of SRC is read and compared, for an\n"
  "                      incremental when no bitmap can say what changed\n"
  "  --backing PREV      the previous backup, stored as the target's backing\n"
  "                      file as given (relative to TARGET's folder); never\n"
  "                      the source or a file of its chain\n"
  "  -F FMT              PREV's format, recorded in TARGET: qcow2 (default)\n"
  "                      or raw; never guessed from PREV's content, which a\n"
  "                      guest controls in a raw file\n"
  "  --no-backing        an incremental or bitmap copy into qcow2 without\n"
  "                      --backing is refused (it would restore wrong)\n"
  "                      unless this says it is meant\n"
  "  -O qcow2|raw        target format (raw: sync full only); default qcow2\n"
  "  -f FMT              require SRC to be in format FMT (qcow2, qcow, raw)\n"
  "  --cluster-size SIZE target cluster size (default: the source's)\n"
  "  --json              print the result as JSON on stdout\n"
  "  -p, --progress      draw a progress bar even when stderr is not a tty\n"
  "  -q, --quiet         print nothing but errors\n"
  "\n"
  "Failures:\n"
  "  --on-error report   stop at the first error (default)\n"
  "  --on-error ignore   skip clusters that fail, keep them in the bitmap,\n"
  "                      carry on; the job still fails (exit 1) at the end\n"
  "  --retry N           retry a failed target write N times, with backoff\n"
  "  --resume            continue a failed or interrupted bitmap-mode\n"
  "                      'always' job into its TARGET.part, copying only\n"
  "                      what the bitmap now holds.  Without it, an existing\n"
  "                      TARGET.part is refused, never deleted; remove it to\n"
  "                      start again: the next job then copies everything\n"
  "                      the interrupted one had to copy (qbak keeps that in\n"
  "                      a disabled bitmap 'qbak-partial-...' of SRC until a\n"
  "                      backup with the bitmap completes)\n"
  "  SIGINT/SIGTERM cancel at the next request, as QEMU's job-cancel: the\n"
  "  bitmap ends as its mode says for a failure; exit 130.\n"
  "\n"
  "Several disks, one point in time:\n"
  "  --job src=A,target=T[,bitmap=B][,backing=P][,backing-format=F]\n"
  "                      repeat per disk; --sync,\n"
  "                      --bitmap-mode and other options apply to all\n"
  "  --completion-mode grouped (default with --job): if one disk fails, no\n"
  "                      target is completed and every bitmap ends as its\n"
  "                      mode says for a failure; individual: each disk\n"
  "                      stands alone\n"
  "  --freeze-cmd CMD, --thaw-cmd CMD, --freeze-timeout S (default 60):\n"
  "                      run around the point in time; if the freeze was\n"
  "                      started, the thaw always runs.  Offline images are\n"
  "                      quiescent by nature: the hooks are for setups\n"
  "                      that snapshot a live guest.\n"
  "\n"
  "TARGET must not exist; it is written as TARGET.part and renamed when\n"
  "complete.  The bitmap is rewritten only after the target is durable.\n"
  "Prints nothing on success unless stdout is a terminal or --json is given\n"
  "(cron mails only failures); a progress bar goes to stderr on a terminal.\n"
  "Exit: 0 done, 1 job failed, 2 usage, 3 unusable source or bitmap (e.g.\n"
  "in use), 4 locked, 130 interrupted.\n";

enum {
  OPT_SYNC = OPT_FIRST_COMMAND_OPTION, OPT_BITMAP, OPT_BITMAP_MODE,
  OPT_BACKING, OPT_CLUSTER_SIZE, OPT_ON_ERROR, OPT_RETRY, OPT_RESUME,
  OPT_JOB, OPT_COMPLETION, OPT_FREEZE, OPT_THAW, OPT_FREEZE_TIMEOUT,
  OPT_NO_BACKING,
};

static const char short_options[] = "hO:f:F:" PROGRESS_SHORT_OPTIONS;

static const struct option long_options[] = {
  { "help", no_argument, NULL, OPT_HELP },
  { "long-options", no_argument, NULL, OPT_LONG_OPTIONS },
  { "json", no_argument, NULL, OPT_JSON },
  { "sync", required_argument, NULL, OPT_SYNC },
  { "bitmap", required_argument, NULL, OPT_BITMAP },
  { "bitmap-mode", required_argument, NULL, OPT_BITMAP_MODE },
  { "backing", required_argument, NULL, OPT_BACKING },
  { "backing-format", required_argument, NULL, 'F' },
  { "no-backing", no_argument, NULL, OPT_NO_BACKING },
  { "cluster-size", required_argument, NULL, OPT_CLUSTER_SIZE },
  { "output-format", required_argument, NULL, 'O' },
  { "format", required_argument, NULL, 'f' },
  { "on-error", required_argument, NULL, OPT_ON_ERROR },
  { "retry", required_argument, NULL, OPT_RETRY },
  { "resume", no_argument, NULL, OPT_RESUME },
  { "job", required_argument, NULL, OPT_JOB },
  { "completion-mode", required_argument, NULL, OPT_COMPLETION },
  { "freeze-cmd", required_argument, NULL, OPT_FREEZE },
  { "thaw-cmd", required_argument, NULL, OPT_THAW },
  { "freeze-timeout", required_argument, NULL, OPT_FREEZE_TIMEOUT },
  PROGRESS_LONG_OPTIONS,
  { NULL, 0, NULL, 0 },
};

static const char *
outcome_name (const struct qbak_copy_result *r)
{
  const char *name = qbak_outcome_name (r->outcome);
  return name ? name : "failed";
}

static json_object *
result_json (const struct qbak_copy_result *r, const char *target)
{
  json_object *o = json_object_new_object ();
  json_object_object_add (o, "target", json_object_new_string (target));
  json_object_object_add (o, "status", json_object_new_string (
                            outcome_name (r)));
  if (r->error[0]) {
    /* The hint's subjects are the last error's: this job's when it is the
     * error the group reports. */
    bool last = strcmp (r->error, qbak_get_error ()) == 0;
    char *text = error_with_advice (r->error, r->error_hint, r->error_errno,
                                    last ? qbak_get_error_hint_subject (0)
                                         : NULL,
                                    last ? qbak_get_error_hint_subject (1)
                                         : NULL);
    json_object_object_add (o, "error", json_object_new_string (
                              text ? text : r->error));
    free (text);
  }
  json_object_object_add (o, "virtual-size", json_u64 (r->virtual_size));
  json_object_object_add (o, "cluster-size", json_u64 (r->cluster_size));
  json_object_object_add (o, "bytes-planned", json_u64 (r->bytes_planned));
  json_object_object_add (o, "bytes-copied", json_u64 (r->bytes_copied));
  json_object_object_add (o, "clusters-copied", json_u64 (r->clusters_copied));
  json_object_object_add (o, "zero-clusters", json_u64 (r->zero_clusters));
  json_object_object_add (o, "bytes-skipped", json_u64 (r->bytes_skipped));
  json_object_object_add (o, "clusters-left", json_u64 (r->clusters_left));
  json_object_object_add (o, "clusters-failed", json_u64 (r->clusters_failed));
  json_object_object_add (o, "seconds", json_object_new_double (r->seconds));
  double rate = r->seconds > 0 ? (double) r->bytes_copied / r->seconds : 0;
  json_object_object_add (o, "bytes-per-second", json_u64 ((uint64_t) rate));
  const char *bitmap_state = qbak_bitmap_state_name (r->bitmap_state);
  if (bitmap_state) {
    json_object *b = json_object_new_object ();
    json_object_object_add (b, "state",
                            json_object_new_string (bitmap_state));
    json_object_object_add (b, "dirty-bytes",
                            json_u64 (r->bitmap_dirty_bytes));
    json_object_object_add (o, "bitmap", b);
  }
  return o;
}

static void
print_text (const struct qbak_copy_result *r, const char *target)
{
  char copied[HUMAN_SIZE_LEN], skipped[HUMAN_SIZE_LEN];
  printf ("%s: %s: copied %s in %" PRIu64 " clusters (%" PRIu64
          " zero clusters, %s skipped) in %.2f s", target,
          outcome_name (r), human_size_exact (copied, r->bytes_copied),
          r->clusters_copied, r->zero_clusters,
          human_size (skipped, r->bytes_skipped), r->seconds);
  if (r->clusters_left)
    printf ("; %" PRIu64 " clusters left", r->clusters_left);
  const char *bitmap_state = qbak_bitmap_state_name (r->bitmap_state);
  if (bitmap_state)
    printf ("; bitmap %s", bitmap_state);
  printf ("\n");
}

/* Parse "src=A,target=T,bitmap=B,backing=P" into O (strings point into
 * SPEC, which is modified). */
static int
parse_job (char *spec, struct qbak_copy_opts *o)
{
  char *save = NULL;
  for (char *kv = strtok_r (spec, ",", &save); kv;
       kv = strtok_r (NULL, ",", &save)) {
    char *eq = strchr (kv, '=');
    if (!eq)
      return -1;
    *eq = '\0';
    const char *v = eq + 1;
    if (strcmp (kv, "src") == 0) o->source = v;
    else if (strcmp (kv, "target") == 0) o->target = v;
    else if (strcmp (kv, "bitmap") == 0) o->bitmap = v;
    else if (strcmp (kv, "backing") == 0) o->backing = v;
    else if (strcmp (kv, "backing-format") == 0) o->backing_format = v;
    else
      return -1;
  }
  return o->source && o->target ? 0 : -1;
}

int
cmd_copy (int argc, char **argv)
{
  struct qbak_copy_opts o;
  struct qbak_group_opts g;
  bool json = false, have_sync = false, have_completion = false;
  char **specs = NULL;
  size_t n_specs = 0;
  uint64_t cs = 0;
  int c, ret = EXIT_USAGE;

  qbak_copy_opts_init (&o);
  qbak_group_opts_init (&g);
  while ((c = getopt_long (argc, argv, short_options, long_options,
                           NULL)) != -1) {
    if (progress_option (c))
      continue;
    switch (c) {
    case 'h':
    case OPT_HELP: print_help_and_exit (help);
    case OPT_LONG_OPTIONS: print_long_options_and_exit (long_options);
    case OPT_JSON: json = json_output = true; break;
    case OPT_SYNC:
      have_sync = true;
      if (strcmp (optarg, "full") == 0) o.sync = QBAK_SYNC_FULL;
      else if (strcmp (optarg, "top") == 0) o.sync = QBAK_SYNC_TOP;
      else if (strcmp (optarg, "incremental") == 0)
        o.sync = QBAK_SYNC_INCREMENTAL;
      else if (strcmp (optarg, "bitmap") == 0) o.sync = QBAK_SYNC_BITMAP;
      else if (strcmp (optarg, "checksums") == 0)
        o.sync = QBAK_SYNC_CHECKSUMS;
      else
        return usage_error (usage_line, "copy: invalid --sync '%s' (full, "
                            "top, incremental, bitmap or checksums)", optarg);
      break;
    case OPT_BITMAP: o.bitmap = optarg; break;
    case OPT_BITMAP_MODE:
      if (strcmp (optarg, "on-success") == 0)
        o.bitmap_mode = QBAK_BITMAP_MODE_ON_SUCCESS;
      else if (strcmp (optarg, "always") == 0)
        o.bitmap_mode = QBAK_BITMAP_MODE_ALWAYS;
      else if (strcmp (optarg, "never") == 0)
        o.bitmap_mode = QBAK_BITMAP_MODE_NEVER;
      else
        return usage_error (usage_line, "copy: invalid --bitmap-mode '%s' "
                            "(on-success, always or never)", optarg);
      break;
    case OPT_BACKING: o.backing = optarg; break;
    case 'F': o.backing_format = optarg; break;
    case OPT_NO_BACKING: o.no_backing = true; break;
    case OPT_CLUSTER_SIZE:
      if (parse_size (optarg, &cs) < 0 || cs > UINT32_MAX)
        return usage_error (usage_line, "copy: invalid --cluster-size '%s'",
                            optarg);
      o.cluster_size = (uint32_t) cs;
      break;
    case 'O':
      if (strcmp (optarg, "qcow2") == 0) o.format = QBAK_TARGET_QCOW2;
      else if (strcmp (optarg, "raw") == 0) o.format = QBAK_TARGET_RAW;
      else
        return usage_error (usage_line, "copy: invalid -O '%s' (qcow2 or "
                            "raw)", optarg);
      break;
    case OPT_ON_ERROR:
      if (strcmp (optarg, "report") == 0) o.on_error = QBAK_ON_ERROR_REPORT;
      else if (strcmp (optarg, "ignore") == 0)
        o.on_error = QBAK_ON_ERROR_IGNORE;
      else {
        free (specs);
        return usage_error (usage_line, "copy: invalid --on-error '%s' "
                            "(report or ignore)", optarg);
      }
      break;
    case OPT_RETRY: {
      uint64_t n;
      if (parse_size (optarg, &n) < 0 || n > 100) {
        free (specs);
        return usage_error (usage_line, "copy: invalid --retry '%s' (0 to "
                            "100)", optarg);
      }
      o.retries = (unsigned) n;
      break;
    }
    case OPT_RESUME: o.resume = true; break;
    case 'f':
      if (check_image_format (usage_line, "copy", optarg) != 0) {
        free (specs);
        return EXIT_USAGE;
      }
      o.source_format = optarg;
      break;
    case OPT_JOB: {
      char **n = realloc (specs, (n_specs + 1) * sizeof *n);
      if (!n) {
        free (specs);
        perror (progname);
        return EXIT_JOB_FAILED;
      }
      specs = n;
      specs[n_specs++] = optarg;
      break;
    }
    case OPT_COMPLETION:
      have_completion = true;
      if (strcmp (optarg, "grouped") == 0)
        g.completion = QBAK_COMPLETION_GROUPED;
      else if (strcmp (optarg, "individual") == 0)
        g.completion = QBAK_COMPLETION_INDIVIDUAL;
      else {
        free (specs);
        return usage_error (usage_line, "copy: invalid --completion-mode "
                            "'%s' (grouped or individual)", optarg);
      }
      break;
    case OPT_FREEZE: g.freeze_cmd = optarg; break;
    case OPT_THAW: g.thaw_cmd = optarg; break;
    case OPT_FREEZE_TIMEOUT: {
      uint64_t n;
      if (parse_size (optarg, &n) < 0 || n == 0 || n > 86400) {
        free (specs);
        return usage_error (usage_line, "copy: invalid --freeze-timeout "
                            "'%s' (seconds, 1 to 86400)", optarg);
      }
      g.freeze_timeout = (unsigned) n;
      break;
    }
    default:
      free (specs);
      return bad_option (usage_line, "copy", argc, argv, short_options,
                         long_options);
    }
  }
  struct qbak_copy_opts *jobs = NULL;
  struct qbak_copy_result *results = NULL;
  size_t n_jobs = n_specs ? n_specs : 1;

  if (!have_sync) {
    ret = usage_error (usage_line, "copy: missing --sync");
    goto out;
  }
  if (n_specs) {
    if (argc - optind > 0) {
      ret = usage_error (usage_line, "copy: with --job, give no SRC TARGET");
      goto out;
    }
    if (o.bitmap || o.backing || o.backing_format) {
      ret = usage_error (usage_line, "copy: with --job, give bitmap=, "
                         "backing= and backing-format= in each --job");
      goto out;
    }
  }
  else {
    if (argc - optind < 2) {
      ret = usage_error (usage_line, "copy: missing %s",
                         argc - optind == 0 ? "SRC and TARGET" : "TARGET");
      goto out;
    }
    if (argc - optind > 2) {
      ret = usage_error (usage_line, "copy: too many arguments");
      goto out;
    }
    if (have_completion) {
      ret = usage_error (usage_line, "copy: --completion-mode is for "
                         "several --job");
      goto out;
    }
    g.completion = QBAK_COMPLETION_INDIVIDUAL;
  }
  if ((g.thaw_cmd != NULL) != (g.freeze_cmd != NULL)) {
    ret = usage_error (usage_line, "copy: --freeze-cmd and --thaw-cmd go "
                       "together");
    goto out;
  }
  jobs = calloc (n_jobs, sizeof *jobs);
  results = calloc (n_jobs, sizeof *results);
  if (!jobs || !results) {
    perror (progname);
    ret = EXIT_JOB_FAILED;
    goto out;
  }
  for (size_t i = 0; i < n_jobs; i++) {
    qbak_copy_result_init (&results[i]);
    jobs[i] = o;
    if (n_specs && parse_job (specs[i], &jobs[i]) < 0) {
      ret = usage_error (usage_line, "copy: invalid --job (expected "
                         "src=A,target=T[,bitmap=B][,backing=P])");
      goto out;
    }
  }
  if (!n_specs) {
    jobs[0].source = argv[optind];
    jobs[0].target = argv[optind + 1];
  }

  volatile int *cancel = cancel_on_signals ();

  struct progress prog;
  progress_init (&prog);
  g.jobs = jobs;
  g.n_jobs = n_jobs;
  g.cancel = cancel;
  g.progress = progress_update;
  g.progress_opaque = &prog;

  int rc = qbak_copy_group (&g, results);
  progress_end (&prog);
  ret = rc == 0 ? EXIT_OK : report_error_usage (usage_line);
  if (json) {
    /* One shape for one job and for several: the jobs in "jobs", the
     * run's status and exit code beside them.  A single job's fields
     * also stay at the top, where scripts written before "jobs" read
     * them. */
    json_object *top = n_specs ? json_object_new_object ()
                               : result_json (&results[0], jobs[0].target);
    json_object_object_add (top, "status", json_object_new_string (
                              n_specs ? json_status_name (ret)
                                      : outcome_name (&results[0])));
    if (ret != EXIT_OK) {
      json_object_object_del (top, "error");
      json_add_failure (top, NULL, ret);
    }
    else
      json_object_object_add (top, "exit-code", json_object_new_int (ret));
    json_object *arr = json_object_new_array ();
    for (size_t i = 0; i < n_jobs; i++)
      json_object_array_add (arr, result_json (&results[i], jobs[i].target));
    json_object_object_add (top, "jobs", arr);
    json_print (top);
  }
  else if (summary_wanted ())
    for (size_t i = 0; i < n_jobs; i++)
      print_text (&results[i], jobs[i].target);
out:
  free (specs);
  free (jobs);
  free (results);
  return ret;
}
