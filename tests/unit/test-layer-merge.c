/* Unit tests for lib/layer-merge.c: the merges prune makes, checked with
 * QEMU's tools (qemu-img compare, check, info), also when the process is
 * killed at every I/O call of a merge (QBAK_FAILPOINT abort).
 *
 * The chain: base (clusters 0-5 of 0x11, a zero cluster at 6), mid over
 * base (2-3 of 0x22, zero at 4, 9 of 0x23), top over mid (3 of 0x33, 8 of
 * 0x34), 16 clusters of 64 KiB; mid2 grows to 20 clusters. */
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
#include "formats/qcow2-writer.h"
#include "lib/job.h"
#include "fixture.h"

#define CS (64 * 1024u)
#define SIZE (16 * (uint64_t) CS)

static void
put (struct qcow2_writer *w, uint64_t cluster, uint64_t n, int byte)
{
  size_t len = (size_t) (n * CS);
  uint8_t *buf = malloc (len);
  assert_non_null (buf);
  memset (buf, byte, len);
  assert_int_equal (qcow2_writer_write (w, cluster * CS, buf, len), 0);
  free (buf);
}

static void
zero (struct qcow2_writer *w, uint64_t cluster)
{
  assert_int_equal (qcow2_writer_zero (w, cluster * CS, CS), 0);
}

static struct qcow2_writer *
make (const char *name, uint64_t size, const char *backing)
{
  struct qcow2_writer_opts o = {
    .size = size, .cluster_size = CS,
    .backing_name = backing, .backing_format = backing ? "qcow2" : NULL,
  };
  struct qcow2_writer *w = qcow2_writer_create (fx_path (name), &o);
  assert_non_null (w);
  return w;
}

static void
done (struct qcow2_writer *w)
{
  assert_int_equal (qcow2_writer_finish (w), 0);
  qcow2_writer_free (w);
}

/* base <- mid <- top, and a flat copy of each view (QEMU's reading). */
static void
make_chain (void)
{
  struct qcow2_writer *w = make ("base.qcow2", SIZE, NULL);
  put (w, 0, 6, 0x11);
  zero (w, 6);
  done (w);
  w = make ("mid.qcow2", SIZE, "base.qcow2");
  put (w, 2, 2, 0x22);
  zero (w, 4);
  put (w, 9, 1, 0x23);
  done (w);
  w = make ("top.qcow2", SIZE, "mid.qcow2");
  put (w, 3, 1, 0x33);
  put (w, 8, 1, 0x34);
  done (w);
  const char *n[] = { "base", "mid", "top" };
  for (int i = 0; i < 3; i++)
    assert_int_equal (fx_run (NULL, "cd '%s' && qemu-img convert -O raw "
                              "%s.qcow2 %s.view", fx_dir (), n[i], n[i]), 0);
}

/* FILE reads (through its chain) as the flat VIEW. */
static void
assert_reads_as (const char *file, const char *view)
{
  char *out;
  int r = fx_run (&out, "cd '%s' && qemu-img compare -F raw %s %s",
                  fx_dir (), file, view);
  if (r != 0)
    print_message ("%s\n", out);
  free (out);
  assert_int_equal (r, 0);
}

static char *
backing_of (const char *file)
{
  char *out;
  assert_int_equal (fx_run (&out, "cd '%s' && qemu-img info --output=json "
                            "%s | jq -r '.\"backing-filename\" // \"none\"'",
                            fx_dir (), file), 0);
  out[strcspn (out, "\n")] = '\0';
  return out;
}

/* Removing mid: its clusters that top does not hold move into top, whose
 * backing becomes base; top reads as before. */
static void
test_fold_down_keeps_the_view (void **state)
{
  (void) state;
  make_chain ();
  assert_int_equal (layer_merge (fx_path ("mid.qcow2"), fx_path ("top.qcow2"),
                                 true, "base.qcow2", "qcow2"), 0);
  fx_assert_check_clean (fx_path ("top.qcow2"));
  char *b = backing_of ("top.qcow2");
  assert_string_equal (b, "base.qcow2");
  free (b);
  assert_reads_as ("top.qcow2", "top.view");
  /* top's own 0x33 won over mid's 0x22 at cluster 3. */
  assert_int_equal (fx_run (NULL, "cd '%s' && qemu-io -r -f qcow2 -c "
                            "'read -P 0x33 %u %u' top.qcow2 | grep -q "
                            "'read '", fx_dir (), 3 * CS, CS), 0);
}

/* Removing base (a full): top's clusters go into it over its own, it loses
 * its backing, and reads as top did. */
