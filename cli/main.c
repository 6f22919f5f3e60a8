/* qbak: entry point and the table of subcommands. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

const char *progname = "qbak";

static const struct command commands[] = {
  { "backup", cmd_backup, "back up disks into a repository (full or "
    "incremental)" },
  { "bitmap", cmd_bitmap, "list, dump and manage persistent dirty bitmaps" },
  { "copy", cmd_copy, "back up an image: full, top or incremental" },
  { "info", cmd_info, "show an image: format, sizes, chain, bitmaps" },
  { "list", cmd_list, "list the points of a repository" },
  { "map", cmd_map, "show an image's allocation (as qemu-img map)" },
  { "protect", cmd_protect, "pin a point of a repository against prune" },
  { "prune", cmd_prune, "remove points a retention policy does not keep" },
  { "restore", cmd_restore, "restore a point of a repository" },
  { "unprotect", cmd_unprotect, "unpin a point of a repository" },
  { "verify", cmd_verify, "verify a repository's points (and sources)" },
};
enum { N_COMMANDS = sizeof commands / sizeof commands[0] };

/* cli/complete.c: names for the shell completions.  Hidden: neither help
 * nor --commands lists it, and no typo is ever corrected to it. */
int cmd_complete (int argc, char **argv);
static const char complete_command[] = "__complete";

/* The pointer under a usage error names "qbak --help" from this. */
static const char usage_line[] = "Usage: qbak COMMAND [OPTIONS] ARGS...";

static const char *const top_options[] = { "--help", "--version" };

static void
usage (void)
{
  printf ("%s\n"
          "       qbak help [COMMAND]\n"
          "       qbak --version | --help\n"
          "\n"
          "Offline full and incremental backups of qcow2 and raw disk images\n"
          "from the persistent dirty bitmaps QEMU keeps in qcow2 metadata.\n"
          "\nCommands:\n", usage_line);
  for (size_t i = 0; i < N_COMMANDS; i++)
    printf ("  %-9s %s\n", commands[i].name, commands[i].summary);
  printf ("\nRun 'qbak COMMAND --help' or 'qbak help COMMAND' for a "
          "command's options.\n"
          "\nExit codes: 0 success, 1 job failed (nothing lost), 2 usage,\n"
          "3 unusable input (corrupt, unsupported, in-use bitmap),\n"
          "4 image locked, 5 verification mismatch, 130 interrupted.\n");
}

static const struct command *
find_command (const char *name)
{
  for (size_t i = 0; i < N_COMMANDS; i++)
    if (strcmp (name, commands[i].name) == 0)
      return &commands[i];
  return NULL;
}

/* "bitmap, copy, info or map", from the table. */
static const char *
command_names (void)
{
  static char list[256];
  size_t used = 0;
  for (size_t i = 0; i < N_COMMANDS && used < sizeof list; i++)
    used += (size_t) snprintf (list + used, sizeof list - used, "%s%s",
                               i == 0 ? "" : i + 1 < N_COMMANDS ? ", "
                                                                : " or ",
                               commands[i].name);
  return list;
}

/* "qbak: WHAT 'NAME': did you mean 'copy'? Try 'qbak --help'." */
static int
unknown_command (const char *what, const char *name)
{
  struct suggestion s = { 0 };
  for (size_t i = 0; i < N_COMMANDS; i++)
    suggest_consider (&s, name, commands[i].name);
  suggest_consider (&s, name, "help");
  if (s.best)
    return usage_error (usage_line, "%s '%s': did you mean '%s'?", what, name,
                        s.best);
  return usage_error (usage_line, "%s '%s' (%s)", what, name,
                      command_names ());
}

/* What 'qbak C --help' prints. */
static int
command_help (const struct command *c)
{
  char *help_argv[] = { (char *) c->name, (char *) "--help", NULL };
  return c->fn (2, help_argv);
}

/* qbak help [COMMAND [...]]: the same text as 'qbak COMMAND --help'. */
static int
help_command (int argc, char **argv)
{
  if (argc < 2 || strcmp (argv[1], "help") == 0) {
    usage ();
    return EXIT_OK;
  }
  const struct command *c = find_command (argv[1]);
  if (!c)
    return unknown_command ("help: unknown command", argv[1]);
  return command_help (c);
}

/* Whether -h or --help is among ARGS (before a "--"): the help is shown
 * then, wherever it was typed and whatever else the line holds, rather
 * than an error about another option ("qbak copy --sync x -h"). */
static bool
asks_for_help (int argc, char **argv)
{
  for (int i = 1; i < argc; i++) {
    if (strcmp (argv[i], "--") == 0)
      return false;
    if (strcmp (argv[i], "-h") == 0 || strcmp (argv[i], "--help") == 0)
      return true;
  }
  return false;
}

int
main (int argc, char **argv)
{
  if (argc < 2)
    return usage_error (usage_line, "missing command (%s)", command_names ());
  opterr = 0;          /* every command reports bad options itself */
  const char *cmd = argv[1];
  if (strcmp (cmd, "--help") == 0 || strcmp (cmd, "-h") == 0) {
    usage ();
    return EXIT_OK;
  }
  if (strcmp (cmd, "help") == 0)
    return help_command (argc - 1, argv + 1);
  if (strcmp (cmd, "--version") == 0 || strcmp (cmd, "-V") == 0) {
    printf ("qbak %s\n", qbak_version ());
    return EXIT_OK;
  }
  if (strcmp (cmd, "--commands") == 0) {   /* for completions */
    for (size_t i = 0; i < N_COMMANDS; i++)
      puts (commands[i].name);
    return EXIT_OK;
  }
  if (strcmp (cmd, complete_command) == 0)
    return cmd_complete (argc - 1, argv + 1);
  const struct command *c = find_command (cmd);
  if (c && asks_for_help (argc - 1, argv + 1))
    return command_help (c);
  if (c)
    return json_finish (c->fn (argc - 1, argv + 1));
  if (cmd[0] == '-' && cmd[1] != '\0') {
    struct suggestion s = { 0 };
    for (size_t i = 0; i < sizeof top_options / sizeof top_options[0]; i++)
      suggest_consider (&s, cmd, top_options[i]);
    if (s.best)
      return usage_error (usage_line, "unrecognized option '%s': did you "
                          "mean '%s'?", cmd, s.best);
    return usage_error (usage_line, "unrecognized option '%s': a command "
                        "comes first (%s)", cmd, command_names ());
  }
  return unknown_command ("unknown command", cmd);
}
