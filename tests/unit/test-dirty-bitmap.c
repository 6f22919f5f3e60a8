/* Unit tests for bitmaps/dirty-bitmap.c, the in-memory two-level dirty
 * bitmap: one cmocka test per behaviour, so a failure names what broke.
 * Offsets are guest bytes; "bit k" is granule k. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "bitmaps/dirty-bitmap.h"
#include "qbak.h"

#define ARRAY_SIZE(a) (sizeof (a) / sizeof ((a)[0]))
#define KiB 1024ULL
#define MiB (1024ULL * KiB)
#define TiB (1024ULL * 1024ULL * MiB)

/* Bits per summary bit: one summary bit covers one 64-bit word. */
#define WORD_BITS 64ULL
#define SUMMARY_WORD_BITS (64ULL * 64ULL)

static const uint64_t granularities[] = {
  512, 1 * KiB, 4 * KiB, 64 * KiB, 1 * MiB, 2 * MiB,
};

static struct dirty_bitmap *
create_ok (uint64_t size, uint64_t gran)
{
  struct dirty_bitmap *bm = dirty_bitmap_create (size, gran);
  if (!bm)
    fail_msg ("dirty_bitmap_create (%llu, %llu): %s",
              (unsigned long long) size, (unsigned long long) gran,
              qbak_get_error ());
  return bm;
}

/* Every bit in [first, end) is set and every other bit of the disk is
 * clear: checked through test() at both ends of each granule. */
static void
assert_exactly_bits (const struct dirty_bitmap *bm, uint64_t first,
                     uint64_t end)
{
  uint64_t g = dirty_bitmap_granularity (bm);
  uint64_t size = dirty_bitmap_size (bm);
  for (uint64_t off = 0; off < size; off += g) {
    uint64_t bit = off / g;
    bool want = bit >= first && bit < end;
    uint64_t last = off + g - 1 < size ? off + g - 1 : size - 1;
    if (dirty_bitmap_test (bm, off) != want ||
        dirty_bitmap_test (bm, last) != want)
      fail_msg ("bit %llu: expected %s", (unsigned long long) bit,
                want ? "set" : "clear");
  }
  assert_int_equal (dirty_bitmap_count (bm), end - first);
}

/* ---- create --------------------------------------------------------- */

static void
test_create_rejects_bad_granularity (void **state)
{
  (void) state;
  static const uint64_t bad[] = { 0, 1, 256, 511, 513, 768, 3000, 65537 };
  for (size_t i = 0; i < ARRAY_SIZE (bad); i++) {
    qbak_clear_error ();
    struct dirty_bitmap *bm = dirty_bitmap_create (1 * MiB, bad[i]);
    if (bm)
      fail_msg ("granularity %llu accepted", (unsigned long long) bad[i]);
    assert_int_equal (qbak_get_status (), QBAK_STATUS_INVALID);
    assert_non_null (strstr (qbak_get_error (),
                             "invalid bitmap granularity"));
  }
}

static void
test_create_reports_size_and_granularity (void **state)
{
  (void) state;
  for (size_t i = 0; i < ARRAY_SIZE (granularities); i++) {
    struct dirty_bitmap *bm = create_ok (10 * MiB + 7, granularities[i]);
    assert_int_equal (dirty_bitmap_size (bm), 10 * MiB + 7);
    assert_int_equal (dirty_bitmap_granularity (bm), granularities[i]);
    assert_int_equal (dirty_bitmap_count (bm), 0);
    assert_int_equal (dirty_bitmap_dirty_bytes (bm), 0);
    dirty_bitmap_free (bm);
  }
  dirty_bitmap_free (NULL);   /* accepts NULL */
}

static void
test_empty_disk (void **state)
{
  (void) state;
  struct dirty_bitmap *bm = create_ok (0, 64 * KiB);
  dirty_bitmap_set (bm, 0, 1 * MiB);
  assert_int_equal (dirty_bitmap_count (bm), 0);
  assert_int_equal (dirty_bitmap_dirty_bytes (bm), 0);
  assert_int_equal (dirty_bitmap_stream_bytes (bm), 0);
  assert_int_equal (dirty_bitmap_next_dirty (bm, 0), -1);
  assert_int_equal (dirty_bitmap_next_clean (bm, 0), -1);
  assert_false (dirty_bitmap_test (bm, 0));
  dirty_bitmap_free (bm);
}

/* ---- set / clear / test --------------------------------------------- */

/* One byte set in granule 5 dirties exactly granule 5, at every
 * granularity. */
static void
test_set_one_byte_each_granularity (void **state)
{
  (void) state;
  for (size_t i = 0; i < ARRAY_SIZE (granularities); i++) {
    uint64_t g = granularities[i];
    struct dirty_bitmap *bm = create_ok (200 * g, g);
    dirty_bitmap_set (bm, 5 * g + g / 2, 1);
    assert_true (dirty_bitmap_test (bm, 5 * g));
    assert_true (dirty_bitmap_test (bm, 5 * g + g - 1));
    assert_false (dirty_bitmap_test (bm, 5 * g - 1));
    assert_false (dirty_bitmap_test (bm, 6 * g));
    assert_int_equal (dirty_bitmap_count (bm), 1);
    dirty_bitmap_free (bm);
  }
}

