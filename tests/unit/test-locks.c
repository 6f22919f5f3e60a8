/* lib/lock.c: qbak takes QEMU's image locks (OFD locks on the bytes
 * 100+N and 200+N of the file), so qbak and QEMU keep each other out the
 * way two QEMUs do.  Two opens in different processes conflict as QEMU's
 * do, a conflict is STATUS_BUSY, QEMU's tools see qbak's locks, and qbak
 * sees theirs.  The holder is a child of this program stopped while it
 * holds its locks (fixture.h), so each case is quick and has no timing to
 * guess; QEMU's tools are the oracles of what QEMU sees. */
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#include "common/error.h"
#include "common/fileio.h"
#include "lib/internal.h"
#include "fixture.h"

/* Lock byte 100+N and 200+N stand for QEMU's permission N (its
 * BLK_PERM_* bit numbers): qbak's bits must be QEMU's, at compile time. */
_Static_assert (QBAK_PERM_CONSISTENT_READ == 1u << 0, "consistent read is 0");
_Static_assert (QBAK_PERM_WRITE == 1u << 1, "write is 1");
_Static_assert (QBAK_PERM_WRITE_UNCHANGED == 1u << 2, "write unchanged is 2");
_Static_assert (QBAK_PERM_RESIZE == 1u << 3, "resize is 3");
_Static_assert (QBAK_PERM_ALL == 0xfu, "the four permissions qbak locks");

/* The two ways qbak opens an image (lib/handle.c): changing metadata
 * holds every permission and shares none; reading holds consistent read
 * and shares everything but write and resize, as a read-only QEMU user
 * does. */
enum mode { WRITER, READER };

static int
lock_as (struct qbak_file *f, enum mode m)
{
  if (m == WRITER)
    return qbak_internal_lock (f, QBAK_PERM_ALL, 0);
  return qbak_internal_lock (f, QBAK_PERM_CONSISTENT_READ,
                             QBAK_PERM_ALL &
                             ~(QBAK_PERM_WRITE | QBAK_PERM_RESIZE));
}

/* Exit statuses of the children. */
#define CHILD_LOCKED 0          /* took the locks */
#define CHILD_BUSY 4            /* refused with STATUS_BUSY */

/* Child scenarios: "hold-write" and "hold-read" take the locks, stop
 * (the parent checks what others see) and, once continued, exit;
 * "try-write" and "try-read" take the locks and exit at once.  The exit
 * status says how the locking went. */
static int
child_main (const char *scenario, const char *path)
{
  enum mode m = strstr (scenario, "write") ? WRITER : READER;
  struct qbak_file *f = qbak_file_open (path, m == WRITER);

  if (!f) {
    fprintf (stderr, "child: %s\n", error_get_message ());
    return 1;
  }
  if (lock_as (f, m) < 0) {
    enum status st = error_get_status ();
    if (st != STATUS_BUSY)
      fprintf (stderr, "child: %s\n", error_get_message ());
    qbak_file_close (f);
    return st == STATUS_BUSY ? CHILD_BUSY : 2;
  }
  if (strncmp (scenario, "hold", 4) == 0)
    raise (SIGSTOP);
  qbak_file_close (f);
  return CHILD_LOCKED;
}

static const char *
make_image (void)
{
  return fx_make_qcow2 ("img.qcow2", "1M", NULL);
}

/* A child of scenario HOLD holds IMG's locks: returns its pid, stopped. */
static pid_t
hold (const char *hold, const char *img)
{
  pid_t pid = fx_child_start (hold, img, NULL);
  fx_child_wait_stopped (pid);
  return pid;
}

