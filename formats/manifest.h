/* formats/: the manifest of a backup file: what each cluster it holds
 * should read as, so that bit rot, truncation or a swapped file is found
 * without the source, and so that a later backup can tell which clusters
 * of a disk changed without a bitmap.
 *
 * A manifest lists, in increasing guest order, the clusters its file
 * holds (an incremental's file: the clusters it copied; clusters it does
 * not list read from its backing file, or as zeroes at the bottom of a
 * chain), each as data with the XXH3-64 of its bytes or as zeroes (not
 * hashed).  It is written front to back while the backup is copied, from
 * data already in memory, and read front to back: neither side holds more
 * than one run in memory, whatever the disk's size.
 *
 * On disk (all integers little-endian):
 *
 *   header, 64 bytes
 *     0   8  magic "QBAKMANI"
 *     8   4  version (1)
 *     12  4  cluster size (a power of two, 512 .. 2 MiB)
 *     16  8  virtual size of the disk
 *     24 40  zero
 *   runs, each
 *     0   8  first cluster (index: guest offset / cluster size)
 *     8   4  count (1 .. MANIFEST_RUN_MAX)
 *     12  4  kind: 1 data, 2 zero
 *     16     data runs only: COUNT hashes of 8 bytes
 *   end, 32 bytes
 *     0   8  UINT64_MAX (no run starts there)
 *     8   8  data clusters listed
 *     16  8  zero clusters listed
 *     24  8  XXH3-64 of every byte before this field
 *
 * Runs never overlap and come in increasing order; two adjacent runs may
 * have the same kind (a writer splits long runs).  The hash of the last
 * cluster of a disk whose size is not a multiple of the cluster size
 * covers only the bytes inside the disk.  The digest of a manifest (what
 * a repository's record keeps) is the XXH3-128 of the whole file, as 32
 * lowercase hex digits.
 */
#ifndef QBAK_FORMATS_MANIFEST_H
#define QBAK_FORMATS_MANIFEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/fileio.h"

#define MANIFEST_RUN_MAX 4096u          /* clusters per run */
#define MANIFEST_DIGEST_HEX 32

enum manifest_kind { MANIFEST_DATA = 1, MANIFEST_ZERO = 2 };

/* The hash of one cluster's bytes, as manifests record it. */
uint64_t manifest_hash (const void *buf, size_t len);
/* The hash of each cluster of BUF's [0, LEN) into HASHES, clusters of
 * CLUSTER_SIZE (the last one may be shorter: a disk's end). */
void manifest_hash_clusters (const void *buf, uint64_t len,
                             uint32_t cluster_size, uint64_t *hashes);

/* ---- Writing ---------------------------------------------------------- */

struct manifest_writer;

/* A writer into FILE, a new empty file (owned from now on, closed by
 * manifest_writer_free, also on error), for a disk of VIRTUAL_SIZE bytes
 * in clusters of CLUSTER_SIZE.  NULL with the error set. */
struct manifest_writer *manifest_writer_create (struct qbak_file *file,
                                                uint32_t cluster_size,
                                                uint64_t virtual_size);

/* Record [OFFSET, +LEN) as data, hashing each cluster of BUF, or as
 * zeroes.  OFFSET is cluster aligned; LEN a multiple of the cluster size
 * except that it may end at the virtual size.  Requests come in
 * increasing order and never overlap.  -1 with the error set (the writer
 * then accepts only manifest_writer_free). */
int manifest_writer_data (struct manifest_writer *w, uint64_t offset,
                          const void *buf, uint64_t len);
int manifest_writer_zero (struct manifest_writer *w, uint64_t offset,
                          uint64_t len);

/* Record COUNT data clusters from cluster index FIRST whose hashes the
 * caller already computed (manifest_hash), under the same rules. */
int manifest_writer_hashes (struct manifest_writer *w, uint64_t first,
                            const uint64_t *hashes, uint64_t count);