/* Ranges are rounded out to whole granules: {offset, len} in units of
 * G/16 (so every granularity sees the same shape), expected bit range. */
static const struct {
  uint64_t offset16, len16;   /* in sixteenths of a granule */
  uint64_t first, end;        /* expected set bits [first, end) */
} round_cases[] = {
  { 0, 1, 0, 1 },
  { 0, 16, 0, 1 },
  { 0, 17, 0, 2 },
  { 15, 2, 0, 2 },
  { 16, 16, 1, 2 },
  { 16, 17, 1, 3 },
  { 1, 47, 0, 3 },
  { 17, 14, 1, 2 },
  { 63 * 16 + 15, 2, 63, 65 },          /* across a word boundary */
  { 4095 * 16, 32, 4095, 4097 },        /* across a summary boundary */
  { 10 * 16 + 3, 100 * 16, 10, 111 },   /* several words */
};

static void
test_set_rounds_out (void **state)
{
  (void) state;
  for (size_t gi = 0; gi < ARRAY_SIZE (granularities); gi++) {
    uint64_t g = granularities[gi];
    for (size_t i = 0; i < ARRAY_SIZE (round_cases); i++) {
      struct dirty_bitmap *bm = create_ok (5000 * g, g);
      dirty_bitmap_set (bm, round_cases[i].offset16 * g / 16,
                        round_cases[i].len16 * g / 16);
      assert_exactly_bits (bm, round_cases[i].first, round_cases[i].end);
      dirty_bitmap_free (bm);
    }
  }
}

static void
test_clear_rounds_out (void **state)
{
  (void) state;
  uint64_t g = 4 * KiB, nbits = 5000;
  for (size_t i = 0; i < ARRAY_SIZE (round_cases); i++) {
    struct dirty_bitmap *bm = create_ok (nbits * g, g);
    dirty_bitmap_set (bm, 0, nbits * g);
    dirty_bitmap_clear (bm, round_cases[i].offset16 * g / 16,
                        round_cases[i].len16 * g / 16);
    uint64_t first = round_cases[i].first, end = round_cases[i].end;
    assert_int_equal (dirty_bitmap_count (bm), nbits - (end - first));
    for (uint64_t b = 0; b < nbits; b++)
      if (dirty_bitmap_test (bm, b * g) != (b < first || b >= end))
        fail_msg ("case %zu: bit %llu wrong", i, (unsigned long long) b);
    dirty_bitmap_free (bm);
  }
}

static void
test_set_clear_zero_length_is_noop (void **state)
{
  (void) state;
  struct dirty_bitmap *bm = create_ok (1 * MiB, 64 * KiB);
  dirty_bitmap_set (bm, 64 * KiB, 0);
  assert_int_equal (dirty_bitmap_count (bm), 0);
  dirty_bitmap_set (bm, 0, 1 * MiB);
  dirty_bitmap_clear (bm, 64 * KiB, 0);
  assert_int_equal (dirty_bitmap_count (bm), 16);
  dirty_bitmap_free (bm);
}

static void
test_set_twice_counts_once (void **state)
{
  (void) state;
  struct dirty_bitmap *bm = create_ok (100 * MiB, 64 * KiB);
  dirty_bitmap_set (bm, 0, 10 * MiB);
  dirty_bitmap_set (bm, 5 * MiB, 10 * MiB);
  assert_int_equal (dirty_bitmap_count (bm), 15 * 16);
  dirty_bitmap_clear (bm, 20 * MiB, 10 * MiB);   /* clean: no change */
  assert_int_equal (dirty_bitmap_count (bm), 15 * 16);
  dirty_bitmap_free (bm);
}

/* Ranges are clamped at the end of the disk; offsets past it are
 * ignored.  Disk: 10 granules and 100 bytes (11 bits). */
static void
test_set_clamped_at_disk_end (void **state)
{
  (void) state;
  static const struct {
    uint64_t offset_g, offset_b, len;  /* offset = offset_g*G + offset_b */
    uint64_t first, end;
  } cases[] = {
    { 9, 0, UINT64_MAX, 9, 11 },
    { 10, 50, 1000000, 10, 11 },
    { 0, 0, UINT64_MAX, 0, 11 },
    { 10, 99, 1, 10, 11 },
    { 10, 100, 1, 0, 0 },                /* the first byte past the end */
    { 11, 0, 1 * MiB, 0, 0 },
    { 0, UINT64_MAX - 10, 100, 0, 0 },   /* offset near 2^64 */
  };
  uint64_t g = 64 * KiB, size = 10 * g + 100;
  for (size_t i = 0; i < ARRAY_SIZE (cases); i++) {
    struct dirty_bitmap *bm = create_ok (size, g);
    dirty_bitmap_set (bm, cases[i].offset_g * g + cases[i].offset_b,
                      cases[i].len);
    assert_exactly_bits (bm, cases[i].first, cases[i].end);
    assert_false (dirty_bitmap_test (bm, size));
    assert_false (dirty_bitmap_test (bm, UINT64_MAX));
    dirty_bitmap_free (bm);
  }
}

