/* Error reporting and helpers shared by every subcommand. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

int
report_error (void)
{
  fprintf (stderr, "%s: %s\n", progname, qbak_get_error ());
  switch (qbak_get_status ()) {
  case QBAK_STATUS_USAGE: return EXIT_USAGE;
  case QBAK_STATUS_INVALID: return EXIT_UNUSABLE;
  case QBAK_STATUS_BUSY: return EXIT_BUSY;
  case QBAK_STATUS_MISMATCH: return EXIT_MISMATCH;
  case QBAK_STATUS_CANCELLED: return EXIT_INTERRUPTED;
  default: return EXIT_JOB_FAILED;
  }
}

int
report_error_usage (const char *usage)
{
  /* Not after "X already exists" or "cannot create X": the command line
   * was fine, the file system said no (those errors carry an errno). */
  bool is_usage = qbak_get_status () == QBAK_STATUS_USAGE &&
                  qbak_get_errno () == 0;
  int ret = report_error ();
  if (is_usage)
    fprintf (stderr, "%s\n", usage);
  return ret;
}

int
usage_error (const char *usage, const char *fmt, ...)
{
  va_list ap;
  fprintf (stderr, "%s: ", progname);
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fprintf (stderr, "\n%s\n", usage);
  return EXIT_USAGE;
}

void
print_help_and_exit (const char *help)
{
  fputs (help, stdout);
  exit (EXIT_OK);
}

void
print_long_options_and_exit (const struct option *opts)
{
  for (; opts->name; opts++)
    if (strcmp (opts->name, "long-options") != 0)
      printf ("--%s\n", opts->name);
  exit (EXIT_OK);
}

int
parse_size (const char *s, uint64_t *out)
{
  char *end;
  errno = 0;
  if (!isdigit ((unsigned char) *s))
    return -1;
  unsigned long long v = strtoull (s, &end, 10);
  if (errno)
    return -1;
  unsigned shift = 0;
  switch (*end) {
  case '\0': break;
  case 'k': case 'K': shift = 10; end++; break;
  case 'm': case 'M': shift = 20; end++; break;
  case 'g': case 'G': shift = 30; end++; break;
  case 't': case 'T': shift = 40; end++; break;
  default: return -1;
  }
  if (*end == 'i' && end[1] == 'B')
    end += 2;
  else if (*end == 'B')
    end++;
  if (*end || (shift && v > (UINT64_MAX >> shift)))
    return -1;
  *out = (uint64_t) v << shift;
  return 0;
}

int
bad_option (const char *usage, const char *cmd, char **argv)
{
  const char *arg = optind > 0 ? argv[optind - 1] : "?";
  if (optopt && strchr ("gib", optopt) && arg[0] == '-' && arg[1] == optopt)
    return usage_error (usage, "%s: option '%s' needs an argument", cmd, arg);
  return usage_error (usage, "%s: unrecognized option '%s'", cmd, arg);
}
