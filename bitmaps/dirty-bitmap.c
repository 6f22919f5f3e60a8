/* In-memory dirty bitmap: see dirty-bitmap.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bitmaps/dirty-bitmap.h"
#include "common/bigalloc.h"
#include "common/error.h"

struct dirty_bitmap {
  uint64_t size;
  unsigned gran_bits;
  uint64_t nbits;
  uint64_t nwords;
  uint64_t *words;
  uint64_t nsum;
  uint64_t *summary;   /* bit w: words[w] may be non-zero */
  uint64_t count;
};

static unsigned
ctz64 (uint64_t v)
{
  return (unsigned) __builtin_ctzll (v);
}

struct dirty_bitmap *
dirty_bitmap_create (uint64_t size, uint64_t granularity)
{
  if (granularity < 512 || (granularity & (granularity - 1))) {
    set_invalid ("invalid bitmap granularity %llu: must be a power of two "
                 ">= 512", (unsigned long long) granularity);
    return NULL;
  }
  struct dirty_bitmap *bm = calloc (1, sizeof *bm);
  if (!bm) {
    set_nomem ();
    return NULL;
  }
  bm->size = size;
  bm->gran_bits = ctz64 (granularity);
  bm->nbits = (size >> bm->gran_bits) + ((size & (granularity - 1)) != 0);
  bm->nwords = (bm->nbits + 63) / 64;
  bm->nsum = (bm->nwords + 63) / 64;
  /* Zero pages are mapped lazily: untouched words cost no memory. */
  bm->words = big_zalloc (bm->nwords * 8);
  bm->summary = calloc (bm->nsum ? bm->nsum : 1, 8);
  if (!bm->words || !bm->summary) {
    dirty_bitmap_free (bm);
    set_nomem ();
    return NULL;
  }
  return bm;
}

void
dirty_bitmap_free (struct dirty_bitmap *bm)
{
  if (!bm)
    return;
  big_free (bm->words, bm->nwords * 8);
  free (bm->summary);
  free (bm);
}

struct dirty_bitmap *
dirty_bitmap_copy (const struct dirty_bitmap *bm)
{
  struct dirty_bitmap *c = dirty_bitmap_create (bm->size,
                                                1ULL << bm->gran_bits);
  if (!c)
    return NULL;
  for (uint64_t s = 0; s < bm->nsum; s++) {
    uint64_t sw = bm->summary[s];
    while (sw) {
      uint64_t w = s * 64 + ctz64 (sw);
      sw &= sw - 1;
      c->words[w] = bm->words[w];
    }
    c->summary[s] = bm->summary[s];
  }
  c->count = bm->count;
  return c;
}

uint64_t
dirty_bitmap_size (const struct dirty_bitmap *bm)
{
  return bm->size;
}

uint64_t
dirty_bitmap_granularity (const struct dirty_bitmap *bm)
{
  return 1ULL << bm->gran_bits;
}

/* Bit range [*first, *end) touched by the byte range; false if empty. */
static bool
bit_range (const struct dirty_bitmap *bm, uint64_t offset, uint64_t len,
           uint64_t *first, uint64_t *end)
{
  if (len == 0 || offset >= bm->size)
    return false;
  if (len > bm->size - offset)
    len = bm->size - offset;
  *first = offset >> bm->gran_bits;
  *end = ((offset + len - 1) >> bm->gran_bits) + 1;
  return true;
}

static void
set_bits (struct dirty_bitmap *bm, uint64_t first, uint64_t end)
{
  while (first < end) {
    uint64_t w = first / 64;
    unsigned b = first % 64;
    uint64_t n = end - first < 64 - b ? end - first : 64 - b;
    uint64_t mask = (n == 64 ? ~0ULL : ((1ULL << n) - 1)) << b;
    bm->count += (uint64_t) __builtin_popcountll (mask & ~bm->words[w]);
    bm->words[w] |= mask;
    bm->summary[w / 64] |= 1ULL << (w % 64);
    first += n;
  }
}

