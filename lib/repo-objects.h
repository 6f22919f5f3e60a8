/* A repository's backup files opened through its storage (storage.h big
 * objects), never by a file-system path, so that the same code reads a
 * repository in a folder or in an object store. */
#ifndef QBAK_LIB_REPO_OBJECTS_H
#define QBAK_LIB_REPO_OBJECTS_H

#include "common/storage.h"
#include "formats/image.h"
#include "qbak.h"

/* The image_opener_fn of a storage (OPAQUE: the struct storage): a
 * backing file is the object its name names in the same folder
 * (storage_open_backing). */
struct qbak_file *repo_backing_opener (struct image *from, const char *name,
                                       void *opaque);

/* Open the qcow2 file KEY of ST (never probed), and its backing chain
 * through ST, with QBAK_OPEN_* FLAGS as qbak_image_open_format does. */
struct qbak_image *repo_image_open (struct storage *st, const char *key,
                                    unsigned flags);

#endif
