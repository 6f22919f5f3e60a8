/* formats/: the file names an image stores (backing file, external data
 * file), resolved and checked as QEMU does.  Apart from probe.c so that
 * the format drivers, which resolve the names they read, and probe.c,
 * which opens the drivers, do not depend on each other. */
#ifndef QBAK_FORMATS_FILE_NAMES_H
#define QBAK_FORMATS_FILE_NAMES_H

#include <stddef.h>

/* Resolve NAME (a backing or data file name from IMAGE_PATH) as qemu-img
 * does: absolute names and names with a protocol prefix as they are,
 * relative ones against the directory of IMAGE_PATH, with no other change
 * (".." stays).  Returns a malloc'ed string or NULL. */
char *image_resolve_backing (const char *image_path, const char *name);
/* Refuse (STATUS_INVALID, 0 or -1) a file name WHAT ("backing
 * file", "external data file") stored in IMAGE_PATH that QEMU would open
 * through a protocol driver: qbak opens only local files. */
int image_check_local_name (const char *image_path, const char *what,
                            const char *name);

#endif