static void
clear_bits (struct dirty_bitmap *bm, uint64_t first, uint64_t end)
{
  while (first < end) {
    uint64_t w = first / 64;
    unsigned b = first % 64;
    uint64_t n = end - first < 64 - b ? end - first : 64 - b;
    if (n == 64 && b == 0 && !(bm->summary[w / 64] & (1ULL << (w % 64)))) {
      first += 64;            /* already clean */
      continue;
    }
    uint64_t mask = (n == 64 ? ~0ULL : ((1ULL << n) - 1)) << b;
    bm->count -= (uint64_t) __builtin_popcountll (mask & bm->words[w]);
    bm->words[w] &= ~mask;
    if (!bm->words[w])
      bm->summary[w / 64] &= ~(1ULL << (w % 64));
    first += n;
  }
}

void
dirty_bitmap_set (struct dirty_bitmap *bm, uint64_t offset, uint64_t len)
{
  uint64_t first, end;
  if (bit_range (bm, offset, len, &first, &end))
    set_bits (bm, first, end);
}

void
dirty_bitmap_clear (struct dirty_bitmap *bm, uint64_t offset, uint64_t len)
{
  uint64_t first, end;
  if (bit_range (bm, offset, len, &first, &end))
    clear_bits (bm, first, end);
}

void
dirty_bitmap_clear_all (struct dirty_bitmap *bm)
{
  for (uint64_t s = 0; s < bm->nsum; s++) {
    uint64_t sw = bm->summary[s];
    while (sw) {
      uint64_t w = s * 64 + ctz64 (sw);
      sw &= sw - 1;
      bm->words[w] = 0;
    }
    bm->summary[s] = 0;
  }
  bm->count = 0;
}

bool
dirty_bitmap_test (const struct dirty_bitmap *bm, uint64_t offset)
{
  if (offset >= bm->size)
    return false;
  uint64_t bit = offset >> bm->gran_bits;
  return bm->words[bit / 64] >> (bit % 64) & 1;
}

uint64_t
dirty_bitmap_count (const struct dirty_bitmap *bm)
{
  return bm->count;
}

uint64_t
dirty_bitmap_dirty_bytes (const struct dirty_bitmap *bm)
{
  /* QEMU's meaning (bdrv_get_dirty_count): whole granules, even the last
   * one that extends past the end of the disk. */
  return bm->count << bm->gran_bits;
}

static int64_t
next_bit (const struct dirty_bitmap *bm, uint64_t bit, bool want_set)
{
  while (bit < bm->nbits) {
    uint64_t w = bit / 64;
    if (want_set) {
      /* Skip words the summary says are clean, 64 at a time. */
      uint64_t s = w / 64;
      uint64_t sw = bm->summary[s] & (~0ULL << (w % 64));
      if (!sw) {
        bit = (s + 1) * 64 * 64;
        continue;
      }
      uint64_t nw = s * 64 + ctz64 (sw);
      if (nw != w) {
        w = nw;
        bit = w * 64;
      }
    }
    uint64_t v = bm->words[w];
    if (!want_set)
      v = ~v;
    v &= ~0ULL << (bit % 64);
    if (v) {
      uint64_t found = w * 64 + ctz64 (v);
      return found < bm->nbits ? (int64_t) found : -1;
    }
    bit = (w + 1) * 64;
  }
  return -1;
}

int64_t
dirty_bitmap_next_dirty (const struct dirty_bitmap *bm, uint64_t offset)
{
  if (offset >= bm->size)
    return -1;
  int64_t b = next_bit (bm, offset >> bm->gran_bits, true);
  if (b < 0)
    return -1;
  uint64_t o = (uint64_t) b << bm->gran_bits;
  return (int64_t) (o > offset ? o : offset);
}

int64_t
dirty_bitmap_next_clean (const struct dirty_bitmap *bm, uint64_t offset)
{
  if (offset >= bm->size)
    return -1;
  int64_t b = next_bit (bm, offset >> bm->gran_bits, false);
  if (b < 0)
    return -1;
  uint64_t o = (uint64_t) b << bm->gran_bits;
  return (int64_t) (o > offset ? o : offset);
}

