/* qcow2 guest-to-host mapping: L1/L2 lookup, cluster and subcluster types,
 * and reads of data and compressed clusters, as QEMU's qcow2 v3 format
 * lays them out. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "common/error.h"
#include "formats/qcow2.h"

int
qcow2_check_metadata_range (struct qcow2 *s, uint64_t offset, uint64_t len,
                            const char *what)
{
  const char *fn = s->base.filename;

  if (offset & (s->cluster_size - 1)) {
    set_invalid ("%s: %s offset %#" PRIx64 " is not cluster aligned",
                 fn, what, offset);
    return -1;
  }
  if (offset == 0) {
    set_invalid ("%s: %s at offset 0 overlaps the header", fn, what);
    return -1;
  }
  if (offset > s->file_size || len > s->file_size - offset) {
    set_invalid ("%s: %s at offset %#" PRIx64 " (%" PRIu64 " bytes) lies "
                 "past the end of the file", fn, what, offset, len);
    return -1;
  }
  return 0;
}

void
qcow2_cluster_cleanup (struct qcow2 *s)
{
  for (int i = 0; i < QCOW2_L2_CACHE_SIZE; i++)
    free (s->l2_cache[i].table);
  free (s->l2_readahead);
  free (s->zbuf);
  ZSTD_freeDCtx (s->zstd_dctx);
}

static uint32_t
slice_bytes (struct qcow2 *s)
{
  return s->cluster_size < QCOW2_L2_SLICE_BYTES ? s->cluster_size
                                                : QCOW2_L2_SLICE_BYTES;
}

/* The cache slot holding the slice at host offset OFF, or NULL. */
static struct qcow2_l2_cache_entry *
l2_cached (struct qcow2 *s, uint64_t off)
{
  for (int i = 0; i < QCOW2_L2_CACHE_SIZE; i++)
    if (s->l2_cache[i].offset == off && s->l2_cache[i].table)
      return &s->l2_cache[i];
  return NULL;
}

/* The least recently used slot, its buffer allocated, emptied. */
static struct qcow2_l2_cache_entry *
l2_victim (struct qcow2 *s)
{
  struct qcow2_l2_cache_entry *victim = &s->l2_cache[0];
  for (int i = 1; i < QCOW2_L2_CACHE_SIZE; i++)
    if (s->l2_cache[i].last_use < victim->last_use)
      victim = &s->l2_cache[i];
  if (!victim->table && !(victim->table = malloc (slice_bytes (s)))) {
    set_nomem ();
    return NULL;
  }
  victim->offset = 0;
  return victim;
}

/* Fill a slot with the slice at host offset OFF from RAW (on-disk
 * order). */
static struct qcow2_l2_cache_entry *
l2_fill (struct qcow2 *s, uint64_t off, const uint8_t *raw)
{
  struct qcow2_l2_cache_entry *c = l2_victim (s);
  if (!c)
    return NULL;
  uint64_t nwords = slice_bytes (s) / 8;
  for (uint64_t i = 0; i < nwords; i++)
    c->table[i] = be64_at (raw + i * 8);
  c->offset = off;
  c->last_use = ++s->l2_cache_clock;
  return c;
}

/* The slice of the L2 table at host offset L2_OFFSET that holds entry
 * word WORD (entries in CPU order), through a small LRU cache.  *FIRST is
 * the index of the slice's first word in the table.  The caller will look
 * at WANT words from WORD on (at least 1, within the table): on a miss,
 * the slices they span that are not cached yet are read together, up to
 * QCOW2_L2_READAHEAD_SLICES of them. */
