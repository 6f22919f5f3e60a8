/* Unit tests for the qcow2 refcount allocator (formats/qcow2-refcount.c)
 * and the refcount area fixpoint it shares with the backup writer's
 * finish (qcow2_refcount_area).
 *
 * QEMU is the oracle: qemu-img check must count exactly the clusters the
 * allocator handed out as leaks (refcount 1, nothing points to them),
 * find no error, and find the image clean once they are freed again,
 * whatever refcount blocks and table growth the allocations needed; an
 * image the writer finished must be clean too.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "qbak.h"
#include "helpers.h"
#include "fixture.h"
#include "common/error.h"
#include "common/fileio.h"
#include "formats/qcow2.h"
#include "formats/qcow2-writer.h"

/* ---- the fixpoint ------------------------------------------------------ */

static uint64_t
ceil_div (uint64_t a, uint64_t b)
{
  return a / b + (a % b != 0);
}

/* Whether T table clusters and B blocks at the end of N clusters cover
 * themselves (no block exists before). */
static bool
covers (uint64_t cs, uint64_t rbe, uint64_t n, uint64_t t, uint64_t b)
{
  return t >= 1 && b * rbe >= n + t + b && t * cs / 8 >= b &&
         b >= ceil_div (n + t + b, rbe);
}

/* The writer's case: the least area that covers itself and N clusters. */
static void
test_fixpoint_least (void **state)
{
  (void) state;
  static const uint32_t bits[] = { 9, 12, 16, 21 };
  static const uint32_t orders[] = { 0, 3, 4, 6 };

  for (size_t i = 0; i < sizeof bits / sizeof bits[0]; i++)
    for (size_t j = 0; j < sizeof orders / sizeof orders[0]; j++) {
      uint64_t cs = 1ULL << bits[i], rbe = cs * 8 >> orders[j];
      uint64_t per_table = cs / 8;
      uint64_t ns[] = { 0, 1, 2, rbe - 2, rbe - 1, rbe, rbe + 1,
                        rbe * per_table - 3, rbe * per_table,
                        rbe * per_table + 1, 3 * rbe * per_table + 17,
                        123456789 };
      for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
        struct qcow2_refcount_area a;
        uint64_t n = ns[k];
        qcow2_refcount_area (bits[i], orders[j], 0, n, 0, false, NULL,
                             NULL, &a);
        assert_true (covers (cs, rbe, n, a.table_clusters, a.blocks));
        /* Least: one block less or one table cluster less does not. */
        assert_false (a.blocks > 0 &&
                      covers (cs, rbe, n, a.table_clusters, a.blocks - 1));
        assert_false (covers (cs, rbe, n, a.table_clusters - 1, a.blocks));
        assert_int_equal (a.entries, a.table_clusters * per_table);
      }
    }
}

struct blocks_below {
  uint64_t limit;     /* ranges below it have a block */
};

static bool
has_block (const void *opaque, uint64_t r)
{
  const struct blocks_below *bb = opaque;
  return r < bb->limit;
}

/* The allocator's case: an area at the end of a file whose first ranges
 * have blocks, with a minimum table size and room to grow. */
static void
test_fixpoint_growth (void **state)
{
  (void) state;
  const uint32_t cb = 9, order = 4;
  const uint64_t cs = 512, rbe = cs * 8 >> order;

  for (uint64_t start = 1; start < 40 * rbe; start += 97) {
    struct blocks_below bb = { ceil_div (start, rbe) };
    uint64_t min = bb.limit + 1;
    struct qcow2_refcount_area a;
    qcow2_refcount_area (cb, order, start, start, min, true, has_block,
                         &bb, &a);
    uint64_t end = start + a.table_clusters + a.blocks;
    uint64_t ranges = ceil_div (end, rbe);
    uint64_t missing = 0;
    for (uint64_t r = start / rbe; r < ranges; r++)
      missing += !has_block (&bb, r);
    assert_int_equal (a.blocks, missing);
    assert_true (a.entries >= min);
    assert_true (a.entries >= ranges + ranges / 4);
    assert_int_equal (a.entries, a.table_clusters * cs / 8);
  }
}

/* ---- through QEMU -------------------------------------------------------- */

static int
sh_out (char *out, size_t outsz, const char *fmt, ...)
  __attribute__((format (printf, 3, 4)));
static int
sh_out (char *out, size_t outsz, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  int st = test_vsh (out, outsz, fmt, ap);
  va_end (ap);
  return st;
}

static uint64_t
json_count (const char *json, const char *key)
{
  char pat[64];
  snprintf (pat, sizeof pat, "\"%s\": ", key);
  const char *p = strstr (json, pat);
  return p ? strtoull (p + strlen (pat), NULL, 10) : 0;
}

/* qemu-img check of NAME: the leaks it counts; it must find no error. */
static uint64_t
check_leaks (const char *name)
{
  char out[16384];
  int st = sh_out (out, sizeof out, "cd '%s' && { qemu-img check "
                   "--output=json '%s' 2>/dev/null; }", fx_dir (), name);
  if (json_count (out, "corruptions") || json_count (out, "check-errors"))
    fail_msg ("qemu-img check finds errors:\n%s", out);
  uint64_t leaks = json_count (out, "leaks");
  /* 0 clean, 3 leaks only. */
  if (st != (leaks ? 3 : 0))
    fail_msg ("qemu-img check status %d:\n%s", st, out);
  return leaks;
}

struct run {
  int64_t offset;
  uint64_t bytes;
};

