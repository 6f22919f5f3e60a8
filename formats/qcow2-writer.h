/* formats/: streaming writer for qcow2 v3 backup targets.
 *
 * A backup target is written front to back: guest data is appended to the
 * file in the order the copy job plans it, each L2 table is complete when
 * the job moves past its range and is appended in a batch of completed
 * tables (up to 4 MiB of them, so scattered data still goes to disk in
 * long runs), and at the end the L1 table, the refcount structures and
 * finally the header go out.  Memory is the L1 table, three clusters (the
 * current L2 table and two scratch tables) and the batch, whatever the
 * virtual size; qcow2_writer_finish() briefly adds one bit per host
 * cluster.
 *
 * Cluster 0 of a new target stays zero until qcow2_writer_finish() writes
 * the header as its very last step (after a flush), so a target
 * interrupted at any point is never mistaken for a valid qcow2.
 *
 * Layout of a finished image (every referenced cluster has refcount 1):
 *   cluster 0                 header, extensions, backing file name
 *   data clusters, L2 tables  runs of data, then a batch of tables
 *   L1 table
 *   refcount table
 *   refcount blocks           16-bit refcounts (refcount_order 4)
 *
 * Failures are retryable.  When qcow2_writer_write(), _zero() or _finish()
 * fails, the writer is exactly as it was before the call: the caller may
 * repeat the call (a transient error), skip that range and go on with
 * later offsets, or finish the image with what was written.  Except a
 * failed flush (fsync): Linux reports a write-back error once and then
 * calls the pages clean, so a later flush would succeed over lost data.
 * After one, every call fails (STATUS_IO) and the file must be
 * thrown away; a reopened image keeps its old header, which a good flush
 * made durable.  A failed
 * append leaves bytes past the writer's logical end; the next append
 * overwrites them, and finish truncates the file to its logical end (they
 * are never referenced).
 *
 * Resume: qcow2_writer_reopen() takes a finished image back for another
 * pass of writes (offsets start again at 0).  Until the next finish
 * commits, the file stays the old valid image: nothing the current header
 * references is ever written; new data and new copies of changed L2 tables
 * are appended past the end of the file, and finish appends a new L1 table
 * and new refcount structures, flushes, and switches the header to them in
 * one write (the commit point).  Refcounts are computed from the actual
 * references, so what the new image no longer uses (old L1, replaced L2
 * tables and data clusters, old refcount structures) has refcount 0:
 * qemu-img check finds no errors and no leaks.  A crash at any instant
 * leaves either the old or the new image.
 *
 * Every function returns -1 (or NULL) on error with the error set
 * (common/error.h): STATUS_USAGE for a bad argument or call order,
 * STATUS_INVALID for an image reopen refuses or corrupt metadata,
 * STATUS_IO for I/O.
 */
#ifndef QBAK_FORMATS_QCOW2_WRITER_H
#define QBAK_FORMATS_QCOW2_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/fileio.h"

struct qcow2_writer_opts {
  uint64_t size;              /* virtual size, a multiple of 512 */
  uint32_t cluster_size;      /* power of two, 512 .. 2 MiB */
  const char *backing_name;   /* stored as given in the header, or NULL */
  const char *backing_format; /* backing format extension, or NULL */
};

struct qcow2_writer;

/* Create PATH exclusively (O_EXCL: an existing file is refused with
 * STATUS_USAGE and errno EEXIST).  Returns NULL on error. */
struct qcow2_writer *qcow2_writer_create (const char *path,
                                         const struct qcow2_writer_opts *o);

/* The same on FILE, a new empty file the caller created (for instance an
 * anonymous one, see common/outfile.h); W owns it from now on, and closes
 * it on error too. */
struct qcow2_writer *qcow2_writer_create_file (struct qbak_file *file,
                                              const struct qcow2_writer_opts *o);

/* Mark the image, from the next finish on, as the partial target of the
 * interrupted job ID (QCOW2_PARTIAL_ID_BYTES bytes), or clear the mark
 * (ID NULL).  The mark is a header extension QEMU ignores. */
