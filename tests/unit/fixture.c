/* The unit tests' shared fixture and fork-and-crash harness: see
 * fixture.h. */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#include "helpers.h"
#include "fixture.h"

static char scratch[TEST_PATH_MAX];

/* ---- Scratch directory ------------------------------------------------ */

int
fx_setup (void **state)
{
  (void) state;
  test_require_qemu ();
  test_tmpdir_create (scratch);
  return 0;
}

int
fx_teardown (void **state)
{
  (void) state;
  test_rmtree (scratch);
  scratch[0] = '\0';
  return 0;
}

const char *
fx_dir (void)
{
  assert_true (scratch[0] != '\0');
  return scratch;
}

const char *
fx_path (const char *name)
{
  static char bufs[32][TEST_PATH_MAX];
  static unsigned next;
  char *p = bufs[next++ % 32];
  test_path (p, fx_dir (), name);
  return p;
}

/* ---- Commands --------------------------------------------------------- */

static int
vrun (bool quiet, char **out, const char *fmt, va_list ap)
{
  char *cmd, *full, *text = NULL;
  size_t len = 0, cap = 0;
  FILE *fp;
  int status;

  assert_true (vasprintf (&cmd, fmt, ap) >= 0);
  /* Braces, so that the stderr of every command of a list or pipeline
   * is captured, not only the last one's. */
  assert_true (asprintf (&full, "{ %s\n} 2>&1", cmd) >= 0);
  fflush (NULL);
  fp = popen (full, "r");
  assert_non_null (fp);
  for (;;) {
    if (cap - len < 4096) {
      cap = cap * 2 + 4096;
      text = realloc (text, cap);
      assert_non_null (text);
    }
    size_t r = fread (text + len, 1, cap - len - 1, fp);
    if (r == 0)
      break;
    len += r;
  }
  text[len] = '\0';
  status = pclose (fp);
  if (!quiet &&
      (status == -1 || !WIFEXITED (status) || WEXITSTATUS (status) != 0))
    print_message ("command: %s\n%s", cmd, text);
  free (cmd);
  free (full);
  if (out)
    *out = text;
  else
    free (text);
  return status != -1 && WIFEXITED (status) ? WEXITSTATUS (status) : -1;
}

int
fx_run (char **out, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  int r = vrun (false, out, fmt, ap);
  va_end (ap);
  return r;
}

int
fx_run_quiet (char **out, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  int r = vrun (true, out, fmt, ap);
  va_end (ap);
  return r;
}

void
fx_require (const char *tool, const char *package)
{
  test_require_tool (tool, package);
}

void
fx_require_bitmap_oracles (void)
{
  test_require_tool ("qemu-nbd", "qemu-utils");
  test_require_tool ("nbdinfo", "libnbd-bin");
  test_require_tool ("jq", "jq");
}

/* ---- Images ------------------------------------------------------------ */

const char *
fx_make_qcow2 (const char *name, const char *size, const char *opts)
{
  const char *path = fx_path (name);
  assert_int_equal (fx_run (NULL, "rm -f '%s' && qemu-img create -q -f qcow2 "
                            "%s '%s' %s", path, opts ? opts : "", path, size),
                    0);
  return path;
}

void
fx_qemu_io (const char *fmt, const char *img, ...)
{
  char *cmd, *next;
  const char *c;
  va_list ap;

  assert_true (asprintf (&cmd, "qemu-io -f %s", fmt) >= 0);
  va_start (ap, img);
  while ((c = va_arg (ap, const char *))) {
    assert_true (asprintf (&next, "%s -c '%s'", cmd, c) >= 0);
    free (cmd);
    cmd = next;
  }
  va_end (ap);
  assert_int_equal (fx_run (NULL, "%s '%s' >/dev/null", cmd, img), 0);
  free (cmd);
}

/* ---- QEMU's verdicts --------------------------------------------------- */

int
fx_qemu_check (const char *path)
{
  return fx_run (NULL, "qemu-img check -f qcow2 '%s'", path);
}

void
fx_assert_check_clean (const char *path)
{
  char *out;
  assert_int_equal (fx_run (&out, "qemu-img check -f qcow2 '%s'", path), 0);
  /* The status says it; the sentence is checked too, so that a qemu-img
   * that stopped short of checking cannot pass. */
  if (!strstr (out, "No errors were found on the image"))
    print_message ("qemu-img check %s:\n%s", path, out);
  assert_non_null (strstr (out, "No errors were found on the image"));
  free (out);
}

void
fx_assert_no_corruption (const char *path)
{
  int r = fx_qemu_check (path);
  if (r != 0 && r != 3)
    print_message ("qemu-img check %s: exit %d (2 is corruption)\n", path, r);
  assert_true (r == 0 || r == 3);
}

