/* formats/: streaming writer for new qcow2 v3 target images.
 *
 * A backup target is written front to back, once: guest data is appended
 * to the file in the order the copy job plans it, each L2 table is
 * appended once when the job moves past its range, and at the end the L1
 * table, the refcount structures and finally the header go out.  Memory is
 * the L1 table plus one L2 table, whatever the virtual size (DESIGN §7).
 *
 * Cluster 0 stays zero until qcow2_writer_finish() writes the header as its
 * very last step (after a flush), so a target interrupted at any point is
 * never mistaken for a valid qcow2 (DESIGN §4).
 *
 * Layout of a finished image (all refcounts are 1):
 *   cluster 0                 header, extensions, backing file name
 *   data clusters, L2 tables  interleaved, in write order
 *   L1 table
 *   refcount table
 *   refcount blocks           16-bit refcounts (refcount_order 4)
 *
 * Every function returns -1 (or NULL) on error with the error set
 * (common/error.h): QBAK_STATUS_USAGE for a bad argument or call order,
 * QBAK_STATUS_IO for I/O.  After an I/O error the writer refuses further
 * calls; free it.
 */
#ifndef QBAK_FORMATS_QCOW2_WRITER_H
#define QBAK_FORMATS_QCOW2_WRITER_H

#include <stddef.h>
#include <stdint.h>

struct qcow2_writer_opts {
  uint64_t size;              /* virtual size, a multiple of 512 */
  uint32_t cluster_size;      /* power of two, 512 .. 2 MiB */
  const char *backing_name;   /* stored as given in the header, or NULL */
  const char *backing_format; /* backing format extension, or NULL */
};

struct qcow2_writer;

/* Create PATH exclusively (O_EXCL: an existing file is refused with
 * QBAK_STATUS_USAGE and errno EEXIST).  Returns NULL on error. */
struct qcow2_writer *qcow2_writer_create (const char *path,
                                         const struct qcow2_writer_opts *o);

/* Store guest data BUF for [OFFSET, +LEN).  OFFSET is cluster aligned; LEN
 * is a multiple of the cluster size, except that a request ending at the
 * virtual size may end in a partial cluster (its tail reads as zeroes).
 * Requests (writes and zeroes) come in increasing offset order and never
 * overlap.  The data is appended to the file with one write.  LEN 0 is a
 * no-op. */
int qcow2_writer_write (struct qcow2_writer *w, uint64_t offset,
                        const void *buf, size_t len);

/* Mark [OFFSET, +LEN) as zero clusters (L2 zero flag, no host cluster):
 * they read as zeroes even over a backing file.  Same alignment and order
 * rules as qcow2_writer_write. */
int qcow2_writer_zero (struct qcow2_writer *w, uint64_t offset, uint64_t len);

/* Write the last L2 table, the L1 table, the refcount table and blocks,
 * flush, write the header into cluster 0, flush.  Afterwards the file is a
 * valid image that qemu-img check finds clean.  Clusters never written or
 * zeroed are unallocated (they read from the backing file).  Call once. */
int qcow2_writer_finish (struct qcow2_writer *w);

/* Free W and close the file.  An unfinished file is left as it is (its
 * cluster 0 is zero: not a qcow2 image); the caller decides whether to
 * unlink it.  Accepts NULL. */
void qcow2_writer_free (struct qcow2_writer *w);

#endif