static void
test_clear_clamped_at_disk_end (void **state)
{
  (void) state;
  uint64_t g = 512, size = 10 * g + 100;
  struct dirty_bitmap *bm = create_ok (size, g);
  dirty_bitmap_set (bm, 0, size);
  dirty_bitmap_clear (bm, size, UINT64_MAX);     /* past the end: nothing */
  assert_int_equal (dirty_bitmap_count (bm), 11);
  dirty_bitmap_clear (bm, 9 * g, UINT64_MAX);
  assert_exactly_bits (bm, 0, 9);
  dirty_bitmap_free (bm);
}

/* ---- count and dirty_bytes ------------------------------------------ */

static void
test_count_and_dirty_bytes (void **state)
{
  (void) state;
  static const struct {
    uint64_t size, gran, offset, len;
    uint64_t count, bytes;
  } cases[] = {
    /* Whole granules. */
    { 1 * MiB, 64 * KiB, 0, 1, 1, 64 * KiB },
    { 1 * MiB, 64 * KiB, 0, 1 * MiB, 16, 1 * MiB },
    { 1 * MiB, 512, 1000, 100, 2, 1024 },
    /* A partial last granule counts whole, as QEMU's dirty count
     * (bdrv_get_dirty_count) does: dirty_bytes may exceed the disk. */
    { 640 * KiB + 100, 64 * KiB, 640 * KiB, 1, 1, 64 * KiB },
    { 640 * KiB + 100, 64 * KiB, 0, UINT64_MAX, 11, 704 * KiB },
    { 640 * KiB + 100, 64 * KiB, 0, 1, 1, 64 * KiB },
    /* A disk smaller than one granule. */
    { 1000, 2 * MiB, 0, 1, 1, 2 * MiB },
    { 3 * MiB, 2 * MiB, 2 * MiB, 1, 1, 2 * MiB },
    { 3 * MiB, 2 * MiB, 0, 3 * MiB, 2, 4 * MiB },
  };
  for (size_t i = 0; i < ARRAY_SIZE (cases); i++) {
    struct dirty_bitmap *bm = create_ok (cases[i].size, cases[i].gran);
    dirty_bitmap_set (bm, cases[i].offset, cases[i].len);
    if (dirty_bitmap_count (bm) != cases[i].count ||
        dirty_bitmap_dirty_bytes (bm) != cases[i].bytes)
      fail_msg ("case %zu: count %llu bytes %llu, expected %llu %llu", i,
                (unsigned long long) dirty_bitmap_count (bm),
                (unsigned long long) dirty_bitmap_dirty_bytes (bm),
                (unsigned long long) cases[i].count,
                (unsigned long long) cases[i].bytes);
    dirty_bitmap_free (bm);
  }
}

/* ---- next_dirty / next_clean ---------------------------------------- */

/* Bits next to word (64) and summary (4096, 4096*64) boundaries. */
static const uint64_t boundary_bits[] = {
  0, 1, 62, 63, 64, 65, 127, 128,
  4095, 4096, 4097, 8191, 8192,
  SUMMARY_WORD_BITS * 64 - 1, SUMMARY_WORD_BITS * 64,
  SUMMARY_WORD_BITS * 64 + 1, SUMMARY_WORD_BITS * 64 + 4096,
};
/* Enough bits for all of them, and a partial last word. */
#define BOUNDARY_NBITS (SUMMARY_WORD_BITS * 64 + 2 * 4096 + 5)

static void
test_next_dirty_single_bit (void **state)
{
  (void) state;
  uint64_t g = 512, size = BOUNDARY_NBITS * g;
  for (size_t i = 0; i < ARRAY_SIZE (boundary_bits); i++) {
    uint64_t bit = boundary_bits[i], off = bit * g;
    struct dirty_bitmap *bm = create_ok (size, g);
    dirty_bitmap_set (bm, off, 1);
    assert_int_equal (dirty_bitmap_next_dirty (bm, 0), off);
    assert_int_equal (dirty_bitmap_next_dirty (bm, off), off);
    /* Inside the dirty granule: the offset itself. */
    assert_int_equal (dirty_bitmap_next_dirty (bm, off + 17), off + 17);
    if (bit > 0)
      assert_int_equal (dirty_bitmap_next_dirty (bm, off - 1), off);
    assert_int_equal (dirty_bitmap_next_dirty (bm, off + g), -1);
    dirty_bitmap_free (bm);
  }
}

