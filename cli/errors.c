/* Error reporting and helpers shared by every subcommand. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

/* This program's advice for an error the library hinted at, appended to
 * the library's message, which says only what is wrong.  ERRNO_LAST: the
 * library recorded the errno without putting it in the message; its text
 * goes after the advice.  One block per area, in enum order. */
static const struct {
  enum qbak_hint hint;
  const char *advice;
  bool errno_last;
} advice_table[] = {
  /* The backup job and its bitmaps (lib/job*.c, lib/bitmap-*.c). */
  { QBAK_HINT_LIST_BITMAPS, " ('qbak bitmap list' shows them)", false },
  { QBAK_HINT_NEED_BITMAP, "; give --bitmap", false },
  { QBAK_HINT_NEED_BITMAP_MODE, "; give --bitmap-mode", false },
  { QBAK_HINT_BACKING_CONFLICT, "; give --backing or --no-backing, not both",
    false },
  { QBAK_HINT_BACKING_FORMAT_ALONE, "; -F goes with --backing", false },
  { QBAK_HINT_NEED_BACKING, ": give --backing PREV (the previous backup), or"
    " --no-backing if a target without one is meant", false },
  { QBAK_HINT_PARTIAL_EXISTS, "; or finish it with the same command and "
    "--resume", false },
  { QBAK_HINT_BACKING_FORMAT_GUESSED, "; qbak reads a backing file as qcow2 "
    "unless -F gives its format (-F raw for a raw backup)", false },
  { QBAK_HINT_NOT_OUR_PARTIAL, "; remove it and run without --resume", false },
  { QBAK_HINT_PARTIAL_OF_OTHER_JOB, "; run without --resume to start again",
    false },
  { QBAK_HINT_RESUME_TO_FINISH, ": run the same command with --resume to "
    "finish", false },
  { QBAK_HINT_RUN_AGAIN, ": run the same command again", false },
  { QBAK_HINT_RESUME_AGAIN, ": run the same command with --resume again",
    false },
  { QBAK_HINT_REMOVE_IN_USE_COMPANION, " ('qbak bitmap remove' removes it; "
    "then 'qbak copy --sync full')", false },
  /* Image locks (lib/lock.c). */
  { QBAK_HINT_IMAGE_LOCKED, ": stop the other user, or use -U/--force-share "
    "for read-only commands", true },
  { QBAK_HINT_IMAGE_PERMISSION_HELD, "; stop it (or use -U/--force-share for "
    "read-only commands)", false },
};

/* The advice for a bitmap in use names the commands with the image and
 * bitmap when the library said which (SUBJECT0, SUBJECT1). */
static char *
in_use_advice (const char *image, const char *bitmap)
{
  char *s = NULL;
  if (image && bitmap) {
    if (asprintf (&s, "; start a new chain: 'qbak bitmap remove %s %s', "
                  "'qbak bitmap add %s %s', then a full backup (--sync full) "
                  "with --bitmap %s", image, bitmap, image, bitmap,
                  bitmap) < 0)
      s = NULL;
  }
  else
    s = strdup ("; start a new chain: remove the bitmap and add it again "
                "('qbak bitmap remove', 'qbak bitmap add'), then a full "
                "backup (--sync full)");
  return s;
}

char *
error_with_advice (const char *msg, enum qbak_hint hint, int errnum,
                   const char *subject0, const char *subject1)
{
  if (hint == QBAK_HINT_BITMAP_IN_USE) {
    char *advice = in_use_advice (subject0, subject1), *s = NULL;
    if (!advice || asprintf (&s, "%s%s", msg, advice) < 0)
      s = NULL;
    free (advice);
    return s;
  }
  const char *advice = "";
  bool errno_last = false;
  for (size_t i = 0; i < sizeof advice_table / sizeof advice_table[0]; i++)
    if (advice_table[i].hint == hint) {
      advice = advice_table[i].advice;
      errno_last = advice_table[i].errno_last && errnum != 0;
    }
  char *s = NULL;
  if (asprintf (&s, "%s%s%s%s", msg, advice, errno_last ? ": " : "",
                errno_last ? strerror (errnum) : "") < 0)
    return NULL;
  return s;
}

