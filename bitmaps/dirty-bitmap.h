/* The in-memory dirty bitmap: one bit per GRANULARITY bytes of a disk of
 * SIZE bytes.
 *
 * Two levels: the bit words, and a summary with one bit per word that may
 * be non-zero, so find-next-set skips clean regions 4096 bytes of disk
 * address space per summary bit... in practice 64 words at a time: scans
 * cost O(dirty + size/(granularity*4096)), which keeps a 1 TiB disk with a
 * few dirty clusters cheap (planning costs what is dirty, not the disk's
 * size).  All offsets are guest bytes. */
#ifndef QBAK_BITMAPS_DIRTY_BITMAP_H
#define QBAK_BITMAPS_DIRTY_BITMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct dirty_bitmap;

/* GRANULARITY must be a power of two >= 512.  NULL on error. */
struct dirty_bitmap *dirty_bitmap_create (uint64_t size, uint64_t granularity);
void dirty_bitmap_free (struct dirty_bitmap *bm);   /* accepts NULL */
struct dirty_bitmap *dirty_bitmap_copy (const struct dirty_bitmap *bm);

uint64_t dirty_bitmap_size (const struct dirty_bitmap *bm);
uint64_t dirty_bitmap_granularity (const struct dirty_bitmap *bm);

/* Set or clear every granule touched by [OFFSET, +LEN) (clamped to the
 * disk). */
void dirty_bitmap_set (struct dirty_bitmap *bm, uint64_t offset, uint64_t len);
void dirty_bitmap_clear (struct dirty_bitmap *bm, uint64_t offset,
                         uint64_t len);
void dirty_bitmap_clear_all (struct dirty_bitmap *bm);
bool dirty_bitmap_test (const struct dirty_bitmap *bm, uint64_t offset);

/* Number of set bits, and the bytes they cover, counting whole granules
 * as QEMU's dirty count does. */
uint64_t dirty_bitmap_count (const struct dirty_bitmap *bm);
uint64_t dirty_bitmap_dirty_bytes (const struct dirty_bitmap *bm);

/* First dirty (or clean) granule at or after OFFSET, as the byte offset of
 * its start (or OFFSET itself, rounded down, if it is dirty/clean);
 * -1 if none before the end of the disk. */
int64_t dirty_bitmap_next_dirty (const struct dirty_bitmap *bm,
                                 uint64_t offset);
int64_t dirty_bitmap_next_clean (const struct dirty_bitmap *bm,
                                 uint64_t offset);

/* DST |= SRC.  Sizes must be equal; granularities may differ (each dirty
 * granule of SRC dirties what it overlaps in DST). */
int dirty_bitmap_merge (struct dirty_bitmap *dst,
                        const struct dirty_bitmap *src);

/* The qcow2 on-disk encoding: a byte stream, bit k of the
 * bitmap in byte k/8 at bit k%8 (LSB first). */
uint64_t dirty_bitmap_stream_bytes (const struct dirty_bitmap *bm);
/* Copy stream bytes [START, +LEN) into OUT (bytes past the stream: 0). */
void dirty_bitmap_serialize (const struct dirty_bitmap *bm, uint64_t start,
                             size_t len, uint8_t *out);
/* Load stream bytes [START, +LEN) from IN (bits past the disk ignored). */
void dirty_bitmap_deserialize (struct dirty_bitmap *bm, uint64_t start,
                               size_t len, const uint8_t *in);
/* Set every bit of stream bytes [START, +LEN) (an all-ones table entry). */
void dirty_bitmap_deserialize_ones (struct dirty_bitmap *bm, uint64_t start,
                                    size_t len);

#endif
