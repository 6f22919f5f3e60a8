/* Large zeroed arrays, huge pages where offered: see bigalloc.h. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "common/bigalloc.h"

#define HUGE_PAGE ((size_t) 2 << 20)
/* A huge page is resident whole once one byte of it is touched: past this
 * size, memory would follow the array's size instead of what is touched
 * (a bitmap over 64 TiB is 128 MiB), so larger arrays get 4 KiB pages. */
#define HUGE_MAX ((size_t) 8 << 20)

static bool
use_huge (size_t bytes)
{
  return bytes >= HUGE_PAGE && bytes <= HUGE_MAX;
}

static size_t
mapped_size (size_t bytes)
{
  return (bytes + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
}

void *
big_zalloc (size_t bytes)
{
  if (!use_huge (bytes))
    return calloc (bytes ? bytes : 1, 1);

  /* Map one huge page more than needed and trim to an aligned start:
   * a huge page backs only an aligned 2 MiB range. */
  size_t len = mapped_size (bytes);
  uint8_t *p = mmap (NULL, len + HUGE_PAGE, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    errno = ENOMEM;
    return NULL;
  }
  uint8_t *start = (uint8_t *) (((uintptr_t) p + HUGE_PAGE - 1)
                                & ~(uintptr_t) (HUGE_PAGE - 1));
  if (start > p)
    munmap (p, (size_t) (start - p));
  munmap (start + len, (size_t) (p + HUGE_PAGE - start));
  /* Only a hint: without it the array is still correct. */
  (void) madvise (start, len, MADV_HUGEPAGE);
  return start;
}

void
big_free (void *p, size_t bytes)
{
  if (!p)
    return;
  if (!use_huge (bytes))
    free (p);
  else
    munmap (p, mapped_size (bytes));
}