/* The last error as this program words it: the library's message with
 * the advice for its hint.  Malloc'ed; NULL if out of memory. */
static char *
last_error_text (void)
{
  return error_with_advice (qbak_get_error (), qbak_get_error_hint (),
                            qbak_get_errno (), qbak_get_error_hint_subject (0),
                            qbak_get_error_hint_subject (1));
}

/* The last message printed, for --json's "error". */
static char *last_message;

static void
remember_message (const char *msg)
{
  free (last_message);
  last_message = strdup (msg);
}

const char *
last_error_message (void)
{
  return last_message ? last_message : qbak_get_error ();
}

int
report_error (void)
{
  char *text = last_error_text ();
  fprintf (stderr, "%s: %s\n", progname, text ? text : qbak_get_error ());
  remember_message (text ? text : qbak_get_error ());
  free (text);
  switch (qbak_get_status ()) {
  case QBAK_STATUS_USAGE: return EXIT_USAGE;
  case QBAK_STATUS_INVALID: return EXIT_UNUSABLE;
  case QBAK_STATUS_BUSY: return EXIT_BUSY;
  case QBAK_STATUS_MISMATCH: return EXIT_MISMATCH;
  case QBAK_STATUS_CANCELLED: return EXIT_INTERRUPTED;
  default: return EXIT_JOB_FAILED;
  }
}

/* The command whose --help explains USAGE: "Usage: qbak copy SRC ..."
 * names "qbak copy", "Usage: qbak bitmap list|dump ..." names
 * "qbak bitmap", and the top level's "Usage: qbak COMMAND ..." (or no
 * USAGE) names plain "qbak". */
static void
print_help_pointer (const char *usage)
{
  const char *word = usage ? strstr (usage, "qbak ") : NULL;
  int n = 0;
  if (word) {
    word += strlen ("qbak ");
    while (islower ((unsigned char) word[n]))
      n++;
    if (word[n] != ' ' && word[n] != '\n' && word[n] != '\0')
      n = 0;
  }
  if (n)
    fprintf (stderr, "Try 'qbak %.*s --help'.", n, word);
  else
    fputs ("Try 'qbak --help'.", stderr);
}

/* One line: "qbak: MSG. Try 'qbak CMD --help'."  The pointer replaces
 * the whole usage text, which would bury the one line that matters in
 * cron's mail. */
static void
print_usage_line (const char *usage, const char *msg)
{
  remember_message (msg);
  size_t n = strlen (msg);
  fprintf (stderr, "%s: %s%s", progname, msg,
           n && strchr (".?!", msg[n - 1]) ? " " : ". ");
  print_help_pointer (usage);
  fputc ('\n', stderr);
}

int
report_error_usage (const char *usage)
{
  /* Not after "X already exists" or "cannot create X": the command line
   * was fine, the file system said no (those errors carry an errno). */
  if (qbak_get_status () != QBAK_STATUS_USAGE || qbak_get_errno () != 0)
    return report_error ();
  char *text = last_error_text ();
  print_usage_line (usage, text ? text : qbak_get_error ());
  free (text);
  return EXIT_USAGE;
}

int
usage_error (const char *usage, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  char *msg = NULL;
  int r = vasprintf (&msg, fmt, ap);
  va_end (ap);
  print_usage_line (usage, r >= 0 ? msg : fmt);
  free (msg);
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
check_image_format (const char *usage, const char *cmd, const char *format)
{
  static const char *const formats[] = { "qcow2", "qcow", "raw" };
  for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++)
    if (strcmp (format, formats[i]) == 0)
      return 0;
  return usage_error (usage, "%s: invalid -f '%s' (qcow2, qcow or raw)", cmd,
                      format);
}
