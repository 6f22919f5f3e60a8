/* formats/: the limits of qcow2 that qbak enforces, in one place.  Most
 * are QEMU's (block/qcow2.h), so that an image qbak accepts or writes is
 * one QEMU accepts too; the bitmap ones are shared with bitmaps/. */
#ifndef QBAK_FORMATS_QCOW2_LIMITS_H
#define QBAK_FORMATS_QCOW2_LIMITS_H

/* Cluster sizes from 512 bytes to 2 MiB. */
#define QCOW2_MIN_CLUSTER_BITS 9
#define QCOW2_MAX_CLUSTER_BITS 21
/* Extended L2 entries split a cluster into 32 subclusters of at least
 * 512 bytes: clusters of at least 16 KiB. */
#define QCOW2_EXTL2_MIN_CLUSTER_BITS 14
/* QEMU refuses larger tables to bound the memory an open costs. */
#define QCOW2_MAX_L1_BYTES (32u << 20)
#define QCOW2_MAX_REFTABLE_BYTES (8u << 20)
/* Refcounts of 1 to 64 bits. */
#define QCOW2_MAX_REFCOUNT_ORDER 6
#define QCOW2_MAX_SNAPSHOTS 65536
/* Names the header stores (without a terminating NUL). */
#define QCOW2_MAX_BACKING_NAME 1023
/* QEMU refuses backing format names of 16 bytes or more. */
#define QCOW2_MAX_BACKING_FORMAT 15
/* Persistent dirty bitmaps. */
#define QCOW2_MAX_BITMAPS 65535
#define QCOW2_MAX_BITMAP_NAME 1023
#define QCOW2_MAX_BITMAP_DIRECTORY_SIZE (1024u * QCOW2_MAX_BITMAPS)

#endif
