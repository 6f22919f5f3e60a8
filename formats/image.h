/* formats/: image access behind one ops table, so that adding a format
 * touches no caller.
 *
 * An image is one layer of a chain.  Each format answers two questions
 * about its own layer: what is at offset X (block_status), and give me the
 * bytes of a range it holds (read_layer).  image.c builds guest reads and
 * the qemu-img-map view of a whole chain from those two, so the engine
 * never switches on format.
 */
#ifndef QBAK_FORMATS_IMAGE_H
#define QBAK_FORMATS_IMAGE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/fileio.h"

enum image_format { IMAGE_RAW, IMAGE_QCOW2, IMAGE_QCOW1 };

/* What one layer holds at an offset. */
enum layer_state {
  LAYER_UNALLOCATED,  /* not in this layer: read the backing file */
  LAYER_DATA,         /* data in this layer */
  LAYER_ZERO,         /* reads as zeroes, no backing read */
};

struct layer_extent {
  uint64_t length;
  enum layer_state state;
  bool offset_valid;     /* host offset known (not compressed) */
  uint64_t offset;       /* host offset of the first byte */
  bool compressed;
  bool recurse;          /* ask the host file for holes under this data
                            (QEMU's BDRV_BLOCK_RECURSE) */
};

struct image;

/* What a format says about one image beyond the common fields, in terms
 * that name no format's structures (qemu-img info's format-specific
 * part).  Zero where the format has no such thing. */
struct image_details {
  uint32_t version;
  uint32_t refcount_bits;
  const char *compression_type;  /* "zlib", "zstd" or NULL */
  bool extended_l2;
  bool lazy_refcounts;
  bool dirty;
  bool bitmaps_consistent;
  const char *data_file;         /* external data file as stored, or NULL */
  bool data_file_raw;
  uint64_t incompatible_features, compatible_features, autoclear_features;
};

struct image_ops {
  const char *name;
  /* Describe this layer at OFFSET: fill EXT with the longest run of equal
   * state (offsets contiguous) no longer than LENGTH.  0 or -1. */
  int (*block_status) (struct image *img, uint64_t offset, uint64_t length,
                       struct layer_extent *ext);
  /* Read [OFFSET, +COUNT) that block_status reported as LAYER_DATA. */
  int (*read_layer) (struct image *img, void *buf, uint64_t count,
                     uint64_t offset);
  void (*close) (struct image *img);
  /* Whether the format stores persistent dirty bitmaps. */
  bool can_hold_bitmaps;
  /* Refuse (0 or -1 with the error set) metadata writes the image cannot
   * take safely; NULL: nothing to refuse. */
  int (*check_writable) (struct image *img);
  /* Fill DETAILS (zeroed by the caller); NULL: none. */
  void (*describe) (struct image *img, struct image_details *details);
  /* Cluster size of a backup target made from this image; NULL: the
   * default, 64 KiB. */
  uint32_t (*target_cluster_size) (const struct image *img);
};

struct image {
  const struct image_ops *ops;
  enum image_format format;
  char *filename;           /* as given (for messages) */
  struct qbak_file *file;
  struct qbak_file *data_file; /* where LAYER_DATA offsets point (may be
                                  file; NULL if not a plain file) */
  char *data_file_path;     /* an external data file's name resolved
                               against the image's directory, or NULL */
  bool data_file_closed;    /* the external data file was left unopened
                               (IMAGE_OPEN_NO_BACKING): guest data cannot
                               be read, only metadata */
  uint64_t size;            /* virtual size */
  uint32_t cluster_size;    /* allocation unit; 0 for raw */
  bool corrupt;             /* marked corrupt: never write, never back up */
  bool want_recurse;        /* the caller wants QEMU's map view, host holes
                               included (costs a refcount scan in qcow2) */

  /* Backing chain. */
  char *backing_name;       /* as stored in the image */
  char *backing_path;       /* resolved against the image's directory */
  char *backing_format;     /* from the extension, or NULL */
  struct image *backing;    /* owned, or NULL */
};

enum image_open_flags {
  IMAGE_OPEN_WRITE = 1,
  /* Open no file the image names (backing chain, external data file):
   * only the image's own metadata can be read. */
  IMAGE_OPEN_NO_BACKING = 2,
};

/* Called for each file of the chain right after it is opened and before
 * any byte of it is read (DEPTH 0 = the top), so the caller can take its
 * locks first.  Returns 0 or -1 with the error set. */
typedef int (*image_lock_fn) (struct qbak_file *file, int depth,
                              void *opaque);

/* probe.c: open PATH, and its backing chain.  FORMAT ("qcow2", "qcow",
 * "raw") is required of the top image, or NULL to probe by content.
 * LOCK (may be NULL) is called for every file.  NULL on error. */
struct image *image_open (const char *path, const char *format,
                          unsigned flags, image_lock_fn lock,
                          void *lock_opaque);

/* Opens the backing file that NAME, as stored in the image FROM, names:
 * read-only, a regular file (or an object), never through a link.
 * Returns the file, or NULL with the error set. */
typedef struct qbak_file *(*image_opener_fn) (struct image *from,
                                              const char *name,
                                              void *opaque);

/* probe.c: open the image in FILE (owned from now on, closed on error
 * too), and its backing chain through OPENER: for files that have no
 * path, such as a repository's objects (common/storage.h).  The rules
 * are image_open's: FORMAT or the content for the top, the recorded
 * format for every backing file (never probed), no protocol names, no
 * loops, LOCK called for every file.  An image that names an external
 * data file is refused unless IMAGE_OPEN_NO_BACKING: an opener hands out
 * backing files only, and no file qbak writes has one. */
struct image *image_open_file (struct qbak_file *file, const char *format,
                               unsigned flags, image_opener_fn opener,
                               void *opener_opaque, image_lock_fn lock,
                               void *lock_opaque);
/* Close IMG and its chain; accepts NULL. */
void image_close (struct image *img);

/* image.c */
/* What image_read returns (with the error set) when a format broke its own
 * rules: a bug, not bad data, so no caller should skip past it. */
#define IMAGE_ERR_BUG (-2)
/* Guest read through the chain; beyond a shorter backing file: zeroes.
 * 0, -1, or IMAGE_ERR_BUG. */
int image_read (struct image *img, void *buf, uint64_t count, uint64_t offset);

/* One extent of the chain as qemu-img map reports it. */
struct chain_extent {
  uint64_t length;
  int depth;
  bool present, zero, data, offset_valid;
  uint64_t offset;
};
/* Describe the chain at OFFSET (length capped at LENGTH). */
int image_chain_status (struct image *img, uint64_t offset, uint64_t length,
                        struct chain_extent *ext);

/* The format's answers (image_ops), with their defaults where a format
 * has none. */
bool image_can_hold_bitmaps (const struct image *img);
int image_check_writable (struct image *img);
void image_describe (struct image *img, struct image_details *details);
uint32_t image_target_cluster_size (const struct image *img);

/* raw.c, qcow2.c, qcow1.c: format constructors used by probe.c. */
struct image *raw_open (struct qbak_file *file, const char *path);
struct image *qcow2_open (struct qbak_file *file, const char *path,
                          unsigned flags);
struct image *qcow1_open (struct qbak_file *f, const char *path);

#endif