static void
test_next_clean_single_bit (void **state)
{
  (void) state;
  uint64_t g = 512, size = BOUNDARY_NBITS * g;
  for (size_t i = 0; i < ARRAY_SIZE (boundary_bits); i++) {
    uint64_t bit = boundary_bits[i], off = bit * g;
    struct dirty_bitmap *bm = create_ok (size, g);
    dirty_bitmap_set (bm, 0, size);
    dirty_bitmap_clear (bm, off, 1);
    assert_int_equal (dirty_bitmap_next_clean (bm, 0), off);
    assert_int_equal (dirty_bitmap_next_clean (bm, off), off);
    assert_int_equal (dirty_bitmap_next_clean (bm, off + 17), off + 17);
    if (bit > 0)
      assert_int_equal (dirty_bitmap_next_clean (bm, off - 1), off);
    assert_int_equal (dirty_bitmap_next_clean (bm, off + g), -1);
    /* And the dirty side of the same bitmap. */
    assert_int_equal (dirty_bitmap_next_dirty (bm, off),
                      off + g < size ? (int64_t) (off + g) : -1);
    dirty_bitmap_free (bm);
  }
}

/* A dirty run [a, b): next_clean from inside it lands on b, across word
 * and summary boundaries. */
static void
test_next_clean_ends_run (void **state)
{
  (void) state;
  static const struct { uint64_t first, end; } runs[] = {
    { 0, 64 }, { 0, 65 }, { 60, 70 }, { 63, 64 }, { 64, 128 },
    { 4000, 4096 }, { 4000, 4097 }, { 4095, 8193 },
    { 1, SUMMARY_WORD_BITS * 64 }, { 100, SUMMARY_WORD_BITS * 64 + 1 },
  };
  uint64_t g = 512, size = BOUNDARY_NBITS * g;
  for (size_t i = 0; i < ARRAY_SIZE (runs); i++) {
    struct dirty_bitmap *bm = create_ok (size, g);
    dirty_bitmap_set (bm, runs[i].first * g, (runs[i].end - runs[i].first) * g);
    assert_int_equal (dirty_bitmap_next_dirty (bm, 0), runs[i].first * g);
    assert_int_equal (dirty_bitmap_next_clean (bm, runs[i].first * g),
                      runs[i].end * g);
    assert_int_equal (dirty_bitmap_next_dirty (bm, runs[i].end * g), -1);
    assert_int_equal (dirty_bitmap_count (bm), runs[i].end - runs[i].first);
    dirty_bitmap_free (bm);
  }
}

static void
test_next_dirty_none (void **state)
{
  (void) state;
  uint64_t g = 64 * KiB, size = 10 * g + 100;
  struct dirty_bitmap *bm = create_ok (size, g);
  static const uint64_t from[] = { 0, 1, 5 * 64 * KiB, 10 * 64 * KiB,
                                   10 * 64 * KiB + 99 };
  for (size_t i = 0; i < ARRAY_SIZE (from); i++) {
    assert_int_equal (dirty_bitmap_next_dirty (bm, from[i]), -1);
    assert_int_equal (dirty_bitmap_next_clean (bm, from[i]), from[i]);
  }
  /* At or past the end: -1 for both. */
  assert_int_equal (dirty_bitmap_next_dirty (bm, size), -1);
  assert_int_equal (dirty_bitmap_next_clean (bm, size), -1);
  assert_int_equal (dirty_bitmap_next_clean (bm, UINT64_MAX), -1);
  /* Set then cleared again: the summary must not keep it findable. */
  dirty_bitmap_set (bm, 3 * g, 1);
  dirty_bitmap_clear (bm, 3 * g, 1);
  assert_int_equal (dirty_bitmap_next_dirty (bm, 0), -1);
  dirty_bitmap_free (bm);
}

static void
test_next_at_last_bit (void **state)
{
  (void) state;
  /* A partial last granule (bit 10), and a disk of whole words. */
  static const struct { uint64_t size, gran, last; } cases[] = {
    { 10 * 64 * KiB + 100, 64 * KiB, 10 },
    { 128 * 512, 512, 127 },
    { 4096 * 512, 512, 4095 },
    { 4097 * 512 - 1, 512, 4096 },
  };
  for (size_t i = 0; i < ARRAY_SIZE (cases); i++) {
    uint64_t g = cases[i].gran, last_off = cases[i].last * g;
    struct dirty_bitmap *bm = create_ok (cases[i].size, g);
    dirty_bitmap_set (bm, last_off, 1);
    assert_int_equal (dirty_bitmap_next_dirty (bm, 0), last_off);
    assert_int_equal (dirty_bitmap_next_dirty (bm, cases[i].size - 1),
                      cases[i].size - 1);
    assert_int_equal (dirty_bitmap_next_clean (bm, last_off), -1);
    assert_int_equal (dirty_bitmap_next_clean (bm, 0), 0);
    /* All dirty: no clean granule anywhere (bits past the disk in the
     * last word must not count as clean). */
    dirty_bitmap_set (bm, 0, cases[i].size);
    assert_int_equal (dirty_bitmap_next_clean (bm, 0), -1);
    assert_int_equal (dirty_bitmap_count (bm), cases[i].last + 1);
    dirty_bitmap_free (bm);
  }
}

