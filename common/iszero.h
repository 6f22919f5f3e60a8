/* Zero detection: check 16 bytes, then compare the buffer with itself
 * shifted by 16, which runs at memcmp speed. */
#ifndef QBAK_COMMON_ISZERO_H
#define QBAK_COMMON_ISZERO_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

static inline bool
is_zero (const void *buf, size_t len)
{
  const unsigned char *p = buf;
  size_t head = len < 16 ? len : 16;
  for (size_t i = 0; i < head; i++)
    if (p[i])
      return false;
  return len <= 16 || memcmp (p, p + 16, len - 16) == 0;
}

#endif