void qcow2_writer_set_partial_id (struct qcow2_writer *w, const uint8_t *id);
/* Copy the partial mark into ID and return true, or return false when the
 * image has none (reopen reads it). */
bool qcow2_writer_get_partial_id (const struct qcow2_writer *w, uint8_t *id);
/* The descriptor of W's file (for linking it into place). */
int qcow2_writer_fd (const struct qcow2_writer *w);
/* W's file, still W's: for committing a storage object (common/storage.h)
 * after qcow2_writer_finish and before qcow2_writer_free closes it. */
struct qbak_file *qcow2_writer_file (const struct qcow2_writer *w);

/* Hold back at most N completed L2 tables (at least 1; never more than
 * the default of 4 MiB of tables) before they are written together.  For
 * tests, which need batches that fill up on small images. */
void qcow2_writer_set_table_batch (struct qcow2_writer *w, size_t n);

/* Open PATH, an image finished by qcow2_writer_finish() (possibly after
 * earlier reopen rounds), for a new pass of writes.  Anything else is
 * refused with STATUS_INVALID: the image must be qcow2 v3 with
 * header_length 112, no snapshots, no encryption, no feature bits, no
 * compression type, no external data file, no extended L2, refcount_order
 * 4, and no header extension but the backing format and the partial mark.
 * PATH must be a regular file, not a symbolic link.  Only reads the file;
 * returns NULL on error. */
struct qcow2_writer *qcow2_writer_reopen (const char *path);

/* Fill *O with W's geometry and backing file (the strings belong to W and
 * live as long as it does): what create was given, or what reopen read. */
void qcow2_writer_get_opts (const struct qcow2_writer *w,
                            struct qcow2_writer_opts *o);

/* From the next finish on, store NAME (and FORMAT; NULL: none) as the
 * image's backing file: a reopened image then switches its backing file
 * in the same header write that commits its new clusters. */
int qcow2_writer_set_backing (struct qcow2_writer *w, const char *name,
                              const char *format);

/* Grow the virtual size to SIZE (never shrink); the new clusters are
 * unallocated.  Before any request of the pass. */
int qcow2_writer_grow (struct qcow2_writer *w, uint64_t size);

/* Store guest data BUF for [OFFSET, +LEN).  OFFSET is cluster aligned; LEN
 * is a multiple of the cluster size, except that a request ending at the
 * virtual size may end in a partial cluster (its tail reads as zeroes).
 * Requests (writes and zeroes) of one pass come in increasing offset order
 * and never overlap; after a reopen they replace what the earlier passes
 * stored for their clusters.  The data is appended to the file with one
 * write.  LEN 0 is a no-op.  On error nothing changed (see above). */
int qcow2_writer_write (struct qcow2_writer *w, uint64_t offset,
                        const void *buf, size_t len);

/* Mark [OFFSET, +LEN) as zero clusters (L2 zero flag, no host cluster):
 * they read as zeroes even over a backing file.  Same alignment, order and
 * error rules as qcow2_writer_write. */
int qcow2_writer_zero (struct qcow2_writer *w, uint64_t offset, uint64_t len);

/* Write the last L2 table, the L1 table, the refcount table and blocks,
 * flush, write the header into cluster 0, flush.  Afterwards the file is a
 * valid image that qemu-img check finds clean.  Clusters never written or
 * zeroed are unallocated (they read from the backing file).  After a
 * failure it may be called again; writes and zeroes are refused once it
 * was called.  After success W accepts only qcow2_writer_free(). */
int qcow2_writer_finish (struct qcow2_writer *w);

/* Make everything written so far a valid, durable image (what
 * qcow2_writer_finish() does, the partial mark included), then go on with
 * the same pass: later requests continue in increasing offset order
 * after the last one.  A crash after it leaves at least this image; after
 * a failure the writer is as after a failed finish (no more requests). */
int qcow2_writer_checkpoint (struct qcow2_writer *w);

/* Free W and close the file.  An unfinished new target is left as it is
 * (its cluster 0 is zero: not a qcow2 image), an unfinished reopened one
 * is still its old image; the caller decides whether to unlink it.
 * Accepts NULL. */
void qcow2_writer_free (struct qcow2_writer *w);

#endif
