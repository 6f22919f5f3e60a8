/* qbak copy SRC TARGET --sync ...: one backup job, QEMU's vocabulary. */
#include <inttypes.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"

static const char usage_line[] =
  "Usage: qbak copy SRC TARGET --sync full|top|incremental|bitmap\n"
  "                 [--bitmap NAME] [--bitmap-mode on-success|always|never]\n"
  "                 [--backing PREV] [-O qcow2|raw] [--cluster-size SIZE] "
  "[--json]";
static const char help[] =
  "Usage: qbak copy SRC TARGET --sync full|top|incremental|bitmap\n"
  "                 [--bitmap NAME] [--bitmap-mode on-success|always|never]\n"
  "                 [--backing PREV] [-O qcow2|raw] [--cluster-size SIZE]\n"
  "                 [--json]\n"
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
  "  --backing PREV      the previous backup, stored as the target's backing\n"
  "                      file as given (relative to TARGET's folder)\n"
  "  -O qcow2|raw        target format (raw: sync full only); default qcow2\n"
  "  --cluster-size SIZE target cluster size (default: the source's)\n"
  "  --json              print the result as JSON on stdout\n"
  "\n"
  "TARGET must not exist; it is written as TARGET.part and renamed when\n"
  "complete.  The bitmap is rewritten only after the target is durable.\n"
  "Prints nothing on success unless stdout is a terminal or --json is given\n"
  "(cron mails only failures); a progress bar goes to stderr on a terminal.\n"
  "Exit: 0 done, 1 job failed, 2 usage, 3 unusable source or bitmap (e.g.\n"
  "in use), 4 locked, 130 interrupted.\n";

enum {
  OPT_SYNC = OPT_FIRST_COMMAND_OPTION, OPT_BITMAP, OPT_BITMAP_MODE,
  OPT_BACKING, OPT_CLUSTER_SIZE,
};

static const struct option long_options[] = {
  { "help", no_argument, NULL, OPT_HELP },
  { "long-options", no_argument, NULL, OPT_LONG_OPTIONS },
  { "json", no_argument, NULL, OPT_JSON },
  { "sync", required_argument, NULL, OPT_SYNC },
  { "bitmap", required_argument, NULL, OPT_BITMAP },
  { "bitmap-mode", required_argument, NULL, OPT_BITMAP_MODE },
  { "backing", required_argument, NULL, OPT_BACKING },
  { "cluster-size", required_argument, NULL, OPT_CLUSTER_SIZE },
  { "output-format", required_argument, NULL, 'O' },
  { NULL, 0, NULL, 0 },
};

static volatile int cancel_requested;

static void
on_signal (int sig)
{
  (void) sig;
  cancel_requested = 1;
}

static void
print_result (const struct qbak_copy_result *r, const char *target,
              bool json, int rc)
{
  if (json) {
    json_object *o = json_object_new_object ();
    json_object_object_add (o, "target", json_object_new_string (target));
    json_object_object_add (o, "status",
                            json_object_new_string (rc == 0 ? "ok" : "failed"));
    json_object_object_add (o, "virtual-size", json_u64 (r->virtual_size));
    json_object_object_add (o, "cluster-size", json_u64 (r->cluster_size));
    json_object_object_add (o, "bytes-planned", json_u64 (r->bytes_planned));
    json_object_object_add (o, "bytes-copied", json_u64 (r->bytes_copied));
    json_object_object_add (o, "clusters-copied",
                            json_u64 (r->clusters_copied));
    json_object_object_add (o, "zero-clusters", json_u64 (r->zero_clusters));
    json_object_object_add (o, "bytes-skipped", json_u64 (r->bytes_skipped));
    json_object_object_add (o, "clusters-left", json_u64 (r->clusters_left));
    json_object_object_add (o, "seconds",
                            json_object_new_double (r->seconds));
    double mbs = r->seconds > 0 ? (double) r->bytes_copied / 1e6 / r->seconds
                                : 0;
    json_object_object_add (o, "mb-per-second", json_object_new_double (mbs));
    if (r->bitmap_state) {
      json_object *b = json_object_new_object ();
      json_object_object_add (b, "state",
                              json_object_new_string (r->bitmap_state));
      json_object_object_add (b, "dirty-bytes",
                              json_u64 (r->bitmap_dirty_bytes));
      json_object_object_add (o, "bitmap", b);
    }
    json_print (o);
  }
  else if (rc == 0 && isatty (STDOUT_FILENO)) {
    printf ("%s: copied %.1f MiB in %" PRIu64 " clusters (%" PRIu64
            " zero clusters, %.1f MiB skipped) in %.2f s", target,
            (double) r->bytes_copied / 1048576.0, r->clusters_copied,
            r->zero_clusters, (double) r->bytes_skipped / 1048576.0,
            r->seconds);
    if (r->bitmap_state)
      printf ("; bitmap %s", r->bitmap_state);
    printf ("\n");
  }
}

int
cmd_copy (int argc, char **argv)
{
  struct qbak_copy_opts o = { .bitmap_mode = QBAK_BITMAP_MODE_UNSET };
  bool json = false, have_sync = false;
  uint64_t cs = 0;
  int c;

  while ((c = getopt_long (argc, argv, "O:", long_options, NULL)) != -1) {
    switch (c) {
    case OPT_HELP: print_help_and_exit (help);
    case OPT_LONG_OPTIONS: print_long_options_and_exit (long_options);
    case OPT_JSON: json = true; break;
    case OPT_SYNC:
      have_sync = true;
      if (strcmp (optarg, "full") == 0) o.sync = QBAK_SYNC_FULL;
      else if (strcmp (optarg, "top") == 0) o.sync = QBAK_SYNC_TOP;
      else if (strcmp (optarg, "incremental") == 0)
        o.sync = QBAK_SYNC_INCREMENTAL;
      else if (strcmp (optarg, "bitmap") == 0) o.sync = QBAK_SYNC_BITMAP;
      else
        return usage_error (usage_line, "copy: invalid --sync '%s' (full, "
                            "top, incremental or bitmap)", optarg);
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
    default: return bad_option (usage_line, "copy", argv);
    }
  }
  if (argc - optind < 2)
    return usage_error (usage_line, "copy: missing %s",
                        argc - optind == 0 ? "SRC and TARGET" : "TARGET");
  if (argc - optind > 2)
    return usage_error (usage_line, "copy: too many arguments");
  if (!have_sync)
    return usage_error (usage_line, "copy: missing --sync");
  o.source = argv[optind];
  o.target = argv[optind + 1];

  struct sigaction sa = { .sa_handler = on_signal };
  sigemptyset (&sa.sa_mask);
  sigaction (SIGINT, &sa, NULL);
  sigaction (SIGTERM, &sa, NULL);
  o.cancel = &cancel_requested;

  struct progress prog;
  progress_init (&prog);
  o.progress = progress_update;
  o.progress_opaque = &prog;

  struct qbak_copy_result r;
  int rc = qbak_copy (&o, &r);
  progress_end (&prog);
  int ret = rc == 0 ? EXIT_OK : report_error ();
  if (rc == 0 || r.virtual_size)
    print_result (&r, o.target, json, rc);
  return ret;
}
