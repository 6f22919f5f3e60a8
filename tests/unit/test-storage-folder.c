/* The repository storage on a local folder (common/storage-folder.c):
 * put-once never replaces, objects appear whole or not at all, planted
 * links and foreign files are refused, the lock excludes a second holder
 * and is taken over once its holder is gone. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/error.h"
#include "common/storage.h"
#include "helpers.h"

struct fixture {
  char dir[TEST_PATH_MAX];
  char repo[TEST_PATH_MAX + 16];
  struct storage *st;
};

static int
setup (void **state)
{
  struct fixture *fx = calloc (1, sizeof *fx);
  assert_non_null (fx);
  test_tmpdir_create (fx->dir);
  snprintf (fx->repo, sizeof fx->repo, "%s/repo", fx->dir);
  bool created;
  fx->st = storage_open_folder (fx->repo, true, &created);
  assert_non_null (fx->st);
  assert_true (created);
  *state = fx;
  return 0;
}

static int
teardown (void **state)
{
  struct fixture *fx = *state;
  storage_close (fx->st);
  test_sh_status ("rm -rf '%s'", fx->dir);
  free (fx);
  return 0;
}

static void
test_open_missing_without_create (void **state)
{
  struct fixture *fx = *state;
  char path[TEST_PATH_MAX + 32];
  snprintf (path, sizeof path, "%s/none", fx->dir);
  assert_null (storage_open_folder (path, false, NULL));
  assert_int_equal (error_get_status (), STATUS_USAGE);
  /* Opening an existing repository does not "create" it. */
  bool created = true;
  struct storage *again = storage_open_folder (fx->repo, true, &created);
  assert_non_null (again);
  assert_false (created);
  storage_close (again);
}

static void
test_put_once_get (void **state)
{
  struct fixture *fx = *state;
  const char rec[] = "{\"id\": 1}";
  assert_int_equal (storage_put_once (fx->st, "points/a.json", rec,
                                      sizeof rec - 1), 0);
  void *buf;
  size_t len;
  assert_int_equal (storage_get (fx->st, "points/a.json", &buf, &len), 0);
  assert_int_equal (len, sizeof rec - 1);
  assert_memory_equal (buf, rec, len);
  free (buf);

  /* Never replaced. */
  assert_int_equal (storage_put_once (fx->st, "points/a.json", "x", 1), -1);
  assert_int_equal (error_get_errno (), EEXIST);
  assert_int_equal (storage_get (fx->st, "points/a.json", &buf, &len), 0);
  assert_memory_equal (buf, rec, sizeof rec - 1);
  free (buf);

  /* Missing: ENOENT recorded; size says 0. */
  assert_int_equal (storage_get (fx->st, "points/b.json", &buf, &len), -1);
  assert_int_equal (error_get_errno (), ENOENT);
  uint64_t size = 99;
  assert_int_equal (storage_size (fx->st, "points/b.json", &size), 0);
  assert_int_equal (storage_size (fx->st, "points/a.json", &size), 1);
  assert_int_equal (size, sizeof rec - 1);

  /* The object is a plain file a user can read, private to the owner. */
  char path[TEST_PATH_MAX + 64];
  snprintf (path, sizeof path, "%s/points/a.json", fx->repo);
  struct stat sb;
  assert_int_equal (stat (path, &sb), 0);
  assert_int_equal (sb.st_mode & 0777, 0600);
}

static void
test_bad_keys (void **state)
{
  struct fixture *fx = *state;
  static const char *const bad[] = {
    "", "/abs", "a//b", "../x", "a/../b", "a/./b", ".hidden", "a/.tmp-x",
    "sp ace", "a/", "new\nline",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    assert_int_equal (storage_put_once (fx->st, bad[i], "x", 1), -1);
    assert_int_equal (error_get_status (), STATUS_USAGE);
  }
  assert_int_equal (storage_put_once (fx->st, "disks/vda-1/0001.qcow2", "x",
                                      1), 0);
}

static int
collect (const struct storage_entry *e, void *opaque)
{
  char *out = opaque;
  char line[1200];
  snprintf (line, sizeof line, "%s:%llu;", e->key,
            (unsigned long long) e->size);
  strcat (out, line);
  return 0;
}