/* ---- merge ---------------------------------------------------------- */

static void
test_merge_same_granularity (void **state)
{
  (void) state;
  uint64_t g = 512, size = BOUNDARY_NBITS * g;
  struct dirty_bitmap *dst = create_ok (size, g);
  struct dirty_bitmap *src = create_ok (size, g);
  static const uint64_t dst_bits[] = { 1, 64, 5000 };
  static const uint64_t src_bits[] = { 1, 2, 4095, SUMMARY_WORD_BITS * 64 };
  for (size_t i = 0; i < ARRAY_SIZE (dst_bits); i++)
    dirty_bitmap_set (dst, dst_bits[i] * g, 1);
  for (size_t i = 0; i < ARRAY_SIZE (src_bits); i++)
    dirty_bitmap_set (src, src_bits[i] * g, 1);
  assert_int_equal (dirty_bitmap_merge (dst, src), 0);
  static const uint64_t want[] = { 1, 2, 64, 4095, 5000,
                                   SUMMARY_WORD_BITS * 64 };
  uint64_t from = 0;
  for (size_t i = 0; i < ARRAY_SIZE (want); i++) {
    int64_t off = dirty_bitmap_next_dirty (dst, from);
    assert_int_equal (off, want[i] * g);
    from = (uint64_t) off + g;
  }
  assert_int_equal (dirty_bitmap_next_dirty (dst, from), -1);
  assert_int_equal (dirty_bitmap_count (dst), ARRAY_SIZE (want));
  assert_int_equal (dirty_bitmap_count (src), ARRAY_SIZE (src_bits));
  dirty_bitmap_free (dst);
  dirty_bitmap_free (src);
}

/* Each dirty granule of SRC dirties every DST granule it overlaps. */
static void
test_merge_different_granularity (void **state)
{
  (void) state;
  static const struct {
    uint64_t size, dst_gran, src_gran, src_off, src_len;
    uint64_t first, end;   /* expected DST bits */
  } cases[] = {
    /* Finer source: one 512-byte granule dirties one 64k granule. */
    { 1 * MiB, 64 * KiB, 512, 70000, 1, 1, 2 },
    { 1 * MiB, 64 * KiB, 512, 64 * KiB - 512, 1024, 0, 2 },
    /* Coarser source: one 64k granule dirties 128 granules of 512. */
    { 1 * MiB, 512, 64 * KiB, 64 * KiB, 1, 128, 256 },
    /* Coarser source, partial last granule: clamped to the disk. */
    { 100 * KiB, 512, 64 * KiB, 64 * KiB, 1, 128, 200 },
    { 1 * MiB + 1000, 4 * KiB, 2 * MiB, 0, 1, 0, 257 },
  };
  for (size_t i = 0; i < ARRAY_SIZE (cases); i++) {
    struct dirty_bitmap *dst = create_ok (cases[i].size, cases[i].dst_gran);
    struct dirty_bitmap *src = create_ok (cases[i].size, cases[i].src_gran);
    dirty_bitmap_set (src, cases[i].src_off, cases[i].src_len);
    assert_int_equal (dirty_bitmap_merge (dst, src), 0);
    assert_exactly_bits (dst, cases[i].first, cases[i].end);
    dirty_bitmap_free (dst);
    dirty_bitmap_free (src);
  }
}

static void
test_merge_size_mismatch_fails (void **state)
{
  (void) state;
  struct dirty_bitmap *dst = create_ok (1 * MiB, 64 * KiB);
  struct dirty_bitmap *src = create_ok (2 * MiB, 64 * KiB);
  dirty_bitmap_set (src, 0, 2 * MiB);
  qbak_clear_error ();
  assert_int_equal (dirty_bitmap_merge (dst, src), -1);
  assert_int_equal (qbak_get_status (), QBAK_STATUS_INVALID);
  assert_non_null (strstr (qbak_get_error (),
                           "cannot merge bitmaps of different sizes"));
  assert_int_equal (dirty_bitmap_count (dst), 0);
  dirty_bitmap_free (dst);
  dirty_bitmap_free (src);
}

/* ---- serialize / deserialize (qcow2 encoding, LSB first) ------------- */

static void
test_stream_bytes (void **state)
{
  (void) state;
  static const struct { uint64_t size, gran, bytes; } cases[] = {
    { 0, 512, 0 }, { 1, 512, 1 }, { 8 * 512, 512, 1 }, { 8 * 512 + 1, 512, 2 },
    { 1 * MiB, 64 * KiB, 2 }, { 1 * TiB, 64 * KiB, 2 * MiB },
  };
  for (size_t i = 0; i < ARRAY_SIZE (cases); i++) {
    struct dirty_bitmap *bm = create_ok (cases[i].size, cases[i].gran);
    assert_int_equal (dirty_bitmap_stream_bytes (bm), cases[i].bytes);
    dirty_bitmap_free (bm);
  }
}

