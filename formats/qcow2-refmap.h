/* A reference map of a qcow2 file: who uses each host cluster.
 *
 * Before metadata is written, every structure that points into the file
 * is registered here: the header, the L1 table, every L2 table and data
 * cluster (of the active L1 and of each internal snapshot), the refcount
 * table and blocks, the snapshot table, and whatever an upper layer adds
 * through a callback (formats/ does not know what it registers).  A
 * cluster used by two owners that may not share it, or referenced more
 * often than its on-disk refcount says, is refused with the offset and
 * both owners named, so nothing is written over live data and no live
 * cluster is freed or handed out again.
 *
 * Memory is one byte per host cluster of the file (never per guest byte);
 * the cost is one pass over the metadata and the referenced clusters. */
#ifndef QBAK_FORMATS_QCOW2_REFMAP_H
#define QBAK_FORMATS_QCOW2_REFMAP_H

#include <stdbool.h>
#include <stdint.h>

#include "formats/qcow2.h"

/* How a cluster may be shared.  Guest data clusters are shared between
 * the active L1 and internal snapshots (and compressed clusters share
 * host clusters with each other); L2 tables are shared between L1 tables.
 * Everything else belongs to one owner. */
enum qcow2_ref_class {
  QCOW2_REF_EXCLUSIVE,
  QCOW2_REF_L2,
  QCOW2_REF_DATA,
};

/* Who holds a reference, for messages only: rendered as
 * WHAT ['NAME'] [(LABEL VALUE)] [of snapshot SNAPSHOT]. */
struct qcow2_ref_owner {
  const char *what;
  const char *name;            /* or NULL */
  const char *label;           /* or NULL: no value */
  uint64_t value;
  bool value_hex;
  int64_t snapshot;            /* index of an internal snapshot, or -1 */
};

struct qcow2_refmap;

/* What qcow2_refmap_build registers on its own. */
enum {
  /* Cluster 0, the L1 table, the refcount table and the snapshot table:
   * ranges known from the header, no table is read. */
  QCOW2_REFMAP_TOP_TABLES = 1,
  /* Everything: also every L2 table and data cluster, the refcount
   * blocks, the snapshots' L1 and L2 tables; then every referenced
   * cluster's refcount is checked.  Needs the refcount table (a writable
   * open). */
  QCOW2_REFMAP_ALL = 2,
};

/* Registers an upper layer's references with qcow2_refmap_add.  It may be
 * called twice (again to name the owners once a conflict is found), and
 * must register the same references in the same order each time. */
typedef int (*qcow2_refmap_extra_fn) (struct qcow2_refmap *m, void *opaque);

/* Build the map of S.  NULL on error: STATUS_INVALID with the
 * offending offset and owners for a conflict, or an I/O error. */
struct qcow2_refmap *qcow2_refmap_build (struct qcow2 *s, unsigned what,
                                         qcow2_refmap_extra_fn extra,
                                         void *opaque);
void qcow2_refmap_free (struct qcow2_refmap *m);

/* Register [OFFSET, +LEN) (whole clusters; LEN 0 counts as one byte) for
 * OWNER.  -1 on a conflict or an offset outside the file; the builder
 * then sets the error, so a callback only passes the -1 on. */
int qcow2_refmap_add (struct qcow2_refmap *m, uint64_t offset, uint64_t len,
                      enum qcow2_ref_class cls,
                      const struct qcow2_ref_owner *owner);

/* After a build with QCOW2_REFMAP_ALL: the clusters whose refcount is
 * higher than the references found (qemu-img check's leaks: harmless to
 * reads, but never left by a writer that finished its file), counted
 * into *N, the first one's host offset into *FIRST.  Clusters past the
 * end of the file with a refcount count too.  0, or -1 on an I/O
 * error. */
int qcow2_refmap_leaks (struct qcow2_refmap *m, uint64_t *n,
                        uint64_t *first);

/* The image the map describes. */
struct qcow2 *qcow2_refmap_image (const struct qcow2_refmap *m);

/* Whether host cluster INDEX has an owner. */
bool qcow2_refmap_referenced (const struct qcow2_refmap *m, uint64_t index);
/* Drop every reference to the clusters of [OFFSET, +LEN) (a structure
 * that was just freed). */
void qcow2_refmap_forget (struct qcow2_refmap *m, uint64_t offset,
                          uint64_t len);

#endif