static void
test_list (void **state)
{
  struct fixture *fx = *state;
  assert_int_equal (storage_put_once (fx->st, "points/2", "bb", 2), 0);
  assert_int_equal (storage_put_once (fx->st, "points/1", "a", 1), 0);
  assert_int_equal (storage_put_once (fx->st, "disks/vda/1.qcow2", "ccc", 3),
                    0);
  assert_int_equal (storage_put_once (fx->st, "config", "{}", 2), 0);
  char out[4096] = "";
  assert_int_equal (storage_list (fx->st, "points/", collect, out), 0);
  assert_string_equal (out, "points/1:1;points/2:2;");
  out[0] = '\0';
  assert_int_equal (storage_list (fx->st, "", collect, out), 0);
  assert_string_equal (out, "config:2;disks/vda/1.qcow2:3;points/1:1;"
                       "points/2:2;");
  out[0] = '\0';
  assert_int_equal (storage_list (fx->st, "disks/vda/1", collect, out), 0);
  assert_string_equal (out, "disks/vda/1.qcow2:3;");
  out[0] = '\0';
  assert_int_equal (storage_list (fx->st, "nothing/", collect, out), 0);
  assert_string_equal (out, "");

  /* A leftover temporary file of an interrupted write is not an object;
   * a foreign file is refused, not skipped. */
  assert_int_equal (test_sh_status ("touch '%s/points/.tmp-3-1-2-0'",
                                    fx->repo), 0);
  out[0] = '\0';
  assert_int_equal (storage_list (fx->st, "points/", collect, out), 0);
  assert_string_equal (out, "points/1:1;points/2:2;");
  assert_int_equal (test_sh_status ("touch '%s/points/my notes'", fx->repo),
                    0);
  assert_int_equal (storage_list (fx->st, "points/", collect, out), -1);
  assert_int_equal (error_get_status (), STATUS_INVALID);
  assert_non_null (strstr (error_get_message (), "my notes"));
}

static void
test_links_refused (void **state)
{
  struct fixture *fx = *state;
  char outside[TEST_PATH_MAX + 32];
  snprintf (outside, sizeof outside, "%s/outside", fx->dir);
  assert_int_equal (test_sh_status ("mkdir '%s' && echo secret > '%s/f' && "
                                    "ln -s '%s' '%s/points' && "
                                    "ln -s '%s/f' '%s/rec'", outside,
                                    outside, outside, fx->repo, outside,
                                    fx->repo), 0);
  void *buf;
  size_t len;
  /* A linked folder: neither read nor written through. */
  assert_int_equal (storage_put_once (fx->st, "points/x", "x", 1), -1);
  assert_int_equal (error_get_status (), STATUS_INVALID);
  assert_int_equal (storage_get (fx->st, "points/f", &buf, &len), -1);
  assert_int_equal (error_get_status (), STATUS_INVALID);
  assert_int_equal (test_sh_status ("test ! -e '%s/x'", outside), 0);
  /* A linked file. */
  assert_int_equal (storage_get (fx->st, "rec", &buf, &len), -1);
  assert_int_equal (error_get_status (), STATUS_INVALID);
  char out[1024] = "";
  assert_int_equal (storage_list (fx->st, "", collect, out), -1);
  assert_int_equal (error_get_status (), STATUS_INVALID);
  /* Deleting a link that stands where a folder should be fails. */
  assert_int_equal (storage_delete (fx->st, "points/f"), -1);
  assert_int_equal (test_sh_status ("test -e '%s/f'", outside), 0);
  /* A FIFO planted as an object: refused at once, never waited on. */
  assert_int_equal (test_sh_status ("mkfifo '%s/fifo'", fx->repo), 0);
  assert_int_equal (storage_get (fx->st, "fifo", &buf, &len), -1);
  assert_int_equal (error_get_status (), STATUS_INVALID);
  /* The repository itself reached through a link is refused. */
  char link[TEST_PATH_MAX + 32];
  snprintf (link, sizeof link, "%s/repo-link", fx->dir);
  assert_int_equal (symlink (fx->repo, link), 0);
  assert_null (storage_open_folder (link, false, NULL));
  assert_int_equal (error_get_status (), STATUS_INVALID);
}

/* Mutable state: replaced whole, the old or the new object, never a
 * leftover temporary name in a listing; a planted folder or link at the
 * name is not replaced. */
