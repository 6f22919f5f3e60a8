/* formats/: what the parts of the qcow2 backup writer share: the
 * writer's state and the steps that the streaming store (qcow2-writer.c),
 * the reopen of a partial target (qcow2-writer-reopen.c) and finish
 * (qcow2-writer-finish.c) all take.  The interface is qcow2-writer.h. */
#ifndef QBAK_FORMATS_QCOW2_WRITER_INTERNAL_H
#define QBAK_FORMATS_QCOW2_WRITER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/fileio.h"
#include "formats/qcow2.h"
#include "formats/qcow2-writer.h"

#define REFCOUNT_ORDER 4                 /* 16-bit refcounts */
#define REFCOUNT_ENTRY_BYTES 2
_Static_assert ((1 << REFCOUNT_ORDER) / 8 == REFCOUNT_ENTRY_BYTES,
                "a refcount of 2^REFCOUNT_ORDER bits");
/* Host offsets must fit the L2 entry's offset field (bits 9-55). */
#define MAX_HOST_OFFSET (1ULL << 56)
/* Refcount table and blocks go out in requests of this size. */
#define REFCOUNT_CHUNK (1u << 20)
/* l2_index when no L2 table is in memory. */
#define NO_TABLE UINT64_MAX

#define SPARSE_PAGE 4096
#define PAGE_ENTRIES (SPARSE_PAGE / 8)
#define MAX_TABLE_PAGES ((1u << QCOW2_MAX_CLUSTER_BITS) / SPARSE_PAGE)

/* An L2 table in memory (CPU order), and which of its 4 KiB pages may hold
 * an entry: a page whose bit is clear is all zeroes.  Clearing, copying
 * and writing a table then cost the pages it uses, not its cluster size
 * (a scattered incremental over a huge disk touches one entry in each of
 * hundreds of tables). */
struct table {
  uint64_t *e;
  uint64_t used[MAX_TABLE_PAGES / 64];
};

struct qcow2_writer {
  struct qbak_file *file;
  char *backing_name;           /* NULL if none */
  char *backing_format;         /* NULL if none */
  bool has_partial_id;          /* cluster 0 carries the partial marker */
  uint8_t partial_id[QCOW2_PARTIAL_ID_BYTES];
  uint64_t size;
  uint32_t cluster_size;
  uint32_t cluster_bits;
  uint32_t l2_entries;          /* per L2 table */
  uint32_t l1_size;             /* entries in use */
  uint64_t l1_alloc;            /* entries in memory and on disk (whole
                                   clusters) */
  uint64_t *l1;                 /* CPU order, always */
  struct table l2;              /* the current L2 table */
  struct table l2_next;         /* the table a request moves to, loaded
                                   before anything is written */
  struct table spare;           /* a completed table on its way to disk */
  uint64_t *scratch;            /* a table converted for the disk, or read
                                   back from it */
  struct table *pending;        /* completed tables not yet written */
  uint64_t *table_area;         /* the entries of all the tables above */
  size_t table_area_bytes;
  uint64_t *pending_index;      /* the L1 index of each pending table */
  size_t npending;
  size_t pending_cap;
  uint64_t l2_index;            /* L1 index of l2, or NO_TABLE */
  bool l2_dirty;                /* l2 differs from its copy on disk */
  uint64_t next_host;           /* logical end: the next append goes here
                                   (cluster aligned; the file may be longer
                                   after a failed append) */
  uint64_t next_guest;          /* end of the previous request */
  uint64_t hwm;                 /* high-water mark: nothing was ever
                                   written at or past it (holes read 0) */
  uint64_t wb_start;            /* write-back not yet started from here */
  bool reopened;                /* an earlier pass left clusters that may
                                   no longer be referenced */
  bool finishing;               /* finish was called: no more requests */
  bool flush_failed;            /* a flush failed: nothing written since
                                   the last good one is known to be on
                                   disk, and a new flush would not say so */
  bool finished;
  uint64_t end;                 /* after a finish: the end of the file */
};

static inline uint64_t
div_round_up (uint64_t a, uint64_t b)
{
  return a / b + (a % b != 0);
}

/* qcow2-writer.c */
/* Allocate the writer and its tables for a disk of SIZE bytes in clusters
 * of CS bytes (both already checked).  Returns NULL with the error set. */
struct qcow2_writer *qcow2_writer_new (uint64_t size, uint32_t cs);
/* Reserve BYTES (rounded up to clusters) at *END, advancing it.  Only a
 * local copy of the logical end moves: the caller commits it on success. */
int qcow2_writer_reserve (const struct qcow2_writer *w, uint64_t *end,
                          uint64_t bytes);
/* Refuse an L2 entry E (entry I of the table of L1 index INDEX) that this
 * writer cannot have written, or that points at or past LIMIT. */
int qcow2_writer_check_l2_entry (const struct qcow2_writer *w, uint64_t e,
                                 uint64_t limit, uint64_t index, uint64_t i);
/* Write table T at host offset OFF (sparse past the high-water mark). */
int qcow2_writer_write_l2 (struct qcow2_writer *w, const struct table *t,
                           uint64_t off);
/* Write the held-back tables at OFF onwards; commit them (returns the
 * offset past them). */
int qcow2_writer_write_pending (struct qcow2_writer *w, uint64_t off);
uint64_t qcow2_writer_commit_pending (struct qcow2_writer *w, uint64_t off);
/* Refuse OP after a failed flush (see qcow2-writer.h). */
int qcow2_writer_check_flushable (struct qcow2_writer *w, const char *op);

#endif
