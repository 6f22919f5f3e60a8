/* cli/: qbak's command line.  Only this folder prints or exits. */
#ifndef QBAK_CLI_H
#define QBAK_CLI_H

#include <getopt.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <json-c/json.h>

#include "qbak.h"
#include "cli/exit-codes.h"

/* One subcommand: NAME, its entry point, a one-line summary. */
struct command {
  const char *name;
  int (*fn) (int argc, char **argv);
  const char *summary;
};

/* main.c */
extern const char *progname;

/* errors.c */
/* MSG, a message of the library, with this program's advice for HINT
 * (flags, commands) appended, and the text of ERRNUM after it where the
 * library keeps it out of the message.  Malloc'ed; NULL if out of
 * memory. */
char *error_with_advice (const char *msg, enum qbak_hint hint, int errnum,
                         const char *subject0, const char *subject1);
/* Print the library's last error as one line, with the advice for its
 * hint, and return its exit code. */
int report_error (void);
/* The same, pointing to the --help of the command USAGE belongs to when
 * the library called it a usage error (an argument combination it
 * refuses). */
int report_error_usage (const char *usage);
/* Print "qbak: MSG. Try 'qbak CMD --help'." as one line on stderr, CMD
 * being the command USAGE (its usage text) belongs to; return EXIT_USAGE. */
int usage_error (const char *usage, const char *fmt, ...)
  __attribute__((format(printf, 2, 3)));

/* Handle the options every command shares in its getopt loop:
 * -h/--help (print HELP on stdout, exit 0) and the hidden --long-options. */
void print_help_and_exit (const char *help) __attribute__((noreturn));
void print_long_options_and_exit (const struct option *opts)
  __attribute__((noreturn));
/* 0 if FORMAT is one -f accepts (qcow2, qcow, raw); otherwise a
 * usage_error naming CMD, and EXIT_USAGE. */
int check_image_format (const char *usage, const char *cmd,
                        const char *format);
/* Parse a size with an optional k/M/G/T suffix (powers of 1024). */
int parse_size (const char *s, uint64_t *out);

/* option-errors.c */
/* Report, as one usage_error line, the option getopt_long just refused
 * (opterr is off, so this is the only message): an unknown option (with
 * the closest known one, or how to name a file that starts with '-'), an
 * ambiguous abbreviation, or a missing argument (with what it may be,
 * from USAGE).  SHORT_OPTIONS and LONG_OPTIONS are the tables given to
 * getopt_long; CMD prefixes the message.  Returns EXIT_USAGE. */
int bad_option (const char *usage, const char *cmd, int argc, char **argv,
                const char *short_options, const struct option *long_options);

/* suggest.c */
/* The known word closest to a mistyped one, if any is close enough. */
struct suggestion {
  const char *best;     /* NULL: nothing close */
  size_t distance;
};
/* Remember CANDIDATE in S if it is a likelier meaning of WORD. */
void suggest_consider (struct suggestion *s, const char *word,
                       const char *candidate);

/* json-out.c: the one JSON emitter (json-c). */
void json_print (json_object *obj);
json_object *json_u64 (uint64_t v);
json_object *json_bitmap_info (const struct qbak_bitmap_info *b);
/* {"status": "failed", "error": MESSAGE (NULL: the library's last error),
 * "exit-code": EXIT_CODE} on stdout. */
void json_print_failure (const char *message, int exit_code);

/* cmd-list.c: point I of R as JSON (as `qbak list --json` lists it). */
json_object *point_to_json (struct qbak_repo *r, size_t i);

/* cancel.c: make SIGINT and SIGTERM set the returned flag (a job's cancel
 * flag: the job stops at its next request). */
volatile int *cancel_on_signals (void);

/* progress.c */
struct progress {
  bool enabled;
  double start, last;
};
void progress_init (struct progress *p);
void progress_update (uint64_t done, uint64_t total, void *opaque);
void progress_end (struct progress *p);

/* Subcommands, one file each. */
int cmd_copy (int argc, char **argv);
int cmd_info (int argc, char **argv);
int cmd_map (int argc, char **argv);
int cmd_bitmap (int argc, char **argv);
int cmd_backup (int argc, char **argv);
int cmd_list (int argc, char **argv);
int cmd_restore (int argc, char **argv);
int cmd_verify (int argc, char **argv);
int cmd_prune (int argc, char **argv);
int cmd_protect (int argc, char **argv);
int cmd_unprotect (int argc, char **argv);

/* Options shared by the read-only commands. */
enum {
  OPT_HELP = CHAR_MAX + 1,
  OPT_LONG_OPTIONS,
  OPT_JSON,
  OPT_FIRST_COMMAND_OPTION,
};

#endif