static const uint64_t *
get_l2 (struct qcow2 *s, uint64_t l2_offset, uint64_t word, uint64_t want,
        uint64_t *first)
{
  uint32_t sb = slice_bytes (s);
  uint64_t nwords = sb / 8;
  *first = word / nwords * nwords;
  uint64_t off = l2_offset + *first * 8;
  struct qcow2_l2_cache_entry *c = &s->l2_cache[s->l2_cache_last];

  if (c->offset == off && c->table) {
    c->last_use = ++s->l2_cache_clock;
    return c->table;
  }
  if ((c = l2_cached (s, off))) {
    c->last_use = ++s->l2_cache_clock;
    s->l2_cache_last = (int) (c - s->l2_cache);
    return c->table;
  }
  if (qcow2_check_metadata_range (s, l2_offset, s->cluster_size,
                                  "L2 table") < 0)
    return NULL;

  /* Slices to read: those WANT spans, within the table and the window,
   * up to the first one already cached. */
  uint64_t table_words = s->cluster_size / 8;
  uint64_t end = want > table_words - word ? table_words : word + want;
  uint64_t n = (end - *first + nwords - 1) / nwords;
  if (n > QCOW2_L2_READAHEAD_SLICES)
    n = QCOW2_L2_READAHEAD_SLICES;
  for (uint64_t k = 1; k < n; k++)
    if (l2_cached (s, off + k * sb)) {
      n = k;
      break;
    }
  if (n > 1 && !s->l2_readahead &&
      !(s->l2_readahead = malloc ((size_t) QCOW2_L2_READAHEAD_SLICES * sb)))
    n = 1;                      /* one slice will do */
  if (n == 1) {
    if (!(c = l2_victim (s)) ||
        qbak_file_pread (s->base.file, c->table, sb, off) < 0)
      return NULL;
    uint8_t *raw = (uint8_t *) c->table;
    for (uint64_t i = 0; i < nwords; i++)
      c->table[i] = be64_at (raw + i * 8);
    c->offset = off;
    c->last_use = ++s->l2_cache_clock;
  }
  else {
    if (qbak_file_pread (s->base.file, s->l2_readahead, n * sb, off) < 0)
      return NULL;
    /* The later slices first: the one asked for is then the most
     * recently used, and no fill of this window evicts it. */
    for (uint64_t k = n; k-- > 0;)
      if (!(c = l2_fill (s, off + k * sb, s->l2_readahead + k * sb)))
        return NULL;
  }
  s->l2_cache_last = (int) (c - s->l2_cache);
  return c->table;
}

/* State of one guest cluster (or subcluster range within it). */
struct cluster_info {
  enum layer_state state;
  bool compressed;
  bool offset_valid;
  uint64_t host;       /* host offset of the cluster start (normal) */
  uint64_t l2e;        /* raw entry (compressed descriptor) */
  uint64_t bytes;      /* bytes from the queried offset with this state */
};

static int
compressed_bounds (struct qcow2 *s, uint64_t l2e, uint64_t *coffset,
                   uint64_t *csize)
{
  unsigned x = 62 - (s->cluster_bits - 8);
  uint64_t off_mask = (1ULL << x) - 1;
  uint64_t size_mask = (1ULL << (s->cluster_bits - 8)) - 1;
  uint64_t nb_sectors = ((l2e >> x) & size_mask) + 1;

  *coffset = l2e & off_mask;
  *csize = nb_sectors * 512 - (*coffset & 511);
  if (*coffset & ~L2E_OFFSET_MASK & ~511ULL) {
    set_invalid ("%s: compressed cluster descriptor %#" PRIx64
                 " has an offset beyond 2^56", s->base.filename, l2e);
    return -1;
  }
  if (*coffset >= s->file_size) {
    set_invalid ("%s: compressed cluster data at offset %#" PRIx64
                 " lies past the end of the file", s->base.filename,
                 *coffset);
    return -1;
  }
  return 0;
}

/* Describe guest OFFSET (inside the image); ci->bytes is capped at the end
 * of the cluster (or of the run of equal subclusters).  The caller will
 * ask about AHEAD clusters from this one on (at least 1). */
static int
lookup (struct qcow2 *s, uint64_t offset, uint64_t ahead,
        struct cluster_info *ci)
{
  const char *fn = s->base.filename;
  uint64_t cs = s->cluster_size;
  uint64_t cluster = offset >> s->cluster_bits;
  uint64_t in_cluster = offset & (cs - 1);
  uint64_t l1_index = cluster / s->l2_entries;
  uint64_t l2_index = cluster % s->l2_entries;

  memset (ci, 0, sizeof *ci);
  ci->bytes = cs - in_cluster;
  ci->state = LAYER_UNALLOCATED;

  if (l1_index >= s->l1_size)
    return 0;
  uint64_t l2_offset = s->l1[l1_index] & L1E_OFFSET_MASK;
  if (!l2_offset) {
    /* The whole L2 range is unallocated. */
    ci->bytes = ((uint64_t) s->l2_entries - l2_index) * cs - in_cluster;
    return 0;
  }
  uint64_t per = s->l2_entry_bytes / 8;
  uint64_t in_table = s->l2_entries - l2_index;
  uint64_t word = l2_index * per, first;
  const uint64_t *l2 = get_l2 (s, l2_offset, word,
                               (ahead < in_table ? ahead : in_table) * per,
                               &first);
  if (!l2)
    return -1;

  uint64_t e = l2[word - first];
  uint64_t bitmap = s->extended_l2 ? l2[word - first + 1] : 0;
  ci->l2e = e;

  if (e & QCOW_OFLAG_COMPRESSED) {
    uint64_t coff, csize;
    if (s->base.data_file != s->base.file) {
      set_invalid ("%s: compressed cluster at guest offset %#" PRIx64
                   " in an image with an external data file", fn, offset);
      return -1;
    }
    if (s->extended_l2 && bitmap) {
      set_invalid ("%s: compressed cluster at guest offset %#" PRIx64
                   " has subcluster bits set", fn, offset);
      return -1;
    }
    if (compressed_bounds (s, e, &coff, &csize) < 0)
      return -1;
    ci->state = LAYER_DATA;
    ci->compressed = true;
    return 0;
  }

