/* Every bitmap operation on the first, the last and the only bitmap of an
 * image, through libqbak: add, remove, clear, enable, disable, merge, and
 * a copy that rewrites its bitmap.  Unit tests also run in the ASan+UBSan
 * build, so the edge cases (an empty bitmap list after a remove, a
 * directory of one entry, the last entry moving) are checked for memory
 * errors there.  QEMU is the oracle: qemu-img check must be clean, and
 * qemu-img info must list the bitmaps the operation leaves, with their
 * flags. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "helpers.h"
#include "fixture.h"

/* The image under test, in the scratch directory of fixture.h. */
struct fixture {
  char img[TEST_PATH_MAX];
};

static int
setup (void **state)
{
  struct fixture *f = calloc (1, sizeof *f);
  assert_non_null (f);
  fx_setup (state);
  fx_require_bitmap_oracles ();
  snprintf (f->img, sizeof f->img, "%s", fx_path ("img.qcow2"));
  *state = f;
  return 0;
}

static int
teardown (void **state)
{
  free (*state);
  return fx_teardown (state);
}

/* A fresh image with the bitmaps NAMES (space separated), each dirtied by
 * a QEMU write. */
static void
make_image (struct fixture *f, const char *names)
{
  char list[256];
  fx_make_qcow2 ("img.qcow2", "16M", NULL);
  snprintf (list, sizeof list, "%s", names);
  for (char *save = NULL, *n = strtok_r (list, " ", &save); n;
       n = strtok_r (NULL, " ", &save))
    test_sh ("qemu-img bitmap --add '%s' '%s'", f->img, n);
  fx_qemu_io ("qcow2", f->img, "write -P 1 1M 64k", NULL);
}

/* Apply one operation to the image through the library. */
static void
apply (struct fixture *f, enum qbak_bitmap_op_kind kind, const char *name,
       const char *source)
{
  struct qbak_image *h = qbak_image_open (f->img, QBAK_OPEN_WRITE);
  if (!h)
    fail_msg ("open %s: %s", f->img, qbak_get_error ());
  const char *sources[1] = { source };
  struct qbak_bitmap_op op = { .size = sizeof op, .kind = kind, .name = name,
                               .sources = sources,
                               .n_sources = source ? 1 : 0 };
  int r = qbak_bitmap_apply (&h, 1, &op, 1);
  if (r < 0) {
    char msg[1024];
    snprintf (msg, sizeof msg, "%s", qbak_get_error ());
    qbak_image_close (h);
    fail_msg ("bitmap operation %d on '%s': %s", (int) kind, name, msg);
  }
  qbak_image_close (h);
}

/* Run a command for its output only (a diagnostic). */
static void
capture (char *out, size_t outsz, const char *fmt, ...)
  __attribute__((format (printf, 3, 4)));
static void
capture (char *out, size_t outsz, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  test_vsh (out, outsz, fmt, ap);
  va_end (ap);
}

/* QEMU's view must be clean and list exactly EXPECT: "name:flags ..."
 * with flags "auto" or "-" (disabled), in directory order. */
static void
expect_qemu (struct fixture *f, const char *expect)
{
  char out[4096];
  fx_assert_check_clean (f->img);
  int st = test_sh_status ("test \"$(qemu-img info -U --output=json '%s' | "
                           "jq -r '[.[\"format-specific\"].data.bitmaps // "
                           "[] | .[] | .name + \":\" + (if (.flags | "
                           "index(\"auto\")) then \"auto\" else \"-\" end)]"
                           " | join(\" \")')\" = '%s'", f->img, expect);
  if (st != 0) {
    capture (out, sizeof out, "qemu-img info -U '%s'", f->img);
    fail_msg ("expected bitmaps '%s', QEMU sees:\n%s", expect, out);
  }
}

/* Whether QEMU sees a dirty bit in bitmap NAME: qemu-nbd exports it,
 * nbdinfo maps it. */
static bool
qemu_dirty (struct fixture *f, const char *name)
{
  return fx_qemu_dirty_ranges (f->img, name, NULL, 0) > 0;
}

static void
test_remove_first_last_only (void **state)
{
  struct fixture *f = *state;
  make_image (f, "a b c");
  apply (f, QBAK_BITMAP_REMOVE, "a", NULL);
  expect_qemu (f, "b:auto c:auto");
  apply (f, QBAK_BITMAP_REMOVE, "c", NULL);
  expect_qemu (f, "b:auto");
  apply (f, QBAK_BITMAP_REMOVE, "b", NULL);    /* the only one */
  expect_qemu (f, "");
  apply (f, QBAK_BITMAP_ADD, "n", NULL);       /* into an empty list */
  expect_qemu (f, "n:auto");
}