/* Bit k goes to byte k/8, mask 1 << (k%8). */
static void
test_serialize_lsb_first (void **state)
{
  (void) state;
  static const struct { uint64_t bit, byte; uint8_t mask; } cases[] = {
    { 0, 0, 0x01 }, { 1, 0, 0x02 }, { 7, 0, 0x80 }, { 8, 1, 0x01 },
    { 9, 1, 0x02 }, { 63, 7, 0x80 }, { 64, 8, 0x01 }, { 100, 12, 0x10 },
  };
  uint64_t g = 512, nbits = 200;
  for (size_t i = 0; i < ARRAY_SIZE (cases); i++) {
    struct dirty_bitmap *bm = create_ok (nbits * g, g);
    dirty_bitmap_set (bm, cases[i].bit * g, 1);
    uint8_t out[32];
    memset (out, 0xee, sizeof out);
    dirty_bitmap_serialize (bm, 0, 25, out);
    for (uint64_t b = 0; b < 25; b++)
      if (out[b] != (b == cases[i].byte ? cases[i].mask : 0))
        fail_msg ("bit %llu: byte %llu is 0x%02x", (unsigned long long)
                  cases[i].bit, (unsigned long long) b, out[b]);
    assert_int_equal (out[25], 0xee);   /* nothing past LEN written */
    dirty_bitmap_free (bm);
  }
}

static void
test_deserialize_lsb_first (void **state)
{
  (void) state;
  uint64_t g = 512;
  struct dirty_bitmap *bm = create_ok (200 * g, g);
  const uint8_t in[2] = { 0x01, 0x02 };   /* bits 0 and 9 */
  dirty_bitmap_deserialize (bm, 0, sizeof in, in);
  assert_int_equal (dirty_bitmap_count (bm), 2);
  assert_true (dirty_bitmap_test (bm, 0));
  assert_true (dirty_bitmap_test (bm, 9 * g));
  /* At a stream offset: byte 5 mask 0x80 is bit 47. */
  const uint8_t one = 0x80;
  dirty_bitmap_deserialize (bm, 5, 1, &one);
  assert_true (dirty_bitmap_test (bm, 47 * g));
  assert_int_equal (dirty_bitmap_count (bm), 3);
  dirty_bitmap_free (bm);
}

/* Deterministic pseudo-random numbers (a 64-bit LCG, Knuth's MMIX). */
static uint64_t
lcg_next (uint64_t *s)
{
  *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
  return *s >> 33;
}

static void
test_serialize_round_trip (void **state)
{
  (void) state;
  uint64_t g = 4 * KiB, nbits = SUMMARY_WORD_BITS * 3 + 77;
  struct dirty_bitmap *a = create_ok (nbits * g, g);
  uint64_t seed = 42;
  for (int i = 0; i < 3000; i++) {
    uint64_t bit = lcg_next (&seed) % nbits;
    dirty_bitmap_set (a, bit * g, (lcg_next (&seed) % 4) * g + 1);
  }
  size_t n = dirty_bitmap_stream_bytes (a);
  assert_int_equal (n, (nbits + 7) / 8);
  uint8_t *whole = malloc (n), *piece = malloc (n);
  assert_non_null (whole);
  assert_non_null (piece);
  dirty_bitmap_serialize (a, 0, n, whole);

  /* Serializing in odd-sized pieces gives the same stream. */
  for (size_t off = 0; off < n; off += 13) {
    size_t len = n - off < 13 ? n - off : 13;
    dirty_bitmap_serialize (a, off, len, piece + off);
  }
  assert_memory_equal (whole, piece, n);

  /* Deserialize in pieces into a fresh bitmap: the same bits. */
  struct dirty_bitmap *b = create_ok (nbits * g, g);
  for (size_t off = 0; off < n; off += 1000) {
    size_t len = n - off < 1000 ? n - off : 1000;
    dirty_bitmap_deserialize (b, off, len, whole + off);
  }
  assert_int_equal (dirty_bitmap_count (b), dirty_bitmap_count (a));
  for (uint64_t bit = 0; bit < nbits; bit++)
    if (dirty_bitmap_test (a, bit * g) != dirty_bitmap_test (b, bit * g))
      fail_msg ("bit %llu differs after the round trip",
                (unsigned long long) bit);
  dirty_bitmap_serialize (b, 0, n, piece);
  assert_memory_equal (whole, piece, n);
  free (whole);
  free (piece);
  dirty_bitmap_free (a);
  dirty_bitmap_free (b);
}