/* Whether this process can lock IMG in mode M: 0, or the error status. */
static enum status
try_lock (const char *img, enum mode m)
{
  struct qbak_file *f = qbak_file_open (img, m == WRITER);
  enum status st = STATUS_OK;

  if (!f)
    fail_msg ("open %s: %s", img, error_get_message ());
  if (lock_as (f, m) < 0) {
    st = error_get_status ();
    if (st == STATUS_BUSY &&
        !strstr (error_get_message (), "image is locked"))
      fail_msg ("BUSY without saying so: %s", error_get_message ());
  }
  qbak_file_close (f);
  return st;
}

/* HOLDER holds IMG; a second open in mode M, in this process and in
 * another child, gets WANT (STATUS_OK or STATUS_BUSY).  After the holder
 * is killed, the second open always succeeds: the kernel dropped the
 * locks with the process, nothing is left behind. */
static void
check_pair (const char *holder, enum mode m, const char *trier,
            enum status want)
{
  const char *img = make_image ();
  pid_t pid = hold (holder, img);

  assert_int_equal (try_lock (img, m), want);
  fx_assert_exited (fx_child_run (trier, img, NULL),
                    want == STATUS_BUSY ? CHILD_BUSY : CHILD_LOCKED);
  fx_assert_signaled (fx_child_kill (pid), SIGKILL);
  assert_int_equal (try_lock (img, m), STATUS_OK);
}

static void
test_write_vs_write (void **state)
{
  (void) state;
  check_pair ("hold-write", WRITER, "try-write", STATUS_BUSY);
}

static void
test_write_vs_read (void **state)
{
  (void) state;
  check_pair ("hold-write", READER, "try-read", STATUS_BUSY);
}

/* A reader shares consistent read but not write: a writer must wait. */
static void
test_read_vs_write (void **state)
{
  (void) state;
  check_pair ("hold-read", WRITER, "try-write", STATUS_BUSY);
}

/* Readers share with each other, as read-only QEMU users do. */
static void
test_read_vs_read (void **state)
{
  (void) state;
  check_pair ("hold-read", READER, "try-read", STATUS_OK);
}

/* qemu-img info without -U wants consistent read and does not share
 * write: it fails with QEMU's own lock error while qbak holds the image
 * for writing, reads it with -U, and reads it again once qbak is gone. */
static void
test_qemu_sees_qbak_writer (void **state)
{
  (void) state;
  const char *img = make_image ();
  pid_t pid = hold ("hold-write", img);
  char *out;

  assert_int_not_equal (fx_run_quiet (&out, "qemu-img info '%s'", img), 0);
  if (!strstr (out, "Failed to get") || !strstr (out, "lock"))
    print_message ("qemu-img info: %s\n", out);
  assert_non_null (strstr (out, "Failed to get"));
  assert_non_null (strstr (out, "lock"));
  free (out);
  assert_int_equal (fx_run (NULL, "qemu-img info -U '%s' >/dev/null", img),
                    0);
  fx_assert_signaled (fx_child_kill (pid), SIGKILL);
  assert_int_equal (fx_run (NULL, "qemu-img info '%s' >/dev/null", img), 0);
}

/* qemu-io opening an image read-write wants write: refused while qbak
 * reads the image, as it would be by a read-only QEMU user. */
static void
test_qemu_sees_qbak_reader (void **state)
{
  (void) state;
  const char *img = make_image ();
  pid_t pid = hold ("hold-read", img);
  char *out;

  assert_int_not_equal (fx_run_quiet (&out, "qemu-io -f qcow2 "
                                      "-c 'write 0 64k' '%s'", img), 0);
  if (!strstr (out, "Failed to get") || !strstr (out, "lock"))
    print_message ("qemu-io: %s\n", out);
  assert_non_null (strstr (out, "Failed to get"));
  assert_non_null (strstr (out, "lock"));
  free (out);
  fx_assert_signaled (fx_child_kill (pid), SIGKILL);
}

/* Start qemu-io on IMG (read-write, or read-only with -r), reading its
 * commands from a pipe, and return once it has answered one read: QEMU
 * takes its locks when it opens the image, before any command, so from
 * then on they are all held, and nothing here had to poll or guess a
 * delay.  The holder stays until killed. */