  if (e & L2E_STD_RESERVED_MASK || (s->extended_l2 && (e & QCOW_OFLAG_ZERO))) {
    set_invalid ("%s: L2 entry for guest offset %#" PRIx64 " has reserved "
                 "bits set (%#" PRIx64 ")", fn, offset, e);
    return -1;
  }
  uint64_t host = e & L2E_OFFSET_MASK;
  bool external = s->base.data_file != s->base.file;
  bool allocated = host != 0 || (external && (e & QCOW_OFLAG_COPIED));

  if (host & (s->cluster_size - 1)) {
    set_invalid ("%s: data cluster for guest offset %#" PRIx64 " at host "
                 "offset %#" PRIx64 " is not cluster aligned", fn, offset,
                 host);
    return -1;
  }
  if (allocated && !external && host >= s->file_size) {
    set_invalid ("%s: data cluster for guest offset %#" PRIx64 " at host "
                 "offset %#" PRIx64 " lies past the end of the file", fn,
                 offset, host);
    return -1;
  }

  if (!s->extended_l2) {
    if (e & QCOW_OFLAG_ZERO) {
      ci->state = LAYER_ZERO;
      ci->offset_valid = host != 0;
      ci->host = host;
    }
    else if (allocated) {
      ci->state = LAYER_DATA;
      ci->offset_valid = true;
      ci->host = host;
    }
    return 0;
  }

  /* Extended L2: 32 subclusters, alloc bits 0-31, zero bits 32-63. */
  uint32_t alloc = (uint32_t) bitmap, zero = (uint32_t) (bitmap >> 32);
  if (!allocated && alloc) {
    set_invalid ("%s: L2 entry for guest offset %#" PRIx64 " marks "
                 "subclusters allocated without a host cluster", fn, offset);
    return -1;
  }
  if (alloc & zero) {
    set_invalid ("%s: L2 entry for guest offset %#" PRIx64 " marks "
                 "subclusters both allocated and zero", fn, offset);
    return -1;
  }
  unsigned sc = (unsigned) (in_cluster / s->subcluster_size);
  bool a = alloc >> sc & 1, z = zero >> sc & 1;
  unsigned end = sc + 1;
  while (end < 32 && (bool) (alloc >> end & 1) == a &&
         (bool) (zero >> end & 1) == z)
    end++;
  ci->bytes = (uint64_t) end * s->subcluster_size - in_cluster;
  if (z) {
    ci->state = LAYER_ZERO;
    ci->offset_valid = allocated;
    ci->host = host;
  }
  else if (a) {
    ci->state = LAYER_DATA;
    ci->offset_valid = true;
    ci->host = host;
  }
  return 0;
}

/* How many of the MAX clusters from guest cluster CLUSTER on are plainly
 * unallocated (no L2 table, or an all-zero entry: what lookup calls
 * LAYER_UNALLOCATED for the whole cluster, with nothing to check), into
 * *N.  A walk over a sparse layer's tables costs a compare per entry this
 * way, not a lookup. */
static int
count_unallocated (struct qcow2 *s, uint64_t cluster, uint64_t max,
                   uint64_t *n)
{
  uint64_t per = s->l2_entry_bytes / 8;
  uint64_t done = 0;
  while (done < max) {
    uint64_t c = cluster + done, left = max - done;
    uint64_t l1_index = c / s->l2_entries;
    uint64_t l2_index = c % s->l2_entries;
    uint64_t in_table = s->l2_entries - l2_index;
    uint64_t want = left < in_table ? left : in_table;
    uint64_t l2_offset = l1_index < s->l1_size
                         ? s->l1[l1_index] & L1E_OFFSET_MASK : 0;
    if (!l2_offset) {
      done += want;
      continue;
    }
    uint64_t word = l2_index * per, first;
    const uint64_t *l2 = get_l2 (s, l2_offset, word, want * per, &first);
    if (!l2)
      return -1;
    /* The rest of this slice, at most WANT entries. */
    uint64_t end = first + slice_bytes (s) / 8;
    if (end > word + want * per)
      end = word + want * per;
    uint64_t w = word;
    if (per == 1)
      while (w < end && l2[w - first] == 0)
        w++;
    else
      while (w < end && (l2[w - first] | l2[w - first + 1]) == 0)
        w += 2;
    done += (w - word) / per;
    if (w < end)
      break;
  }
  *n = done < max ? done : max;
  return 0;
}

int
qcow2_block_status (struct image *img, uint64_t offset, uint64_t length,
                    struct layer_extent *ext)
{
  struct qcow2 *s = to_qcow2 (img);
  struct cluster_info ci;