int
dirty_bitmap_merge (struct dirty_bitmap *dst, const struct dirty_bitmap *src)
{
  if (dst->size != src->size) {
    set_invalid ("cannot merge bitmaps of different sizes (%llu and %llu "
                 "bytes)", (unsigned long long) dst->size,
                 (unsigned long long) src->size);
    return -1;
  }
  if (dst->gran_bits == src->gran_bits) {
    for (uint64_t s = 0; s < src->nsum; s++) {
      uint64_t sw = src->summary[s];
      while (sw) {
        uint64_t w = s * 64 + ctz64 (sw);
        sw &= sw - 1;
        uint64_t add = src->words[w] & ~dst->words[w];
        if (add) {
          dst->count += (uint64_t) __builtin_popcountll (add);
          dst->words[w] |= add;
          dst->summary[s] |= 1ULL << (w % 64);
        }
      }
    }
    return 0;
  }
  int64_t off = dirty_bitmap_next_dirty (src, 0);
  while (off >= 0) {
    int64_t end = dirty_bitmap_next_clean (src, (uint64_t) off);
    uint64_t e = end < 0 ? src->size : (uint64_t) end;
    dirty_bitmap_set (dst, (uint64_t) off, e - (uint64_t) off);
    if (end < 0)
      break;
    off = dirty_bitmap_next_dirty (src, e);
  }
  return 0;
}

uint64_t
dirty_bitmap_stream_bytes (const struct dirty_bitmap *bm)
{
  return (bm->nbits + 7) / 8;
}

static uint8_t
stream_byte (const struct dirty_bitmap *bm, uint64_t i)
{
  uint64_t w = i / 8;
  if (w >= bm->nwords)
    return 0;
  return (uint8_t) (bm->words[w] >> ((i % 8) * 8));
}

void
dirty_bitmap_serialize (const struct dirty_bitmap *bm, uint64_t start,
                        size_t len, uint8_t *out)
{
  for (size_t i = 0; i < len; i++) {
    uint64_t k = start + i;
    /* Skip clean words quickly. */
    if (k % 8 == 0 && len - i >= 8 && k / 8 < bm->nwords &&
        bm->words[k / 8] == 0) {
      memset (out + i, 0, 8);
      i += 7;
      continue;
    }
    out[i] = stream_byte (bm, k);
  }
}

static void
load_byte (struct dirty_bitmap *bm, uint64_t i, uint8_t v)
{
  uint64_t first = i * 8;
  if (first >= bm->nbits)
    return;
  if (bm->nbits - first < 8)
    v &= (uint8_t) ((1u << (bm->nbits - first)) - 1);
  uint64_t w = i / 8;
  uint64_t add = ((uint64_t) v << ((i % 8) * 8)) & ~bm->words[w];
  if (add) {
    bm->count += (uint64_t) __builtin_popcountll (add);
    bm->words[w] |= add;
    bm->summary[w / 64] |= 1ULL << (w % 64);
  }
}

void
dirty_bitmap_deserialize (struct dirty_bitmap *bm, uint64_t start, size_t len,
                          const uint8_t *in)
{
  size_t i = 0;

  while (i < len) {
    /* Clean bytes are most of a bitmap: skip them 8 at a time. */
    if (len - i >= 8) {
      uint64_t v;
      memcpy (&v, in + i, 8);
      if (v == 0) {
        i += 8;
        continue;
      }
    }
    if (in[i])
      load_byte (bm, start + i, in[i]);
    i++;
  }
}

void
dirty_bitmap_deserialize_ones (struct dirty_bitmap *bm, uint64_t start,
                               size_t len)
{
  uint64_t first = start * 8, end = (start + len) * 8;
  if (end > bm->nbits)
    end = bm->nbits;
  if (first < end)
    set_bits (bm, first, end);
}