static int holder_in = -1;

static pid_t
qemu_io_holder (const char *img, bool readonly)
{
  int in[2], out[2];
  char buf[4096];
  size_t len = 0;
  pid_t pid;

  assert_int_equal (pipe (in), 0);
  assert_int_equal (pipe (out), 0);
  fflush (NULL);
  pid = fork ();
  assert_true (pid >= 0);
  if (pid == 0) {
    if (dup2 (in[0], 0) < 0 || dup2 (out[1], 1) < 0 || dup2 (out[1], 2) < 0)
      _exit (126);
    close (in[1]);
    close (out[0]);
    if (readonly)
      execlp ("qemu-io", "qemu-io", "-r", "-f", "qcow2", img, (char *) NULL);
    else
      execlp ("qemu-io", "qemu-io", "-f", "qcow2", img, (char *) NULL);
    _exit (127);
  }
  close (in[0]);
  close (out[1]);
  assert_int_equal (write (in[1], "read 0 512\n", 11), 11);
  buf[0] = '\0';
  while (!strstr (buf, "read 512/512 bytes") && len < sizeof buf - 1) {
    ssize_t r = read (out[0], buf + len, sizeof buf - 1 - len);
    if (r <= 0)
      break;
    len += (size_t) r;
    buf[len] = '\0';
  }
  close (out[0]);
  /* in[1] stays open until stop_holder: qemu-io ends at the end of its
   * input. */
  holder_in = in[1];
  if (!strstr (buf, "read 512/512 bytes")) {
    kill (pid, SIGKILL);
    waitpid (pid, NULL, 0);
    fail_msg ("qemu-io did not open %s: %s", img, buf);
  }
  return pid;
}

static void
stop_holder (pid_t pid)
{
  close (holder_in);
  holder_in = -1;
  assert_int_equal (kill (pid, SIGKILL), 0);
  assert_int_equal (waitpid (pid, NULL, 0), pid);
}

/* QEMU writing the image: qbak can neither write nor read it (a read
 * without -U wants consistent read, which a writing QEMU does not
 * share), and both work once QEMU is gone. */
static void
test_qbak_sees_qemu_writer (void **state)
{
  (void) state;
  const char *img = make_image ();
  pid_t pid = qemu_io_holder (img, false);

  assert_int_equal (try_lock (img, WRITER), STATUS_BUSY);
  assert_int_equal (try_lock (img, READER), STATUS_BUSY);
  stop_holder (pid);
  assert_int_equal (try_lock (img, WRITER), STATUS_OK);
  assert_int_equal (try_lock (img, READER), STATUS_OK);
}

/* QEMU reading the image: qbak may read it too, but not write it. */
static void
test_qbak_sees_qemu_reader (void **state)
{
  (void) state;
  const char *img = make_image ();
  pid_t pid = qemu_io_holder (img, true);

  assert_int_equal (try_lock (img, WRITER), STATUS_BUSY);
  assert_int_equal (try_lock (img, READER), STATUS_OK);
  stop_holder (pid);
  assert_int_equal (try_lock (img, WRITER), STATUS_OK);
}

#define T(f) cmocka_unit_test_setup_teardown (f, fx_setup, fx_teardown)

int
main (int argc, char **argv)
{
  if (fx_is_child (argc, argv))
    return child_main (argv[2], argv[3]);

  const struct CMUnitTest tests[] = {
    T (test_write_vs_write),
    T (test_write_vs_read),
    T (test_read_vs_write),
    T (test_read_vs_read),
    T (test_qemu_sees_qbak_writer),
    T (test_qemu_sees_qbak_reader),
    T (test_qbak_sees_qemu_writer),
    T (test_qbak_sees_qemu_reader),
  };
  return cmocka_run_group_tests_name ("locks", tests, NULL, NULL);
}
