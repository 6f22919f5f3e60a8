/* bitmaps/qcow2-bitmap.c and qcow2-bitmap-store.c, below the library:
 * the persistent bitmaps of images QEMU made (qemu-img bitmap, qemu-io
 * writes) load with the names, granularities and flags qemu-img info
 * reports and the dirty ranges qemu-nbd + nbdinfo export; a bitmap
 * changed and stored through the store path is what QEMU then reads,
 * and qemu-img check finds the image clean; each malformed directory
 * field is refused, on load and on store, with the image left as it
 * was. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#include "common/error.h"
#include "bitmaps/dirty-bitmap.h"
#include "bitmaps/qcow2-bitmap.h"
#include "formats/image.h"
#include "fixture.h"

#define KiB (1024ULL)
#define MiB (1024ULL * 1024)

/* The on-disk format's constants, as the qcow2 specification fixes them
 * and QEMU's block/qcow2-bitmap.c uses them: pinned at compile time, as
 * images written by either must mean the same to the other. */
_Static_assert (BME_FLAG_IN_USE == 1u, "in_use is flag bit 0");
_Static_assert (BME_FLAG_AUTO == 2u, "auto is flag bit 1");
_Static_assert (BME_RESERVED_FLAGS == ~(BME_FLAG_IN_USE | BME_FLAG_AUTO),
                "every other flag bit is reserved");
_Static_assert (BME_TYPE_DIRTY == 1, "type 1 is the dirty tracking bitmap");
_Static_assert (BME_MIN_GRANULARITY_BITS == 9 &&
                BME_MAX_GRANULARITY_BITS == 31,
                "granularity from 512 bytes to 2 GiB");
_Static_assert (BME_MAX_NAME_SIZE == 1023, "names of at most 1023 bytes");
_Static_assert (QCOW2_MAX_BITMAPS == 65535, "at most 65535 bitmaps");

/* The test image: 16 MiB, 64 KiB clusters, and three bitmaps.
 *   a  64 KiB granularity (the default), enabled: every write
 *   b  4 KiB, disabled after the first write: only that one
 *   c  512 B, added disabled: never dirtied, all clean */
#define IMG_SIZE (16 * MiB)

static const char *
make_image (void)
{
  const char *img = fx_make_qcow2 ("img.qcow2", "16M", NULL);
  assert_int_equal (fx_run (NULL, "qemu-img bitmap --add '%s' a && "
                            "qemu-img bitmap --add -g 4k '%s' b", img, img),
                    0);
  fx_qemu_io ("qcow2", img, "write -P 1 1M 64k", "write -P 2 5M 6k", NULL);
  assert_int_equal (fx_run (NULL, "qemu-img bitmap --disable '%s' b && "
                            "qemu-img bitmap --add --disable -g 512 '%s' c",
                            img, img), 0);
  fx_qemu_io ("qcow2", img, "write -P 3 9000 1000", "write -P 4 15M 1M",
              NULL);
  return img;
}

static struct image *
open_image (const char *path, bool write)
{
  struct image *img = image_open (path, "qcow2",
                                  write ? IMAGE_OPEN_WRITE : 0, NULL, NULL);
  if (!img)
    fail_msg ("image_open %s: %s", path, error_get_message ());
  return img;
}

static void
load (struct image *img, struct qcow2_bitmap_list *list)
{
  if (qcow2_bitmaps_load (img, list) < 0)
    fail_msg ("qcow2_bitmaps_load: %s", error_get_message ());
}

static struct qcow2_bitmap *
find (struct qcow2_bitmap_list *list, const char *name)
{
  for (size_t i = 0; i < list->n; i++)
    if (strcmp (list->v[i].name, name) == 0)
      return &list->v[i];
  fail_msg ("no bitmap '%s' loaded", name);
  return NULL;
}

/* ---- Against qemu-img info --------------------------------------------- */

/* Names, granularities and flags, one bitmap a line in directory order,
 * as "NAME GRANULARITY FLAG,FLAG": qemu-img info's, and the loaded
 * list's in the same words. */
