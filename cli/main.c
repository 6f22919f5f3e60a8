/* qbak: entry point and the table of subcommands (STYLE habit 14). */
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

const char *progname = "qbak";

static const struct command commands[] = {
  { "bitmap", cmd_bitmap, "list, dump and manage persistent dirty bitmaps" },
  { "copy", cmd_copy, "back up an image: full, top or incremental" },
  { "info", cmd_info, "show an image: format, sizes, chain, bitmaps" },
  { "map", cmd_map, "show an image's allocation (as qemu-img map)" },
};

static void
usage (FILE *fp)
{
  fprintf (fp,
           "Usage: qbak COMMAND [OPTIONS] ARGS...\n"
           "       qbak --version | --help\n"
           "\n"
           "Offline full and incremental backups of qcow2 and raw disk images\n"
           "from the persistent dirty bitmaps QEMU keeps in qcow2 metadata.\n"
           "\nCommands:\n");
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    fprintf (fp, "  %-8s %s\n", commands[i].name, commands[i].summary);
  fprintf (fp,
           "\nRun 'qbak COMMAND --help' for a command's options.\n"
           "\nExit codes: 0 success, 1 job failed (nothing lost), 2 usage,\n"
           "3 unusable input (corrupt, unsupported, in-use bitmap),\n"
           "4 image locked, 5 verification mismatch, 130 interrupted.\n");
}

int
main (int argc, char **argv)
{
  if (argc < 2) {
    fprintf (stderr, "qbak: missing command\n");
    usage (stderr);
    return EXIT_USAGE;
  }
  opterr = 0;          /* every command reports bad options itself */
  const char *cmd = argv[1];
  if (strcmp (cmd, "--help") == 0 || strcmp (cmd, "-h") == 0 ||
      strcmp (cmd, "help") == 0) {
    usage (stdout);
    return EXIT_OK;
  }
  if (strcmp (cmd, "--version") == 0 || strcmp (cmd, "-V") == 0) {
    printf ("qbak %s\n", qbak_version ());
    return EXIT_OK;
  }
  if (strcmp (cmd, "--commands") == 0) {   /* for completions */
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
      puts (commands[i].name);
    return EXIT_OK;
  }
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (strcmp (cmd, commands[i].name) == 0)
      return commands[i].fn (argc - 1, argv + 1);
  fprintf (stderr, "qbak: unknown command '%s'\n", cmd);
  usage (stderr);
  return EXIT_USAGE;
}
