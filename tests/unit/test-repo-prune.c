/* Unit tests for lib/repo-prune-apply.c: removing points of a real
 * repository (made by the qbak program, $QBAK) keeps every other point
 * reading exactly as a copy of its disk taken at backup time (qemu-img
 * compare through the repository's own backing chains), qemu-img check
 * clean, the manifests exact (tests/cli/manifest-check.py, xxhsum), and
 * `qbak verify` happy; also when the prune is killed at spread I/O calls
 * and then finished. */
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#include "qbak.h"
#include "common/error.h"
#include "lib/repo.h"
#include "fixture.h"

#define NPOINTS 8
static const char *disks[] = { "vda", "vdb" };
static char ids[NPOINTS][REPO_POINT_ID_MAX + 1];
/* Removed: the first full, points in the middle, a run of two. */
static const int removed[] = { 0, 2, 3, 5 };
#define NREMOVED (sizeof removed / sizeof removed[0])

static const char *
qbak (void)
{
  const char *q = getenv ("QBAK");
  return q ? q : "qbak";
}

/* 8 points a day apart of two disks with writes, zero writes and
 * discards between, and a copy of each disk at each point.  vda's full
 * holds 3 MiB and vdb's 64 KiB: removing the full, prune moves vda's
 * smaller incremental into the full, and vdb's smaller full into its
 * incremental. */
static void
make_repo (void)
{
  const char *d = fx_dir ();
  for (int k = 0; k < 2; k++)
    assert_int_equal (fx_run (NULL, "cd '%s' && qemu-img create -q -f qcow2 "
                              "%s.qcow2 8M && qemu-io -c 'write -P %d 0 %s' "
                              "%s.qcow2 >/dev/null", d, disks[k], k + 1,
                              k ? "64k" : "3M", disks[k]), 0);
  for (int i = 0; i < NPOINTS; i++) {
    if (i > 0)
      for (int k = 0; k < 2; k++)
        assert_int_equal (fx_run (NULL, "cd '%s' && qemu-io -c 'write -P %d "
                                  "%dk 128k' -c 'write -z %dk 64k' -c "
                                  "'discard %dk 64k' %s.qcow2 >/dev/null", d,
                                  0x20 + i * 2 + k, (i * 384) % 7000,
                                  (i * 640 + 128) % 7000,
                                  (i * 512 + 1024) % 7000, disks[k]), 0);
    assert_int_equal (fx_run (NULL, "cd '%s' && QBAK_TEST_NOW=%d '%s' backup "
                              "vda.qcow2 vdb.qcow2 repo", d,
                              1700000000 + i * 86400, qbak ()), 0);
    char *out;
    assert_int_equal (fx_run (&out, "cd '%s' && ls repo/points | sort | tail "
                              "-1", d), 0);
    out[strcspn (out, ".")] = '\0';
    snprintf (ids[i], sizeof ids[i], "%s", out);
    free (out);
    for (int k = 0; k < 2; k++)
      assert_int_equal (fx_run (NULL, "cd '%s' && cp %s.qcow2 copy-%s-%s.qcow2",
                                d, disks[k], ids[i], disks[k]), 0);
  }
}

static bool
is_removed (int i)
{
  for (size_t k = 0; k < NREMOVED; k++)
    if (removed[k] == i)
      return true;
  return false;
}

/* Every kept point of every disk reads as its copy, through the chain in
 * the repository (qemu-img compare), and its file is not corrupt. */
static void
assert_kept_points_read_right (const char *repo)
{
  for (int i = 0; i < NPOINTS; i++) {
    if (is_removed (i))
      continue;
    for (int k = 0; k < 2; k++) {
      char *out;
      int r = fx_run (&out, "cd '%s' && qemu-img compare -f qcow2 -F qcow2 "
                      "%s/disks/%s/%s.qcow2 copy-%s-%s.qcow2", fx_dir (),
                      repo, disks[k], ids[i], ids[i], disks[k]);
      if (r != 0)
        print_message ("point %s disk %s: %s\n", ids[i], disks[k], out);
      free (out);
      assert_int_equal (r, 0);
    }
  }
}

/* Remove the points at the REMOVED places of the repository at PATH
 * (which holds all NPOINTS: the ids are read from it, since a child
 * process does not share the parent's memory). */
static int
prune_in (const char *path)
{
  struct repo *r = repo_open (path, false, NULL);
  int rc = -1;
  char *v[NREMOVED];
  if (r && repo_lock (r) == 0 && repo_load_points (r) == 0 &&
      r->n_points == NPOINTS) {
    for (size_t k = 0; k < NREMOVED; k++)
      v[k] = r->points[removed[k]].id;
    rc = repo_prune_remove (r, v, NREMOVED);
  }
  if (rc < 0)
    fprintf (stderr, "prune: %s\n", qbak_get_error ());
  repo_close (r);
  return rc;
}