static void
expect_info (const char *path, const struct qcow2_bitmap_list *list)
{
  char *qemu, mine[4096] = "";
  size_t len = 0;

  assert_int_equal (fx_run (&qemu,
    "qemu-img info -U --output=json '%s' | jq -r "
    "'.[\"format-specific\"].data.bitmaps // [] | .[] | "
    "\"\\(.name) \\(.granularity) \\(.flags | join(\",\"))\"'", path), 0);
  for (size_t i = 0; i < list->n; i++) {
    const struct qcow2_bitmap *b = &list->v[i];
    int n = snprintf (mine + len, sizeof mine - len, "%s %llu %s%s%s\n",
                      b->name, 1ULL << b->granularity_bits,
                      b->in_use ? "in-use" : "",
                      b->in_use && b->enabled ? "," : "",
                      b->enabled ? "auto" : "");
    assert_true (n > 0 && (size_t) n < sizeof mine - len);
    len += (size_t) n;
    /* in_use and auto are the only flags QEMU knows; the loader keeps
     * the word and the booleans in step. */
    assert_int_equal (b->flags, (b->in_use ? BME_FLAG_IN_USE : 0) |
                                (b->enabled ? BME_FLAG_AUTO : 0));
  }
  if (strcmp (qemu, mine) != 0)
    fail_msg ("qemu-img info sees:\n%sqbak loaded:\n%s", qemu, mine);
  free (qemu);
}

static void
test_load_matches_qemu_info (void **state)
{
  (void) state;
  const char *path = make_image ();
  struct image *img = open_image (path, false);
  struct qcow2_bitmap_list list;

  load (img, &list);
  assert_int_equal (list.n, 3);
  expect_info (path, &list);
  assert_true (find (&list, "a")->enabled);
  assert_false (find (&list, "b")->enabled);
  assert_false (find (&list, "c")->enabled);
  assert_int_equal (find (&list, "c")->granularity_bits, 9);
  qcow2_bitmaps_free (&list);
  image_close (img);
}

/* ---- Against qemu-nbd + nbdinfo ---------------------------------------- */

#define MAX_RANGES 64

/* BM's dirty ranges, as nbdinfo reports them: maximal runs. */
static size_t
ranges_of (const struct dirty_bitmap *bm, uint64_t (*r)[2], size_t max)
{
  size_t n = 0;
  int64_t d = dirty_bitmap_next_dirty (bm, 0);

  while (d >= 0) {
    int64_t c = dirty_bitmap_next_clean (bm, (uint64_t) d);
    uint64_t end = c < 0 ? dirty_bitmap_size (bm) : (uint64_t) c;
    assert_true (n < max);
    r[n][0] = (uint64_t) d;
    r[n][1] = end - (uint64_t) d;
    n++;
    d = c < 0 ? -1 : dirty_bitmap_next_dirty (bm, end);
  }
  return n;
}

/* QEMU's dirty ranges of NAME in PATH are exactly BM's. */
static void
expect_map (const char *path, const char *name, const struct dirty_bitmap *bm)
{
  uint64_t mine[MAX_RANGES][2], qemu[MAX_RANGES][2];
  size_t n = ranges_of (bm, mine, MAX_RANGES);
  size_t q = fx_qemu_dirty_ranges (path, name, qemu, MAX_RANGES);

  for (size_t i = 0; i < n || i < q; i++)
    if (i >= n || i >= q || mine[i][0] != qemu[i][0] ||
        mine[i][1] != qemu[i][1])
      fail_msg ("bitmap '%s', dirty range %zu: qbak %s%" PRIu64 "+%" PRIu64
                ", QEMU %s%" PRIu64 "+%" PRIu64, name, i,
                i < n ? "" : "(none) ", i < n ? mine[i][0] : 0,
                i < n ? mine[i][1] : 0, i < q ? "" : "(none) ",
                i < q ? qemu[i][0] : 0, i < q ? qemu[i][1] : 0);
}