/* Write the end, flush the file (a failed flush is final, as for every
 * file), and put the manifest's digest into DIGEST (MANIFEST_DIGEST_HEX
 * + 1 bytes). */
int manifest_writer_finish (struct manifest_writer *w, char *digest);

/* W's file, still W's: for committing a storage object (common/storage.h)
 * after manifest_writer_finish and before manifest_writer_free closes
 * it. */
struct qbak_file *manifest_writer_file (const struct manifest_writer *w);

/* Close and free; accepts NULL.  An unfinished manifest is left as it is
 * (the caller removes it). */
void manifest_writer_free (struct manifest_writer *w);

/* ---- Reading ---------------------------------------------------------- */

struct manifest_reader;

struct manifest_run {
  uint64_t first;               /* first cluster */
  uint32_t count;
  enum manifest_kind kind;
  const uint64_t *hashes;       /* data runs: COUNT hashes, valid until the
                                   next call */
};

/* Read the manifest at PATH (a regular file, never through a symbolic
 * link).  The header is checked here; STATUS_INVALID naming PATH for
 * anything qbak did not write. */
struct manifest_reader *manifest_reader_open (const char *path);
/* The same from FILE, open for reading (a repository's object: owned
 * from now on, closed by manifest_reader_free, also on error). */
struct manifest_reader *manifest_reader_open_file (struct qbak_file *file);
uint32_t manifest_reader_cluster_size (const struct manifest_reader *r);
uint64_t manifest_reader_virtual_size (const struct manifest_reader *r);

/* The next run into *RUN: 1, or 0 at the end once the end's counts and
 * checksum were checked, or -1 (STATUS_INVALID naming the file and the
 * byte offset for a damaged manifest, STATUS_IO for I/O). */
int manifest_reader_next (struct manifest_reader *r, struct manifest_run *run);

/* The digest of the whole file (reads it once more from the start);
 * -1 on error. */
int manifest_file_digest (const char *path, char *digest);
/* The same of FILE, read from the start (left open). */
int manifest_digest_of_file (struct qbak_file *file, char *digest);

void manifest_reader_free (struct manifest_reader *r);

/* Into W, the manifest of a file that holds what the file of TOP holds
 * and, where TOP lists nothing, what the file of BOTTOM holds (prune's
 * merges); W is finished (DIGEST) and freed, the readers are freed. */
int manifest_merge (struct manifest_reader *top,
                    struct manifest_reader *bottom,
                    struct manifest_writer *w, char *digest);
/* The same, but W is left open, finished or not, for a caller that
 * commits its file as a storage object (manifest_writer_file) before it
 * frees W. */
int manifest_merge_keep (struct manifest_reader *top,
                         struct manifest_reader *bottom,
                         struct manifest_writer *w, char *digest);

/* ---- A chain's view ---------------------------------------------------
 *
 * What a chain of backup files reads as, cluster by cluster, from their
 * manifests alone: each cluster as the topmost file that lists it says;
 * a cluster no file lists reads as zeroes (the bottom of a chain is a
 * full, and a backing file shorter than the disk reads as zeroes past its
 * end).  All manifests must have one cluster size. */

enum manifest_state { MANIFEST_CLUSTER_ZERO, MANIFEST_CLUSTER_DATA };

struct manifest_view;

/* LAYERS[0] is the top; the view reads them (and frees them with
 * itself).  SIZE is the size of the disk the view is read for (the top's
 * virtual size usually).  NULL with the error set if their cluster sizes
 * differ. */
struct manifest_view *manifest_view_open (struct manifest_reader **layers,
                                          size_t n, uint64_t size);

/* The state of cluster INDEX and, for data, its hash.  INDEX must not
 * decrease from one call to the next.  -1 on a damaged manifest. */
int manifest_view_get (struct manifest_view *v, uint64_t index,
                       enum manifest_state *state, uint64_t *hash);

void manifest_view_free (struct manifest_view *v);

#endif