static void
test_serialize_past_stream_is_zero (void **state)
{
  (void) state;
  struct dirty_bitmap *bm = create_ok (10 * 512, 512);   /* 2 bytes */
  dirty_bitmap_set (bm, 0, 10 * 512);
  uint8_t out[24];
  memset (out, 0xee, sizeof out);
  dirty_bitmap_serialize (bm, 0, sizeof out, out);
  assert_int_equal (out[0], 0xff);
  assert_int_equal (out[1], 0x03);
  for (size_t i = 2; i < sizeof out; i++)
    assert_int_equal (out[i], 0);
  memset (out, 0xee, sizeof out);
  dirty_bitmap_serialize (bm, 1000, 16, out);
  for (size_t i = 0; i < 16; i++)
    assert_int_equal (out[i], 0);
  dirty_bitmap_free (bm);
}

/* 10 bits (2 stream bytes): the 6 high bits of byte 1 and any later bytes
 * lie past the disk and are ignored. */
static void
test_deserialize_ignores_bits_past_disk (void **state)
{
  (void) state;
  uint64_t g = 64 * KiB;
  struct dirty_bitmap *bm = create_ok (10 * g, g);
  uint8_t in[16];
  memset (in, 0xff, sizeof in);
  dirty_bitmap_deserialize (bm, 0, sizeof in, in);
  assert_int_equal (dirty_bitmap_count (bm), 10);
  assert_int_equal (dirty_bitmap_dirty_bytes (bm), 10 * g);
  assert_int_equal (dirty_bitmap_next_clean (bm, 0), -1);
  dirty_bitmap_deserialize (bm, 100, 4, in);   /* wholly past the end */
  assert_int_equal (dirty_bitmap_count (bm), 10);
  uint8_t out[2];
  dirty_bitmap_serialize (bm, 0, 2, out);
  assert_int_equal (out[0], 0xff);
  assert_int_equal (out[1], 0x03);
  dirty_bitmap_free (bm);
}

static void
test_deserialize_ones (void **state)
{
  (void) state;
  static const struct {
    uint64_t start, len;
    uint64_t first, end;
  } cases[] = {
    { 0, 1, 0, 8 },
    { 1, 2, 8, 24 },
    { 3, 10, 24, 30 },      /* clamped: the disk has 30 bits */
    { 4, 1, 0, 0 },         /* wholly past the end */
    { 0, 0, 0, 0 },
  };
  uint64_t g = 512;
  for (size_t i = 0; i < ARRAY_SIZE (cases); i++) {
    struct dirty_bitmap *bm = create_ok (30 * g, g);
    dirty_bitmap_deserialize_ones (bm, cases[i].start, cases[i].len);
    assert_exactly_bits (bm, cases[i].first, cases[i].end);
    dirty_bitmap_free (bm);
  }
}

/* ---- copy / clear_all ----------------------------------------------- */

static void
test_copy (void **state)
{
  (void) state;
  uint64_t g = 1 * KiB, size = BOUNDARY_NBITS * g + 300;
  struct dirty_bitmap *a = create_ok (size, g);
  for (size_t i = 0; i < ARRAY_SIZE (boundary_bits); i++)
    dirty_bitmap_set (a, boundary_bits[i] * g, 1);
  dirty_bitmap_set (a, size - 1, 1);
  struct dirty_bitmap *b = dirty_bitmap_copy (a);
  assert_non_null (b);
  assert_int_equal (dirty_bitmap_size (b), size);
  assert_int_equal (dirty_bitmap_granularity (b), g);
  assert_int_equal (dirty_bitmap_count (b), dirty_bitmap_count (a));
  assert_int_equal (dirty_bitmap_dirty_bytes (b), dirty_bitmap_dirty_bytes (a));
  int64_t oa = dirty_bitmap_next_dirty (a, 0);
  int64_t ob = dirty_bitmap_next_dirty (b, 0);
  while (oa >= 0) {
    assert_int_equal (oa, ob);
    oa = dirty_bitmap_next_dirty (a, (uint64_t) oa + g);
    ob = dirty_bitmap_next_dirty (b, (uint64_t) ob + g);
  }
  assert_int_equal (ob, -1);
  /* Independent storage. */
  dirty_bitmap_clear_all (b);
  dirty_bitmap_set (b, 3 * g, 1);
  assert_false (dirty_bitmap_test (a, 3 * g));
  assert_true (dirty_bitmap_test (a, 0));
  assert_int_equal (dirty_bitmap_count (a), ARRAY_SIZE (boundary_bits) + 1);
  dirty_bitmap_free (a);
  dirty_bitmap_free (b);
}