  if (length > img->size - offset)
    length = img->size - offset;
  if (!s->prealloc_checked && img->want_recurse) {
    /* Only for the map view; an image whose refcounts cannot be read
     * simply does not get the hole refinement. */
    if (s->data_file == NULL &&
        qcow2_detect_metadata_prealloc (s, &s->metadata_prealloc) < 0) {
      s->metadata_prealloc = false;
      error_clear ();
    }
    s->prealloc_checked = true;
  }
  if (s->status_valid && offset >= s->status_start &&
      offset - s->status_start < s->status.length) {
    uint64_t skip = offset - s->status_start;
    *ext = s->status;
    /* Without a host cluster the offset is the one inside the cluster, as
     * lookup leaves it. */
    ext->offset = ext->offset_valid ? ext->offset + skip
                                    : offset & (s->cluster_size - 1);
    ext->length -= skip;
    if (ext->length > length)
      ext->length = length;
    return 0;
  }
  s->status_valid = false;
  uint64_t cs = s->cluster_size;
  if (lookup (s, offset, ((offset & (cs - 1)) + length + cs - 1) >>
              s->cluster_bits, &ci) < 0)
    return -1;
  memset (ext, 0, sizeof *ext);
  ext->state = ci.state;
  ext->compressed = ci.compressed;
  ext->offset_valid = ci.offset_valid;
  ext->offset = ci.host + (offset & (s->cluster_size - 1));
  ext->recurse = s->metadata_prealloc && ci.state == LAYER_DATA &&
                 !ci.compressed;
  uint64_t done = ci.bytes < length ? ci.bytes : length;

  /* A compressed cluster stands alone: its bytes are not contiguous with
   * anything. */
  while (!ci.compressed && done < length) {
    struct cluster_info next;
    uint64_t at = offset + done;
    uint64_t ahead = (length - done + cs - 1) >> s->cluster_bits;
    if (ext->state == LAYER_UNALLOCATED && !(at & (cs - 1))) {
      uint64_t n;
      if (count_unallocated (s, at >> s->cluster_bits, ahead, &n) < 0)
        return -1;
      done += n << s->cluster_bits;
      if (n == ahead)
        break;
      at = offset + done;
      ahead -= n;
    }
    if (lookup (s, at, ahead, &next) < 0)
      return -1;
    if (next.state != ext->state || next.compressed ||
        next.offset_valid != ext->offset_valid)
      break;
    if (ext->offset_valid &&
        next.host + (at & (cs - 1)) != ext->offset + done)
      break;
    done += next.bytes;
  }
  ext->length = done < length ? done : length;
  if (!ext->compressed) {
    s->status_valid = true;
    s->status_start = offset;
    s->status = *ext;
  }
  return 0;
}

static int
read_compressed (struct qcow2 *s, uint64_t l2e, uint8_t **out)
{
  if (s->zbuf && s->zbuf_host == l2e) {
    *out = s->zbuf;
    return 0;
  }
  uint64_t coff, csize;
  if (compressed_bounds (s, l2e, &coff, &csize) < 0)
    return -1;
  if (!s->zbuf && !(s->zbuf = malloc (s->cluster_size))) {
    set_nomem ();
    return -1;
  }
  uint8_t *src = malloc (csize);
  if (!src) {
    set_nomem ();
    return -1;
  }
  s->zbuf_host = 0;
  int r = qbak_file_pread_zerofill (s->base.file, src, csize, coff);
  if (r == 0)
    r = qcow2_decompress (s, src, csize, s->zbuf);
  free (src);
  if (r < 0)
    return -1;
  s->zbuf_host = l2e;
  *out = s->zbuf;
  return 0;
}

int
qcow2_read_layer (struct image *img, void *buf, uint64_t count,
                  uint64_t offset)
{
  struct qcow2 *s = to_qcow2 (img);
  uint8_t *p = buf;

  while (count > 0) {
    struct layer_extent ext;
    if (qcow2_block_status (img, offset, count, &ext) < 0)
      return -1;
    uint64_t n = ext.length;
    if (ext.state != LAYER_DATA) {
      /* Callers only ask for data ranges; anything else reads as zero
       * here and the chain logic in image.c never relies on it. */
      memset (p, 0, n);
    }
    else if (ext.compressed) {
      struct cluster_info ci;
      uint8_t *cluster;
      if (lookup (s, offset, 1, &ci) < 0 || read_compressed (s, ci.l2e,
                                                          &cluster) < 0)
        return -1;
      memcpy (p, cluster + (offset & (s->cluster_size - 1)), n);
    }
    else if (qbak_file_pread_zerofill (img->data_file, p, n, ext.offset) < 0)
      return -1;
    p += n;
    offset += n;
    count -= n;
  }
  return 0;
}
