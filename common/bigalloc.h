/* Large zeroed arrays that are touched sparsely but all over: the word
 * array of a dirty bitmap over a 1 TiB disk (2 MiB, one bit per 64 KiB
 * cluster), the table batch of the qcow2 writer.  1000 scattered dirty
 * clusters touch nearly every 4 KiB page of such an array, one page fault
 * each; where the kernel offers transparent huge pages on request
 * (madvise mode), a 2 MiB page takes one fault for all of them.
 *
 * Arrays from 2 to 8 MiB are mapped for huge pages; the others come from
 * calloc (4 KiB pages, mapped as they are touched), so what a huge page
 * can cost in memory beyond what is touched stays bounded.  Memory is
 * zeroed either way. */
#ifndef QBAK_COMMON_BIGALLOC_H
#define QBAK_COMMON_BIGALLOC_H

#include <stddef.h>

/* BYTES zeroed bytes, or NULL (errno ENOMEM). */
void *big_zalloc (size_t bytes);
/* Free what big_zalloc (BYTES) returned; accepts NULL. */
void big_free (void *p, size_t bytes);

#endif