static void
load_data (struct image *img, struct qcow2_bitmap *b)
{
  if (qcow2_bitmap_load_data (img, b) < 0)
    fail_msg ("bitmap '%s': %s", b->name, error_get_message ());
}

static void
test_load_matches_qemu_map (void **state)
{
  (void) state;
  const char *path = make_image ();
  struct image *img = open_image (path, false);
  struct qcow2_bitmap_list list;

  fx_require_bitmap_oracles ();
  load (img, &list);
  for (size_t i = 0; i < list.n; i++) {
    struct qcow2_bitmap *b = &list.v[i];
    uint64_t streamed;
    load_data (img, b);
    expect_map (path, b->name, b->bm);
    /* The streaming count the info path uses agrees with the data. */
    assert_int_equal (qcow2_bitmap_dirty_bytes (img, b, &streamed), 0);
    assert_int_equal (streamed, dirty_bitmap_dirty_bytes (b->bm));
  }
  /* What the writes above must have left, so that an oracle and qbak
   * agreeing on nothing cannot pass. */
  assert_true (dirty_bitmap_test (find (&list, "a")->bm, 15 * MiB));
  assert_true (dirty_bitmap_test (find (&list, "b")->bm, 5 * MiB + 4 * KiB));
  assert_false (dirty_bitmap_test (find (&list, "b")->bm, 15 * MiB));
  assert_int_equal (dirty_bitmap_count (find (&list, "c")->bm), 0);
  qcow2_bitmaps_free (&list);
  image_close (img);
}

/* ---- Storing ------------------------------------------------------------ */

/* The state that keeps every bitmap of LIST as it is on disk. */
static struct qcow2_bitmap_state *
state_of (const struct qcow2_bitmap_list *list)
{
  struct qcow2_bitmap_state *st = calloc (list->n, sizeof *st);
  assert_non_null (st);
  for (size_t i = 0; i < list->n; i++) {
    const struct qcow2_bitmap *b = &list->v[i];
    st[i] = (struct qcow2_bitmap_state) {
      .name = b->name, .granularity_bits = b->granularity_bits,
      .flags = b->flags, .table_offset = b->table_offset,
      .table_size = b->table_size,
    };
  }
  return st;
}

static int
commit (struct image *img, const struct qcow2_bitmap_list *list,
        const struct qcow2_bitmap_state *st, size_t n)
{
  struct qcow2_bitmap_pending *pending;
  if (qcow2_bitmaps_commit (img, list, st, n, &pending) < 0)
    return -1;
  qcow2_bitmaps_finish (img, pending);
  return 0;
}

/* Bitmap b gets new data (a dirty run across a cluster of the table and
 * a cleared one) and c is made dirty all over; a keeps its table.  QEMU
 * then reads exactly the new data, keeps a as it was, and finds the
 * image clean (the old tables freed, nothing leaked). */
static void
test_store_changed_bitmap (void **state)
{
  (void) state;
  const char *path = make_image ();
  struct image *img = open_image (path, true);
  struct qcow2_bitmap_list list;
  struct dirty_bitmap *nb, *nc, *old_a;
  struct qcow2_bitmap_state *st;

  fx_require_bitmap_oracles ();
  load (img, &list);
  load_data (img, find (&list, "a"));
  load_data (img, find (&list, "b"));
  load_data (img, find (&list, "c"));
  old_a = dirty_bitmap_copy (find (&list, "a")->bm);
  nb = dirty_bitmap_copy (find (&list, "b")->bm);
  nc = dirty_bitmap_copy (find (&list, "c")->bm);
  assert_non_null (old_a);
  assert_non_null (nb);
  assert_non_null (nc);
  dirty_bitmap_clear (nb, 5 * MiB, 8 * KiB);
  dirty_bitmap_set (nb, 2 * MiB - 12 * KiB, 3 * MiB);
  dirty_bitmap_set (nc, 0, IMG_SIZE);
  st = state_of (&list);
  for (size_t i = 0; i < list.n; i++) {
    if (strcmp (st[i].name, "b") == 0)
      st[i].bm = nb, st[i].rewrite = true;
    if (strcmp (st[i].name, "c") == 0)
      st[i].bm = nc, st[i].rewrite = true;
  }
  if (commit (img, &list, st, list.n) < 0)
    fail_msg ("commit: %s", error_get_message ());
  free (st);
  qcow2_bitmaps_free (&list);
  image_close (img);

  fx_assert_check_clean (path);
  expect_map (path, "a", old_a);
  expect_map (path, "b", nb);
  expect_map (path, "c", nc);

  /* And qbak reads back what it stored, flags unchanged. */
  img = open_image (path, false);
  load (img, &list);
  expect_info (path, &list);
  assert_false (find (&list, "b")->enabled);
  load_data (img, find (&list, "b"));
  assert_int_equal (dirty_bitmap_count (find (&list, "b")->bm),
                    dirty_bitmap_count (nb));
  qcow2_bitmaps_free (&list);
  image_close (img);
  dirty_bitmap_free (old_a);
  dirty_bitmap_free (nb);
  dirty_bitmap_free (nc);
}

