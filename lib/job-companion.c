/* The companions of a job's bitmap: disabled bitmaps that each record
 * what an interrupted bitmap-mode 'always' job had to copy, named after
 * the job's bitmap and the interrupted job's id. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "common/error.h"
#include "lib/job-internal.h"

/* The companions of bitmap NAME are named after a hash of NAME, so any
 * name (up to QEMU's 1023 bytes) gives a short, fixed-length prefix. */
#define COMPANION_PREFIX "qbak-partial-"

static void
companion_prefix (const char *bitmap, char *buf, size_t size)
{
  snprintf (buf, size, COMPANION_PREFIX "%016llx-",
            (unsigned long long) XXH64 (bitmap, strlen (bitmap), 0));
}

void
job_companion_name (const char *bitmap, const uint8_t *id, char *buf,
                    size_t size)
{
  char hex[2 * TARGET_PARTIAL_ID_BYTES + 1];
  for (int i = 0; i < TARGET_PARTIAL_ID_BYTES; i++)
    snprintf (hex + 2 * i, 3, "%02x", id[i]);
  companion_prefix (bitmap, buf, size);
  size_t n = strlen (buf);
  snprintf (buf + n, size - n, "%s", hex);
}

int
job_find_companions (struct copy_job *j)
{
  char prefix[64];
  companion_prefix (j->o->bitmap, prefix, sizeof prefix);
  size_t plen = strlen (prefix);
  struct qcow2_bitmap_list *l = &j->src->bitmaps;
  j->companions = calloc (l->n ? l->n : 1, sizeof *j->companions);
  if (!j->companions) {
    set_nomem ();
    return -1;
  }
  for (size_t i = 0; i < l->n; i++) {
    struct qcow2_bitmap *b = &l->v[i];
    if (strncmp (b->name, prefix, plen) != 0)
      continue;
    if (b->in_use) {
      set_invalid ("%s: bitmap '%s' (what an interrupted job of bitmap "
                   "'%s' had to copy) is in use: the program that wrote it "
                   "did not close the image; remove it and make a full "
                   "backup", j->o->source, b->name, j->o->bitmap);
      error_set_hint (HINT_REMOVE_IN_USE_COMPANION);
      return -1;
    }
    j->companions[j->n_companions++] = (struct companion) { b->name, b };
  }
  return 0;
}