size_t
fx_qemu_dirty_ranges (const char *img, const char *name,
                      uint64_t (*ranges)[2], size_t max)
{
  char *out;
  size_t n = 0;
  FILE *f;
  unsigned long long off, len;

  /* The socket lives in a short /tmp directory: unix socket paths are
   * limited to 107 bytes, and the scratch directory may be deep.  jq
   * fails on an extent type other than clean (0) or dirty (1), so an
   * unexpected answer never reads as clean. */
  int r = fx_run (&out,
    "set -e; d=$(mktemp -d /tmp/qbak-fx.XXXXXX); "
    "trap 'kill $(cat $d/pid 2>/dev/null) 2>/dev/null; rm -rf $d' EXIT; "
    "qemu-nbd -r -f qcow2 --bitmap '%s' -k $d/s --pid-file $d/pid --fork "
    "'%s' </dev/null >/dev/null; "
    "nbdinfo --json --map='qemu:dirty-bitmap:%s' "
    "\"nbd+unix:///?socket=$d/s\" >$d/map.json; "
    "jq -r 'if all(.[]; .type == 0 or .type == 1) then "
    "(.[] | select(.type == 1) | \"\\(.offset) \\(.length)\") "
    "else error(\"unexpected extent type\") end' $d/map.json",
    name, img, name);
  if (r != 0)
    fail_msg ("no dirty map of bitmap '%s' of %s from qemu-nbd + nbdinfo",
              name, img);
  f = fmemopen (out, strlen (out) + 1, "r");
  assert_non_null (f);
  while (fscanf (f, "%llu %llu", &off, &len) == 2) {
    if (n < max) {
      ranges[n][0] = off;
      ranges[n][1] = len;
    }
    n++;
  }
  fclose (f);
  free (out);
  return n;
}

/* ---- Children ---------------------------------------------------------- */

bool
fx_is_child (int argc, char **argv)
{
  return argc == 4 && strcmp (argv[1], "--child") == 0;
}

static void
set_or_unset (const char *var, const char *value)
{
  if (value)
    setenv (var, value, 1);
  else
    unsetenv (var);
}

pid_t
fx_child_start (const char *scenario, const char *arg,
                const struct fx_faults *faults)
{
  static const struct fx_faults none;
  pid_t pid;

  if (!faults)
    faults = &none;
  fflush (NULL);
  pid = fork ();
  assert_true (pid >= 0);
  if (pid == 0) {
    char *argv[] = { (char *) "fixture-child", (char *) "--child",
                     (char *) scenario, (char *) arg, NULL };
    set_or_unset ("QBAK_FAILPOINT", faults->failpoint);
    set_or_unset ("QBAK_FAILPOINT_COUNT", faults->count_file);
    set_or_unset ("QBAK_FAILPOINT_LOG", faults->log_file);
    execv ("/proc/self/exe", argv);
    _exit (127);
  }
  return pid;
}

int
fx_child_wait (pid_t pid)
{
  int status;
  pid_t r;

  while ((r = waitpid (pid, &status, 0)) < 0 && errno == EINTR)
    ;
  assert_int_equal (r, pid);
  return status;
}

void
fx_child_wait_stopped (pid_t pid)
{
  int status;
  pid_t r;

  while ((r = waitpid (pid, &status, WUNTRACED)) < 0 && errno == EINTR)
    ;
  assert_int_equal (r, pid);
  if (!WIFSTOPPED (status))
    fail_msg ("child %d ended (status 0x%x) instead of stopping", (int) pid,
              (unsigned) status);
}

int
fx_child_kill (pid_t pid)
{
  assert_int_equal (kill (pid, SIGKILL), 0);
  return fx_child_wait (pid);
}

int
fx_child_run (const char *scenario, const char *arg,
              const struct fx_faults *faults)
{
  return fx_child_wait (fx_child_start (scenario, arg, faults));
}

void
fx_assert_exited (int status, int code)
{
  if (!WIFEXITED (status) || WEXITSTATUS (status) != code)
    print_message ("child status 0x%x, expected exit %d\n",
                   (unsigned) status, code);
  assert_true (WIFEXITED (status));
  assert_int_equal (WEXITSTATUS (status), code);
}

void
fx_assert_signaled (int status, int sig)
{
  if (!WIFSIGNALED (status) || WTERMSIG (status) != sig)
    print_message ("child status 0x%x, expected signal %d\n",
                   (unsigned) status, sig);
  assert_true (WIFSIGNALED (status));
  assert_int_equal (WTERMSIG (status), sig);
}

unsigned long
fx_count_io (const char *scenario, const char *arg, const char *class)
{
  const char *counts = fx_path ("fx-io-counts.txt");
  struct fx_faults faults = { .count_file = counts };
  char *out, word[16];
  unsigned long n, found = 0;
  bool seen = false;
  FILE *f;

  unlink (counts);
  fx_assert_exited (fx_child_run (scenario, arg, &faults), 0);
  assert_int_equal (fx_run (&out, "cat '%s'", counts), 0);
  f = fmemopen (out, strlen (out) + 1, "r");
  assert_non_null (f);
  while (fscanf (f, "%15s %lu", word, &n) == 2)
    if (strcmp (word, class) == 0) {
      found = n;
      seen = true;
    }
  fclose (f);
  if (!seen)
    fail_msg ("no count of class '%s' in %s:\n%s", class, counts, out);
  free (out);
  unlink (counts);
  return found;
}