static void
test_fold_up_keeps_the_view (void **state)
{
  (void) state;
  make_chain ();
  assert_int_equal (layer_merge (fx_path ("mid.qcow2"), fx_path ("base.qcow2"),
                                 false, NULL, NULL), 0);
  fx_assert_check_clean (fx_path ("base.qcow2"));
  char *b = backing_of ("base.qcow2");
  assert_string_equal (b, "none");
  free (b);
  assert_reads_as ("base.qcow2", "mid.view");
  /* And top, now over the merged file, still reads as it did. */
  assert_int_equal (fx_run (NULL, "cd '%s' && mv base.qcow2 mid.qcow2",
                            fx_dir ()), 0);
  assert_reads_as ("top.qcow2", "top.view");
}

/* A child grown past its parent's size: the full it is merged into grows. */
static void
test_fold_up_grows (void **state)
{
  (void) state;
  make_chain ();
  struct qcow2_writer *w = make ("mid2.qcow2", SIZE + 4 * CS, "base.qcow2");
  put (w, 18, 1, 0x44);
  done (w);
  assert_int_equal (fx_run (NULL, "cd '%s' && qemu-img convert -O raw "
                            "mid2.qcow2 mid2.view", fx_dir ()), 0);
  assert_int_equal (layer_merge (fx_path ("mid2.qcow2"),
                                 fx_path ("base.qcow2"), false, NULL, NULL),
                    0);
  fx_assert_check_clean (fx_path ("base.qcow2"));
  assert_reads_as ("base.qcow2", "mid2.view");
}

static int
child_main (const char *scenario, const char *dir)
{
  char from[4096], into[4096];
  snprintf (from, sizeof from, "%s/mid.qcow2", dir);
  snprintf (into, sizeof into, "%s/%s.qcow2", dir,
            strcmp (scenario, "down") == 0 ? "top" : "base");
  int r = strcmp (scenario, "down") == 0
    ? layer_merge (from, into, true, "base.qcow2", "qcow2")
    : layer_merge (from, into, false, NULL, NULL);
  if (r < 0)
    fprintf (stderr, "child: %s\n", qbak_get_error ());
  return r < 0 ? 1 : 0;
}

/* Killed at every I/O call of a merge: the receiving file is clean and
 * reads either as before with its old backing file, or as after with the
 * new one; never anything else. */
static void
crash_everywhere (const char *scenario, const char *into,
                  const char *old_backing, const char *new_backing,
                  const char *view_before, const char *view_after)
{
  make_chain ();
  assert_int_equal (fx_run (NULL, "cd '%s' && mkdir -p keep && cp *.qcow2 "
                            "keep/", fx_dir ()), 0);
  unsigned long n = fx_count_io (scenario, fx_dir (), "any");
  assert_true (n > 5);
  for (unsigned long k = 1; k <= n; k++) {
    assert_int_equal (fx_run (NULL, "cd '%s' && cp keep/*.qcow2 .",
                              fx_dir ()), 0);
    char fp[64];
    snprintf (fp, sizeof fp, "any:%lu:abort", k);
    struct fx_faults f = { .failpoint = fp };
    fx_assert_signaled (fx_child_run (scenario, fx_dir (), &f), SIGABRT);
    fx_assert_no_corruption (fx_path (into));
    char *b = backing_of (into);
    bool old = fx_run_quiet (NULL, "cd '%s' && qemu-img compare -F raw %s %s",
                       fx_dir (), into, view_before) == 0 &&
               strcmp (b, old_backing) == 0;
    if (!old) {
      assert_string_equal (b, new_backing);
      assert_reads_as (into, view_after);
    }
    free (b);
  }
}

static void
test_fold_down_crash_safe (void **state)
{
  (void) state;
  crash_everywhere ("down", "top.qcow2", "mid.qcow2", "base.qcow2",
                    "top.view", "top.view");
}

static void
test_fold_up_crash_safe (void **state)
{
  (void) state;
  crash_everywhere ("up", "base.qcow2", "none", "none", "base.view",
                    "mid.view");
}

int
main (int argc, char **argv)
{
  if (fx_is_child (argc, argv))
    return child_main (argv[2], argv[3]);
#define T(f) cmocka_unit_test_setup_teardown (f, fx_setup, fx_teardown)
  const struct CMUnitTest tests[] = {
    T (test_fold_down_keeps_the_view),
    T (test_fold_up_keeps_the_view),
    T (test_fold_up_grows),
    T (test_fold_down_crash_safe),
    T (test_fold_up_crash_safe),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