static void
test_clear_all (void **state)
{
  (void) state;
  uint64_t g = 512, size = BOUNDARY_NBITS * g;
  struct dirty_bitmap *bm = create_ok (size, g);
  for (size_t i = 0; i < ARRAY_SIZE (boundary_bits); i++)
    dirty_bitmap_set (bm, boundary_bits[i] * g, 1);
  dirty_bitmap_clear_all (bm);
  assert_int_equal (dirty_bitmap_count (bm), 0);
  assert_int_equal (dirty_bitmap_dirty_bytes (bm), 0);
  assert_int_equal (dirty_bitmap_next_dirty (bm, 0), -1);
  for (size_t i = 0; i < ARRAY_SIZE (boundary_bits); i++)
    assert_false (dirty_bitmap_test (bm, boundary_bits[i] * g));
  /* The whole stored form is zero too. */
  size_t nbytes = (size_t) dirty_bitmap_stream_bytes (bm);
  uint8_t *stream = malloc (nbytes);
  assert_non_null (stream);
  memset (stream, 0xff, nbytes);
  dirty_bitmap_serialize (bm, 0, nbytes, stream);
  for (size_t i = 0; i < nbytes; i++)
    assert_int_equal (stream[i], 0);
  free (stream);
  /* Still usable. */
  dirty_bitmap_set (bm, 4096 * g, 1);
  assert_int_equal (dirty_bitmap_next_dirty (bm, 0), 4096 * g);
  assert_int_equal (dirty_bitmap_count (bm), 1);
  dirty_bitmap_free (bm);
}

/* ---- scale ---------------------------------------------------------- */

/* 1 TiB at 64k: 2^24 bits, 4096 summary words.  1000 scattered bits, one
 * per stride at a pseudo-random position: a next_dirty walk visits exactly
 * those, in order, which only a correct summary level can give. */
static void
test_large_disk_scattered_walk (void **state)
{
  (void) state;
  enum { NDIRTY = 1000 };
  uint64_t g = 64 * KiB, size = 1 * TiB, nbits = size / g;
  uint64_t stride = nbits / NDIRTY;
  static uint64_t want[NDIRTY];
  uint64_t seed = 7;
  struct dirty_bitmap *bm = create_ok (size, g);
  for (int i = 0; i < NDIRTY; i++) {
    want[i] = (uint64_t) i * stride + lcg_next (&seed) % stride;
    dirty_bitmap_set (bm, want[i] * g + lcg_next (&seed) % g, 1);
  }
  assert_int_equal (dirty_bitmap_count (bm), NDIRTY);
  assert_int_equal (dirty_bitmap_dirty_bytes (bm), NDIRTY * g);

  int n = 0;
  for (int64_t off = dirty_bitmap_next_dirty (bm, 0); off >= 0;
       off = dirty_bitmap_next_dirty (bm, (uint64_t) off + g)) {
    if (n >= NDIRTY) {
      fail_msg ("walk found more than %d dirty granules", NDIRTY);
      break;     /* fail_msg does not return; this tells the compiler */
    }
    if ((uint64_t) off != want[n] * g)
      fail_msg ("dirty granule %d: found bit %llu, expected %llu", n,
                (unsigned long long) off / g, (unsigned long long) want[n]);
    /* Each is a run of one (the strides keep them apart). */
    if (n + 1 < NDIRTY && want[n + 1] != want[n] + 1)
      assert_int_equal (dirty_bitmap_next_clean (bm, (uint64_t) off),
                        off + (int64_t) g);
    n++;
  }
  assert_int_equal (n, NDIRTY);

  /* Clearing them all leaves the summary clean again. */
  for (int i = 0; i < NDIRTY; i++)
    dirty_bitmap_clear (bm, want[i] * g, g);
  assert_int_equal (dirty_bitmap_count (bm), 0);
  assert_int_equal (dirty_bitmap_next_dirty (bm, 0), -1);
  dirty_bitmap_free (bm);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_create_rejects_bad_granularity),
    cmocka_unit_test (test_create_reports_size_and_granularity),
    cmocka_unit_test (test_empty_disk),
    cmocka_unit_test (test_set_one_byte_each_granularity),
    cmocka_unit_test (test_set_rounds_out),
    cmocka_unit_test (test_clear_rounds_out),
    cmocka_unit_test (test_set_clear_zero_length_is_noop),
    cmocka_unit_test (test_set_twice_counts_once),
    cmocka_unit_test (test_set_clamped_at_disk_end),
    cmocka_unit_test (test_clear_clamped_at_disk_end),
    cmocka_unit_test (test_count_and_dirty_bytes),
    cmocka_unit_test (test_next_dirty_single_bit),
    cmocka_unit_test (test_next_clean_single_bit),
    cmocka_unit_test (test_next_clean_ends_run),
    cmocka_unit_test (test_next_dirty_none),
    cmocka_unit_test (test_next_at_last_bit),
    cmocka_unit_test (test_merge_same_granularity),
    cmocka_unit_test (test_merge_different_granularity),
    cmocka_unit_test (test_merge_size_mismatch_fails),
    cmocka_unit_test (test_stream_bytes),
    cmocka_unit_test (test_serialize_lsb_first),
    cmocka_unit_test (test_deserialize_lsb_first),
    cmocka_unit_test (test_serialize_round_trip),
    cmocka_unit_test (test_serialize_past_stream_is_zero),
    cmocka_unit_test (test_deserialize_ignores_bits_past_disk),
    cmocka_unit_test (test_deserialize_ones),
    cmocka_unit_test (test_copy),
    cmocka_unit_test (test_clear_all),
    cmocka_unit_test (test_large_disk_scattered_walk),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