static void
test_clear_first_last_only (void **state)
{
  struct fixture *f = *state;
  make_image (f, "a b c");
  apply (f, QBAK_BITMAP_CLEAR, "a", NULL);
  apply (f, QBAK_BITMAP_CLEAR, "c", NULL);
  expect_qemu (f, "a:auto b:auto c:auto");
  assert_false (qemu_dirty (f, "a"));
  assert_true (qemu_dirty (f, "b"));
  assert_false (qemu_dirty (f, "c"));
  make_image (f, "only");
  apply (f, QBAK_BITMAP_CLEAR, "only", NULL);
  expect_qemu (f, "only:auto");
  assert_false (qemu_dirty (f, "only"));
}

static void
test_enable_disable_first_last_only (void **state)
{
  struct fixture *f = *state;
  make_image (f, "a b c");
  apply (f, QBAK_BITMAP_DISABLE, "a", NULL);
  apply (f, QBAK_BITMAP_DISABLE, "c", NULL);
  expect_qemu (f, "a:- b:auto c:-");
  apply (f, QBAK_BITMAP_ENABLE, "c", NULL);
  apply (f, QBAK_BITMAP_ENABLE, "a", NULL);
  expect_qemu (f, "a:auto b:auto c:auto");
  make_image (f, "only");
  apply (f, QBAK_BITMAP_DISABLE, "only", NULL);
  expect_qemu (f, "only:-");
  apply (f, QBAK_BITMAP_ENABLE, "only", NULL);
  expect_qemu (f, "only:auto");
}

static void
test_merge_first_last_only (void **state)
{
  struct fixture *f = *state;
  make_image (f, "a b c");
  apply (f, QBAK_BITMAP_CLEAR, "a", NULL);
  apply (f, QBAK_BITMAP_CLEAR, "c", NULL);
  apply (f, QBAK_BITMAP_MERGE, "a", "b");     /* into the first */
  apply (f, QBAK_BITMAP_MERGE, "c", "a");     /* last from first */
  expect_qemu (f, "a:auto b:auto c:auto");
  assert_true (qemu_dirty (f, "a"));
  assert_true (qemu_dirty (f, "c"));
  make_image (f, "only");
  apply (f, QBAK_BITMAP_MERGE, "only", "only");   /* with itself */
  expect_qemu (f, "only:auto");
  assert_true (qemu_dirty (f, "only"));
}

/* A full backup with bitmap-mode on-success rewrites (clears) the bitmap
 * through the same store path. */
static void
copy_clears (struct fixture *f, const char *name, const char *target)
{
  const char *t = fx_path (target);
  struct qbak_copy_opts o;
  qbak_copy_opts_init (&o);
  o.source = f->img;
  o.target = t;
  o.sync = QBAK_SYNC_FULL;
  o.bitmap = name;
  o.bitmap_mode = QBAK_BITMAP_MODE_ON_SUCCESS;
  struct qbak_copy_result res;
  qbak_copy_result_init (&res);
  if (qbak_copy (&o, &res) < 0)
    fail_msg ("copy with bitmap '%s': %s", name, qbak_get_error ());
  test_sh ("qemu-img compare -q '%s' '%s'", f->img, t);
}

static void
test_copy_rewrites_first_last_only (void **state)
{
  struct fixture *f = *state;
  make_image (f, "a b c");
  copy_clears (f, "a", "t1.qcow2");
  copy_clears (f, "c", "t2.qcow2");
  expect_qemu (f, "a:auto b:auto c:auto");
  assert_false (qemu_dirty (f, "a"));
  assert_true (qemu_dirty (f, "b"));
  assert_false (qemu_dirty (f, "c"));
  make_image (f, "only");
  copy_clears (f, "only", "t3.qcow2");
  expect_qemu (f, "only:auto");
  assert_false (qemu_dirty (f, "only"));
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_remove_first_last_only, setup,
                                     teardown),
    cmocka_unit_test_setup_teardown (test_clear_first_last_only, setup,
                                     teardown),
    cmocka_unit_test_setup_teardown (test_enable_disable_first_last_only,
                                     setup, teardown),
    cmocka_unit_test_setup_teardown (test_merge_first_last_only, setup,
                                     teardown),
    cmocka_unit_test_setup_teardown (test_copy_rewrites_first_last_only,
                                     setup, teardown),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