static int
finish_in (const char *path, bool *finished)
{
  struct repo *r = repo_open (path, false, NULL);
  int rc = -1;
  if (r && repo_lock (r) == 0 && repo_load_points (r) == 0)
    rc = repo_prune_finish_interrupted (r, finished);
  if (rc < 0)
    print_message ("finish: %s\n", qbak_get_error ());
  repo_close (r);
  return rc;
}

/* What a finished prune leaves: kept points right, removed ones gone,
 * every file clean with an exact manifest, and qbak verify agrees. */
static void
assert_pruned_files (const char *repo, bool deep)
{
  const char *d = fx_dir ();
  assert_kept_points_read_right (repo);
  char *out;
  assert_int_equal (fx_run (&out, "cd '%s' && ls %s/points | wc -l", d, repo),
                    0);
  assert_int_equal (atoi (out), NPOINTS - (int) NREMOVED);
  free (out);
  assert_int_equal (fx_run (&out, "cd '%s' && ls %s/disks/vda | grep -c "
                            "qcow2", d, repo), 0);
  assert_int_equal (atoi (out), NPOINTS - (int) NREMOVED);
  free (out);
  const char *src = getenv ("QBAK_SRCDIR");
  for (int i = 0; i < NPOINTS; i++)
    for (int k = 0; k < 2 && !is_removed (i); k++) {
      char name[256];
      snprintf (name, sizeof name, "%s/disks/%s/%s.qcow2", repo, disks[k],
                ids[i]);
      fx_assert_check_clean (fx_path (name));
      if (src && deep)
        assert_int_equal (fx_run (NULL, "cd '%s' && python3 '%s/tests/cli/"
                                  "manifest-check.py' %s/disks/%s/%s.manifest "
                                  "%s/disks/%s/%s.qcow2", d, src, repo,
                                  disks[k], ids[i], repo, disks[k], ids[i]),
                          0);
    }
  if (deep) {
    assert_int_equal (fx_run (&out, "cd '%s' && '%s' verify %s", d, qbak (),
                              repo), 0);
    free (out);
  }
  assert_int_equal (fx_run (NULL, "cd '%s' && '%s' list %s >/dev/null", d,
                            qbak (), repo), 0);
}

static void
assert_pruned (const char *repo)
{
  assert_pruned_files (repo, true);
}

static void
test_prune_keeps_every_other_point (void **state)
{
  (void) state;
  make_repo ();
  assert_int_equal (prune_in (fx_path ("repo")), 0);
  assert_pruned ("repo");
}

static int
child_main (const char *scenario, const char *path)
{
  (void) scenario;
  return prune_in (path) < 0 ? 1 : 0;
}

/* Killed at 15 I/O calls spread over the whole prune (its first and its
 * last among them): kept points read right at once, and after the next
 * run finishes the prune. */
static void
test_prune_killed_anywhere (void **state)
{
  (void) state;
  const char *d = fx_dir ();
  make_repo ();
  assert_int_equal (fx_run (NULL, "cd '%s' && cp -a repo keep", d), 0);
  assert_int_equal (fx_run (NULL, "cd '%s' && cp -a keep count", d), 0);
  unsigned long n = fx_count_io ("prune", fx_path ("count"), "any");
  assert_true (n > 20);
  unsigned long at[15];
  size_t m = 0;
  at[m++] = 1;
  for (unsigned long k = 1; k <= 13; k++)
    at[m++] = n * k / 14;
  at[m++] = n;
  for (size_t i = 0; i < m; i++) {
    assert_int_equal (fx_run (NULL, "cd '%s' && rm -rf repo && cp -a keep "
                              "repo", d), 0);
    char fp[64];
    snprintf (fp, sizeof fp, "any:%lu:abort", at[i]);
    struct fx_faults f = { .failpoint = fp };
    fx_assert_signaled (fx_child_run ("prune", fx_path ("repo"), &f),
                        SIGABRT);
    assert_kept_points_read_right ("repo");
    bool finished;
    assert_int_equal (finish_in (fx_path ("repo"), &finished), 0);
    /* Killed before its intent was written: nothing began, and a new
     * prune does it all. */
    if (!finished)
      assert_int_equal (prune_in (fx_path ("repo")), 0);
    /* The manifests and verify, which cost seconds, at a few places. */
    assert_pruned_files ("repo", i % 7 == 0);
  }
}

int
main (int argc, char **argv)
{
  if (fx_is_child (argc, argv))
    return child_main (argv[2], argv[3]);
#define T(f) cmocka_unit_test_setup_teardown (f, fx_setup, fx_teardown)
  const struct CMUnitTest tests[] = {
    T (test_prune_keeps_every_other_point),
    T (test_prune_killed_anywhere),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