/* Allocate runs of clusters from a 512-byte-cluster image whose refcount
 * table covers 8 MiB: runs of one cluster up to the 255 free clusters a
 * refcount block's range holds besides the block (the allocator puts a
 * new block at the start of its range, so no run is longer), through
 * many ranges that need a new block, until the image is past what the
 * table covers and the table has grown. */
static void
test_alloc (void **state)
{
  (void) state;
  static const uint64_t sizes[] = { 1, 3, 255, 17, 200, 128 };
  struct run *runs = NULL;
  size_t nruns = 0;
  uint64_t total = 0;
  uint32_t old_table_clusters;

  const char *path = fx_path ("a.qcow2");
  test_sh ("cd '%s' && rm -f a.qcow2 && qemu-img create -q -f qcow2 "
           "-o cluster_size=512 a.qcow2 64M", fx_dir ());
  struct image *img = image_open (path, "qcow2", IMAGE_OPEN_WRITE, NULL,
                                  NULL);
  if (!img)
    fail_msg ("open: %s", error_get_message ());
  struct qcow2 *s = to_qcow2 (img);
  old_table_clusters = s->refcount_table_clusters;
  uint64_t covered = (uint64_t) old_table_clusters * 512 / 8 * 256;
  for (size_t k = 0; total < covered + 4000; k++) {
    uint64_t n = sizes[k % (sizeof sizes / sizeof sizes[0])];
    runs = realloc (runs, (nruns + 1) * sizeof *runs);
    assert_non_null (runs);
    runs[nruns].bytes = n * 512;
    runs[nruns].offset = qcow2_alloc_clusters (s, n * 512);
    if (runs[nruns].offset < 0)
      fail_msg ("alloc: %s", error_get_message ());
    assert_int_equal (runs[nruns].offset % 512, 0);
    /* A run never overlaps an earlier one. */
    for (size_t j = 0; j < nruns; j++)
      assert_true ((uint64_t) runs[nruns].offset >=
                   (uint64_t) runs[j].offset + runs[j].bytes ||
                   (uint64_t) runs[nruns].offset + runs[nruns].bytes <=
                   (uint64_t) runs[j].offset);
    /* Written, as every caller does before the next allocation: the
     * table grows at the end of the file. */
    static uint8_t zero[255 * 512];
    assert_int_equal (qbak_file_pwrite (s->base.file, zero, n * 512,
                                        (uint64_t) runs[nruns].offset), 0);
    nruns++;
    total += n;
    assert_int_equal (qcow2_refcount_flush (s), 0);
    qcow2_refcount_forget (s);
  }
  assert_true (s->refcount_table_clusters > old_table_clusters);
  image_close (img);
  /* Exactly what was handed out has refcount 1 and no user. */
  assert_int_equal (check_leaks ("a.qcow2"), total);

  img = image_open (path, "qcow2", IMAGE_OPEN_WRITE, NULL, NULL);
  if (!img)
    fail_msg ("open: %s", error_get_message ());
  s = to_qcow2 (img);
  for (size_t j = 0; j < nruns; j++)
    assert_int_equal (qcow2_free_clusters (s, (uint64_t) runs[j].offset,
                                           runs[j].bytes), 0);
  assert_int_equal (qcow2_refcount_flush (s), 0);
  image_close (img);
  assert_int_equal (check_leaks ("a.qcow2"), 0);
  free (runs);
}

/* The writer's finish lays out its refcount area with the same fixpoint:
 * an image of 512-byte clusters that needs many refcount blocks and a
 * refcount table of several clusters is clean, and has the area the
 * fixpoint computes. */
static void
test_writer_area (void **state)
{
  (void) state;
  static uint8_t data[1 << 20];
  struct qcow2_writer_opts o = { .size = 24ULL << 20, .cluster_size = 512 };

  const char *path = fx_path ("w.qcow2");
  test_sh ("rm -f '%s'", path);
  memset (data, 0x5a, sizeof data);
  struct qcow2_writer *w = qcow2_writer_create (path, &o);
  if (!w)
    fail_msg ("create: %s", error_get_message ());
  for (uint64_t off = 0; off < (20ULL << 20); off += sizeof data)
    assert_int_equal (qcow2_writer_write (w, off, data, sizeof data), 0);
  assert_int_equal (qcow2_writer_finish (w), 0);
  qcow2_writer_free (w);
  assert_int_equal (check_leaks ("w.qcow2"), 0);
  test_sh ("qemu-io -f qcow2 -c 'read -P 0x5a 0 20M' -c 'read -P 0 20M 4M' "
           "'%s' >/dev/null", path);

  /* The file ends with the refcount area the fixpoint gives for what is
   * before it. */
  size_t len;
  uint8_t *buf = test_read_file (path, &len);
  struct qcow2_header h;
  assert_int_equal (qcow2_header_decode (path, buf, len, len, &h), 0);
  uint64_t before = h.refcount_table_offset / 512;
  struct qcow2_refcount_area a;
  qcow2_refcount_area (9, 4, 0, before, 0, false, NULL, NULL, &a);
  assert_int_equal (h.refcount_table_clusters, a.table_clusters);
  assert_true (a.table_clusters > 1);
  assert_int_equal (len, (before + a.table_clusters + a.blocks) * 512);
  qcow2_header_free (&h);
  free (buf);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_fixpoint_least),
    cmocka_unit_test (test_fixpoint_growth),
    cmocka_unit_test (test_alloc),
    cmocka_unit_test (test_writer_area),
  };
  test_require_qemu ();
  return cmocka_run_group_tests (tests, fx_setup, fx_teardown);
}
