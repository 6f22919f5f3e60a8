/* The fixture every unit test shares (tests/unit/fixture.c, linked into
 * each test-*.c): a scratch directory per test, shell commands for the
 * QEMU tools that make images and act as oracles, the oracles' verdicts
 * (qemu-img check, the dirty ranges qemu-nbd + nbdinfo report), and one
 * fork-and-crash harness.
 *
 * The harness runs a scenario of the test program in a child: the same
 * binary executed again as "PROGRAM --child SCENARIO ARG", with the fail
 * point variables of common/failpoint.h set for it alone.  A fresh
 * process is needed because the fail point configuration is read once per
 * process, and the parent has usually done I/O already.  The child may
 * exit, crash at fail point N (any:N:abort), stop itself (any:N:stop) or
 * be killed; the parent gets the wait status and checks the files with
 * QEMU's tools.  A test program that uses it starts main with
 *
 *   if (fx_is_child (argc, argv))
 *     return child_main (argv[2], argv[3]);
 *
 * Include after <cmocka.h>.  Like helpers.h, a missing tool or a failed
 * command fails the test; nothing is skipped. */
#ifndef QBAK_TESTS_UNIT_FIXTURE_H
#define QBAK_TESTS_UNIT_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- Scratch directory ------------------------------------------------ */

/* cmocka setup and teardown (per test or per group): fx_setup makes a
 * fresh scratch directory under $QBAK_TEST_TMPDIR (or /tmp) and checks
 * that qemu-img and qemu-io are installed; fx_teardown removes the
 * directory (kept if $QBAK_TEST_KEEP is set).  *STATE is left alone. */
int fx_setup (void **state);
int fx_teardown (void **state);

/* The current scratch directory. */
const char *fx_dir (void);

/* "DIR/NAME" in the scratch directory: a static buffer, one of 32 used in
 * turn, so a test may hold up to 32 paths at once. */
const char *fx_path (const char *name);

/* ---- Commands --------------------------------------------------------- */

/* Run a shell command built from FMT; returns its exit status (-1 if it
 * did not exit), and its stdout and stderr in *OUT (malloc'ed) if OUT is
 * not NULL.  A failed command's text and output are printed, so the log
 * says why an assert on its status failed. */
int fx_run (char **out, const char *fmt, ...)
  __attribute__((format (printf, 2, 3)));

/* The same for a command expected to fail: nothing is printed, the
 * caller checks the status and the output. */
int fx_run_quiet (char **out, const char *fmt, ...)
  __attribute__((format (printf, 2, 3)));

/* Fail unless TOOL is on $PATH; PACKAGE is what installs it. */
void fx_require (const char *tool, const char *package);

/* The oracles of bitmap contents: qemu-nbd, nbdinfo and jq. */
void fx_require_bitmap_oracles (void);

/* ---- Images ------------------------------------------------------------ */

/* NAME in the scratch directory, made by qemu-img create -f qcow2 with
 * OPTS (extra options, may be NULL) and SIZE ("16M"); its path. */
const char *fx_make_qcow2 (const char *name, const char *size,
                           const char *opts);

/* Run each qemu-io command of the NULL-terminated list on IMG (format
 * FMT) in one qemu-io; it must succeed. */
void fx_qemu_io (const char *fmt, const char *img, ...)
  __attribute__((sentinel));

/* ---- QEMU's verdicts --------------------------------------------------- */

/* qemu-img check of the qcow2 PATH: its exit status (0 clean, 2
 * corruption, 3 leaks only), the output printed when not 0. */
int fx_qemu_check (const char *path);

/* qemu-img check finds PATH clean: no corruption and no leaks. */
void fx_assert_check_clean (const char *path);

/* qemu-img check finds no corruption in PATH (leaked clusters allowed:
 * what a crash-safe writer stopped midway may leave). */
void fx_assert_no_corruption (const char *path);

/* Dirty ranges of bitmap NAME of the qcow2 IMG as QEMU sees them:
 * qemu-nbd exports the image read-only with the bitmap, nbdinfo maps the
 * qemu:dirty-bitmap:NAME context.  Fills RANGES with up to MAX
 * {offset, length} pairs, in order, and returns how many there are (more
 * than MAX is allowed: only MAX are stored).  Fails the test if the
 * export or the map fails, or an extent type is neither 0 nor 1. */
size_t fx_qemu_dirty_ranges (const char *img, const char *name,
                             uint64_t (*ranges)[2], size_t max);

/* ---- Children ---------------------------------------------------------- */

/* Fault injection for a child: each NULL member leaves that variable
 * unset in the child (common/failpoint.h). */
struct fx_faults {
  const char *failpoint;        /* QBAK_FAILPOINT, e.g. "any:3:abort" */
  const char *count_file;       /* QBAK_FAILPOINT_COUNT */
  const char *log_file;         /* QBAK_FAILPOINT_LOG */
};

/* Whether ARGV is a child's ("PROGRAM --child SCENARIO ARG"). */
bool fx_is_child (int argc, char **argv);

/* Start scenario SCENARIO with ARG in a child, with FAULTS (may be NULL).
 * Returns its pid at once. */
pid_t fx_child_start (const char *scenario, const char *arg,
                      const struct fx_faults *faults);

/* Wait for child PID to end; its wait status. */
int fx_child_wait (pid_t pid);

/* Wait until child PID has stopped itself (a "stop" fail point, or
 * raise (SIGSTOP) once it holds what the parent inspects).  Fails the
 * test if the child ends instead. */
void fx_child_wait_stopped (pid_t pid);

/* Kill child PID (SIGKILL, so it cannot clean up: a crash) and reap it;
 * its wait status. */
int fx_child_kill (pid_t pid);

/* Start and wait: the wait status of the scenario run to its end. */
int fx_child_run (const char *scenario, const char *arg,
                  const struct fx_faults *faults);

/* The child exited with CODE. */
void fx_assert_exited (int status, int code);

/* The child was killed by signal SIG (SIGABRT: a fail point's crash). */
void fx_assert_signaled (int status, int sig);

/* How many I/O calls of CLASS ("read", "write", "flush" or "any") the
 * scenario makes without faults (QBAK_FAILPOINT_COUNT), so that a test
 * can fail or crash each of them in turn.  The scenario must exit 0. */
unsigned long fx_count_io (const char *scenario, const char *arg,
                           const char *class);

#endif
