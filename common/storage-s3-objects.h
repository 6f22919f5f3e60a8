/* Big objects of an S3 repository (storage-s3-objects.c): the table
 * storage-s3.c plugs in as its storage_ops.objects. */
#ifndef QBAK_COMMON_STORAGE_S3_OBJECTS_H
#define QBAK_COMMON_STORAGE_S3_OBJECTS_H

#include "common/storage.h"

/* Reading through a bounded cache of this many blocks of this size. */
#define S3_READ_BLOCK ((size_t) 1 << 20)
#define S3_READ_BLOCKS 16

extern const struct storage_object_ops s3_object_ops;

#endif