static void
test_replace (void **state)
{
  struct fixture *fx = *state;
  void *buf;
  size_t len;
  assert_int_equal (storage_replace (fx->st, "state/a.json", "one", 3), 0);
  assert_int_equal (storage_get (fx->st, "state/a.json", &buf, &len), 0);
  assert_string_equal (buf, "one");
  free (buf);
  assert_int_equal (storage_replace (fx->st, "state/a.json", "second", 6), 0);
  assert_int_equal (storage_get (fx->st, "state/a.json", &buf, &len), 0);
  assert_int_equal (len, 6);
  assert_string_equal (buf, "second");
  free (buf);
  char out[1024] = "";
  assert_int_equal (storage_list (fx->st, "state/", collect, out), 0);
  assert_string_equal (out, "state/a.json:6;");
  assert_int_equal (test_sh_status ("ls -a '%s/state' | grep -q tmp",
                                    fx->repo), 1);
  /* Not through a link, not over a folder. */
  assert_int_equal (test_sh_status ("mkdir '%s/state/d' && "
                                    "ln -s /tmp '%s/linked'", fx->repo,
                                    fx->repo), 0);
  assert_int_equal (storage_replace (fx->st, "state/d", "x", 1), -1);
  assert_int_equal (error_get_status (), STATUS_INVALID);
  assert_int_equal (storage_replace (fx->st, "linked/x", "x", 1), -1);
  assert_int_equal (error_get_status (), STATUS_INVALID);
  assert_int_equal (storage_replace (fx->st, "../x", "x", 1), -1);
  assert_int_equal (error_get_status (), STATUS_USAGE);
}

/* A child takes the lock and reports it through a pipe, then waits to be
 * killed. */
static pid_t
lock_in_child (struct fixture *fx)
{
  int p[2];
  assert_int_equal (pipe (p), 0);
  fflush (NULL);
  pid_t pid = fork ();
  assert_true (pid >= 0);
  if (pid == 0) {
    close (p[0]);
    struct storage *st = storage_open_folder (fx->repo, false, NULL);
    struct storage_lock *lk = st ? storage_lock (st, "lock",
                                                 "host h, pid child") : NULL;
    char c = lk ? 'y' : 'n';
    if (write (p[1], &c, 1) != 1)
      _exit (2);
    pause ();
    _exit (0);
  }
  close (p[1]);
  char c = 0;
  assert_int_equal (read (p[0], &c, 1), 1);
  close (p[0]);
  assert_int_equal (c, 'y');
  return pid;
}

static void
test_lock (void **state)
{
  struct fixture *fx = *state;
  pid_t child = lock_in_child (fx);

  /* Busy while the child lives, naming it. */
  assert_null (storage_lock (fx->st, "lock", "host h, pid parent"));
  assert_int_equal (error_get_status (), STATUS_BUSY);
  assert_non_null (strstr (error_get_message (), "host h, pid child"));

  /* Killed: its lock is taken over, and the file names the new holder. */
  kill (child, SIGKILL);
  waitpid (child, NULL, 0);
  struct storage_lock *lk = storage_lock (fx->st, "lock",
                                          "host h, pid parent");
  assert_non_null (lk);
  void *buf;
  size_t len;
  assert_int_equal (storage_get (fx->st, "lock", &buf, &len), 0);
  assert_string_equal (buf, "host h, pid parent\n");
  free (buf);
  storage_unlock (lk);

  /* Released: the name is gone and the next taker gets it at once. */
  uint64_t size;
  assert_int_equal (storage_size (fx->st, "lock", &size), 0);
  lk = storage_lock (fx->st, "lock", "again");
  assert_non_null (lk);
  storage_unlock (lk);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_open_missing_without_create, setup,
                                     teardown),
    cmocka_unit_test_setup_teardown (test_put_once_get, setup, teardown),
    cmocka_unit_test_setup_teardown (test_bad_keys, setup, teardown),
    cmocka_unit_test_setup_teardown (test_list, setup, teardown),
    cmocka_unit_test_setup_teardown (test_links_refused, setup, teardown),
    cmocka_unit_test_setup_teardown (test_lock, setup, teardown),
    cmocka_unit_test_setup_teardown (test_replace, setup, teardown),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