/* A new state that breaks one of QEMU's limits is refused before anything
 * is written: the file is byte for byte what it was. */
static void
expect_store_refused (const char *what, void (*spoil) (struct qcow2_bitmap_state *))
{
  const char *path = make_image ();
  const char *copy = fx_path ("before.qcow2");
  struct image *img;
  struct qcow2_bitmap_list list;
  struct qcow2_bitmap_state *st;

  assert_int_equal (fx_run (NULL, "cp '%s' '%s'", path, copy), 0);
  img = open_image (path, true);
  load (img, &list);
  st = state_of (&list);
  spoil (&st[1]);
  if (commit (img, &list, st, list.n) == 0)
    fail_msg ("a state with %s was stored", what);
  assert_int_equal (error_get_status (), STATUS_INVALID);
  free (st);
  qcow2_bitmaps_free (&list);
  image_close (img);
  assert_int_equal (fx_run (NULL, "cmp '%s' '%s'", path, copy), 0);
  fx_assert_check_clean (path);
}

static void
spoil_flags (struct qcow2_bitmap_state *b)
{
  b->flags |= 1u << 2;
}

static void
spoil_granularity (struct qcow2_bitmap_state *b)
{
  b->granularity_bits = 8;
}

static char long_name[BME_MAX_NAME_SIZE + 2];

static void
spoil_name (struct qcow2_bitmap_state *b)
{
  memset (long_name, 'n', BME_MAX_NAME_SIZE + 1);
  long_name[BME_MAX_NAME_SIZE + 1] = '\0';
  b->name = long_name;
}

static void
test_store_refuses_reserved_flags (void **state)
{
  (void) state;
  expect_store_refused ("a reserved flag", spoil_flags);
}

static void
test_store_refuses_bad_granularity (void **state)
{
  (void) state;
  expect_store_refused ("granularity bits 8", spoil_granularity);
}

static void
test_store_refuses_long_name (void **state)
{
  (void) state;
  expect_store_refused ("a 1024-byte name", spoil_name);
}

/* ---- Malformed directories ---------------------------------------------- */

static uint64_t
be (const uint8_t *p, int n)
{
  uint64_t v = 0;
  for (int i = 0; i < n; i++)
    v = v << 8 | p[i];
  return v;
}

/* The file offset of the first bitmap directory entry of the qcow2 PATH,
 * found from the header's bitmaps extension (0x23852875) by this test's
 * own reading, not qbak's. */
static uint64_t
first_entry (const char *path)
{
  uint8_t h[4096];
  int fd = open (path, O_RDONLY);
  assert_true (fd >= 0);
  assert_int_equal (pread (fd, h, sizeof h, 0), (ssize_t) sizeof h);
  close (fd);
  assert_int_equal (be (h + 4, 4), 3);          /* version 3 */
  for (uint64_t off = be (h + 100, 4); off + 8 <= sizeof h; ) {
    uint64_t type = be (h + off, 4), len = be (h + off + 4, 4);
    if (type == 0)
      break;
    if (type == 0x23852875 && len >= 24 && off + 8 + 24 <= sizeof h)
      return be (h + off + 8 + 16, 8);
    off += 8 + ((len + 7) & ~7ULL);
  }
  fail_msg ("%s: no bitmaps extension", path);
  return 0;
}

