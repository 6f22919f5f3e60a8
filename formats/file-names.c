/* Backing and data file names: see file-names.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "formats/file-names.h"

/* Length of NAME's protocol prefix ("nbd" in "nbd:host:10809"), as QEMU
 * sees one: a ':' before any '/'.  0 if none. */
static size_t
image_name_protocol (const char *name)
{
  size_t n = strcspn (name, ":/");
  return name[n] == ':' ? n : 0;
}

char *
image_resolve_backing (const char *image_path, const char *name)
{
  char *r;
  if (name[0] == '/' || image_name_protocol (name)) {
    r = strdup (name);
  }
  else {
    const char *slash = strrchr (image_path, '/');
    int dirlen = slash ? (int) (slash - image_path + 1) : 0;
    if (asprintf (&r, "%.*s%s", dirlen, image_path, name) < 0)
      r = NULL;
  }
  if (!r)
    set_nomem ();
  return r;
}

int
image_check_local_name (const char *image_path, const char *what,
                        const char *name)
{
  size_t n = image_name_protocol (name);
  if (!n)
    return 0;
  set_invalid ("%s: %s '%s' names a '%.*s:' protocol, not a local file, "
               "and qbak opens only local files: point the image at a file "
               "(qemu-img rebase -u -b FILE -F FMT, or qemu-img amend -o "
               "data_file=FILE)", image_path, what, name, (int) n, name);
  return -1;
}

