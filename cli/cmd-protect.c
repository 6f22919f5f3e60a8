/* qbak protect / unprotect REPO ID: pin a point against retention. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static const char protect_usage[] = "Usage: qbak protect [--json] REPO POINT";
static const char protect_help[] =
  "Usage: qbak protect [--json] REPO POINT\n"
  "\n"
  "Pin the point POINT (an id as `qbak list` shows it) of the repository\n"
  "REPO: no retention policy of `qbak prune` removes it, until `qbak\n"
  "unprotect`.  Pinning a pinned point is no error.\n"
  "\n"
  "  --json   print the point and whether it is pinned as JSON on stdout\n"
  "\n"
  "Exit: 0 done, 1 failed, 2 usage (no such point), 3 not a repository,\n"
  "4 busy.\n";
static const char unprotect_usage[] = "Usage: qbak unprotect [--json] REPO POINT";
static const char unprotect_help[] =
  "Usage: qbak unprotect [--json] REPO POINT\n"
  "\n"
  "Unpin the point POINT of the repository REPO (see `qbak protect`):\n"
  "retention policies decide about it again.  Unpinning a point that is\n"
  "not pinned is no error.\n"
  "\n"
  "  --json   print the point and whether it is pinned as JSON on stdout\n"
  "\n"
  "Exit: 0 done, 1 failed, 2 usage (no such point), 3 not a repository,\n"
  "4 busy.\n";

static const char short_options[] = "h";

static const struct option long_options[] = {
  { "help", no_argument, NULL, OPT_HELP },
  { "long-options", no_argument, NULL, OPT_LONG_OPTIONS },
  { "json", no_argument, NULL, OPT_JSON },
  { NULL, 0, NULL, 0 },
};

static int
pin (int argc, char **argv, bool on)
{
  const char *cmd = on ? "protect" : "unprotect";
  const char *usage_line = on ? protect_usage : unprotect_usage;
  bool json = false;
  int c;
  while ((c = getopt_long (argc, argv, short_options, long_options,
                           NULL)) != -1) {
    switch (c) {
    case 'h':
    case OPT_HELP: print_help_and_exit (on ? protect_help : unprotect_help);
    case OPT_LONG_OPTIONS: print_long_options_and_exit (long_options);
    case OPT_JSON: json = json_output = true; break;
    default:
      return bad_option (usage_line, cmd, argc, argv, short_options,
                         long_options);
    }
  }
  if (argc - optind != 2)
    return usage_error (usage_line, "%s: %s", cmd, argc - optind < 2
                        ? "missing REPO or POINT" : "too many arguments");
  const char *repo = argv[optind], *id = argv[optind + 1];
  if ((on ? qbak_protect (repo, id) : qbak_unprotect (repo, id)) < 0)
    return report_error ();
  if (json) {
    json_object *o = json_object_new_object ();
    json_add_ok (o);
    json_object_object_add (o, "point", json_object_new_string (id));
    json_object_object_add (o, "protected", json_object_new_boolean (on));
    json_print (o);
  }
  return EXIT_OK;
}

int
cmd_protect (int argc, char **argv)
{
  return pin (argc, argv, true);
}

int
cmd_unprotect (int argc, char **argv)
{
  return pin (argc, argv, false);
}
