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
/* The last error message this program printed (without "qbak: " and the
 * pointer to --help), or the library's last error if none was. */
const char *last_error_message (void);

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

/* json-out.c: the one JSON emitter (json-c).  docs/qbak-output.schema.json
 * is the contract of every document printed here, and
 * docs/man/qbak-json.7.scd explains it: change all three together. */
/* Set by every command's --json as soon as getopt sees it, so that an
 * error after it (a usage error too) is answered in JSON. */
extern bool json_output;
void json_print (json_object *obj);
json_object *json_u64 (uint64_t v);
/* A bitmap as qemu-img info lists it (name, granularity, flags), with
 * qbak's "dirty-bytes". */
json_object *json_bitmap_info (const struct qbak_bitmap_info *b);
/* ["in-use", "auto"], as qemu-img info names a bitmap's flags. */
json_object *json_bitmap_flags (const struct qbak_bitmap_info *b);
/* Add "status": "ok" and "exit-code": 0 to O, a command's result. */
void json_add_ok (json_object *o);
/* "ok", "cancelled" or "failed" for EXIT_CODE: the exit code tells a
 * usage error (2) from the others. */
const char *json_status_name (int exit_code);
/* Add "error": MESSAGE (NULL: the last error this program reported) and
 * "exit-code": EXIT_CODE to O. */
void json_add_failure (json_object *o, const char *message, int exit_code);
/* {"status", "error", "exit-code"} (json_status_name, json_add_failure)
 * on stdout. */
void json_print_failure (const char *message, int exit_code);
/* Print json_print_failure's object if --json was given, the command
 * failed, and it printed no JSON; return EXIT_CODE.  main() passes every
 * command's exit code through this. */
int json_finish (int exit_code);

/* human-size.c: a size as qemu-img prints it for people, in BUF. */
enum { HUMAN_SIZE_LEN = 64 };
/* "64 MiB", "1.35 MiB", "0 B" (qemu's size_to_str). */
const char *human_size (char buf[HUMAN_SIZE_LEN], uint64_t bytes);
/* "64 MiB (67108864 bytes)", as qemu-img info's virtual size. */
const char *human_size_exact (char buf[HUMAN_SIZE_LEN], uint64_t bytes);

/* cmd-backup.c: DISK[=NAME] split in place (verify --source too). */
struct qbak_backup_disk parse_disk_arg (char *arg);

/* bitmap-table.c: IMG's bitmaps as a table with a header (and a line
 * saying so when there are none), each line after INDENT. */
void print_bitmap_table (struct qbak_image *img, const char *indent);

/* cmd-list.c: point I of R as JSON (as `qbak list --json` lists it). */
json_object *point_to_json (struct qbak_repo *r, size_t i);

/* cancel.c: make SIGINT and SIGTERM set the returned flag (a job's cancel
 * flag: the job stops at its next request). */
volatile int *cancel_on_signals (void);

/* progress.c: the progress bar of the commands that run jobs, on stderr.
 * -p/--progress draws it even when stderr is not a terminal;
 * -q/--quiet silences it and every summary: only errors are printed. */
extern bool opt_progress, opt_quiet;
/* The options every job command takes (copy, backup, restore, verify,
 * prune): add PROGRESS_SHORT_OPTIONS to its short options and
 * PROGRESS_LONG_OPTIONS to its table, and call progress_option first in
 * its getopt loop. */
#define PROGRESS_SHORT_OPTIONS "pq"
#define PROGRESS_LONG_OPTIONS \
  { "progress", no_argument, NULL, 'p' }, \
  { "quiet", no_argument, NULL, 'q' }
/* True if C was -p or -q (and records it). */
bool progress_option (int c);
/* Whether a summary for people goes to stdout: a terminal, and no -q. */
bool summary_wanted (void);
struct progress {
  bool enabled;
  double start, last;
  int drawn;                    /* columns of the line on screen, or 0 */
};
void progress_init (struct progress *p);
void progress_update (uint64_t done, uint64_t total, void *opaque);
/* Wipe the bar on a terminal before a line is printed while it runs; the
 * next update draws it again below that line. */
void progress_pause (void);
/* Erase the bar, so that the summary takes its line. */
void progress_end (struct progress *p);
/* The width of the terminal on stderr: TIOCGWINSZ, else $COLUMNS, else
 * 80. */
int terminal_columns (void);

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

/* cmd-prune.c: the retention rules' options, which prune and list take:
 * OPT_KEEP_LAST .. OPT_KEEP_WITHIN (command options of their own), their
 * long options (KEEP_LONG_OPTIONS in an option table), and their
 * parsing into O: 1 if C was one of them, 0 if not, or an exit code
 * after a usage error (> 1). */
enum {
  OPT_KEEP_LAST = 1000, OPT_KEEP_HOURLY, OPT_KEEP_DAILY, OPT_KEEP_WEEKLY,
  OPT_KEEP_MONTHLY, OPT_KEEP_YEARLY, OPT_KEEP_WITHIN,
};
#define KEEP_LONG_OPTIONS \
  { "keep-last", required_argument, NULL, OPT_KEEP_LAST }, \
  { "keep-hourly", required_argument, NULL, OPT_KEEP_HOURLY }, \
  { "keep-daily", required_argument, NULL, OPT_KEEP_DAILY }, \
  { "keep-weekly", required_argument, NULL, OPT_KEEP_WEEKLY }, \
  { "keep-monthly", required_argument, NULL, OPT_KEEP_MONTHLY }, \
  { "keep-yearly", required_argument, NULL, OPT_KEEP_YEARLY }, \
  { "keep-within", required_argument, NULL, OPT_KEEP_WITHIN }
struct qbak_prune_opts;
int keep_option (int c, const char *arg, struct qbak_prune_opts *o,
                 const char *command, const char *usage);
/* Whether O has any rule. */
bool keep_any (const struct qbak_prune_opts *o);
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
