/* formats/ internal: the request checks both target writers share. */
#ifndef QBAK_FORMATS_WRITER_REQUEST_H
#define QBAK_FORMATS_WRITER_REQUEST_H

#include <inttypes.h>
#include <stdint.h>

#include "common/error.h"

/* [OFFSET, +LEN) must lie inside a disk of SIZE bytes and start at or
 * after PREV_END (requests come in increasing order).  Sets *END. */
static inline int
writer_check_range (const char *fn, const char *op, uint64_t offset,
                    uint64_t len, uint64_t size, uint64_t prev_end,
                    uint64_t *end)
{
  if (__builtin_add_overflow (offset, len, end) || *end > size) {
    set_usage_error ("%s: %s at offset %" PRIu64 " length %" PRIu64
                     ": beyond the virtual size %" PRIu64, fn, op, offset,
                     len, size);
    return -1;
  }
  if (offset < prev_end) {
    set_usage_error ("%s: %s at offset %" PRIu64 ": out of order, the "
                     "previous request ended at %" PRIu64, fn, op, offset,
                     prev_end);
    return -1;
  }
  return 0;
}

#endif