static void
poke (const char *path, uint64_t off, const void *buf, size_t len)
{
  int fd = open (path, O_WRONLY);
  assert_true (fd >= 0);
  assert_int_equal (pwrite (fd, buf, len, (off_t) off), (ssize_t) len);
  assert_int_equal (close (fd), 0);
}

/* PATH, with its directory entry spoiled, is refused by QEMU (it cannot
 * open it, so no data is read under a wrong reading) and by the loader
 * with STATUS_INVALID and a message containing WHY. */
static void
expect_load_refused (const char *path, const char *why)
{
  struct image *img = open_image (path, false);
  struct qcow2_bitmap_list list;

  assert_int_not_equal (fx_run_quiet (NULL, "qemu-io -r -f qcow2 "
                                      "-c 'read 0 512' '%s'", path), 0);
  if (qcow2_bitmaps_load (img, &list) == 0)
    fail_msg ("%s: loaded despite %s", path, why);
  assert_int_equal (error_get_status (), STATUS_INVALID);
  if (!strstr (error_get_message (), why))
    fail_msg ("the error does not say '%s': %s", why, error_get_message ());
  image_close (img);
}

static void
test_load_refuses_reserved_flags (void **state)
{
  (void) state;
  const char *path = fx_make_qcow2 ("flags.qcow2", "1M", NULL);
  uint8_t flags[4] = { 0, 0, 0, 4 | BME_FLAG_AUTO };

  assert_int_equal (fx_run (NULL, "qemu-img bitmap --add '%s' x", path), 0);
  poke (path, first_entry (path) + 12, flags, sizeof flags);
  expect_load_refused (path, "reserved flag bits");
}

static void
test_load_refuses_bad_granularity (void **state)
{
  (void) state;
  const char *path = fx_make_qcow2 ("granularity.qcow2", "1M", NULL);
  uint8_t bits = 32;

  assert_int_equal (fx_run (NULL, "qemu-img bitmap --add '%s' x", path), 0);
  poke (path, first_entry (path) + 17, &bits, 1);
  expect_load_refused (path, "granularity bits 32");
}

/* A name of 1023 bytes, QEMU's longest, takes 24 + 1023 bytes padded to
 * 1048; a name_size of 1024 still fits that entry, so only the name's
 * length is wrong. */
static void
test_load_refuses_long_name (void **state)
{
  (void) state;
  const char *path = fx_make_qcow2 ("name.qcow2", "1M", NULL);
  char name[BME_MAX_NAME_SIZE + 1];
  uint8_t size[2] = { 1024 >> 8, 1024 & 0xff };

  memset (name, 'n', BME_MAX_NAME_SIZE);
  name[BME_MAX_NAME_SIZE] = '\0';
  assert_int_equal (fx_run (NULL, "qemu-img bitmap --add '%s' '%s'", path,
                            name), 0);
  poke (path, first_entry (path) + 18, size, sizeof size);
  expect_load_refused (path, "name too long");
}

#define T(f) cmocka_unit_test_setup_teardown (f, fx_setup, fx_teardown)

int
main (void)
{
  const struct CMUnitTest tests[] = {
    T (test_load_matches_qemu_info),
    T (test_load_matches_qemu_map),
    T (test_store_changed_bitmap),
    T (test_store_refuses_reserved_flags),
    T (test_store_refuses_bad_granularity),
    T (test_store_refuses_long_name),
    T (test_load_refuses_reserved_flags),
    T (test_load_refuses_bad_granularity),
    T (test_load_refuses_long_name),
  };
  return cmocka_run_group_tests_name ("bitmap-codec", tests, NULL, NULL);
}
