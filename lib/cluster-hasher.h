/* lib/ internal: hash a request's clusters on a second thread while the
 * copying thread writes the same bytes to the target.
 *
 * A full backup reads a request, writes it to the target and records the
 * XXH3 of each of its clusters in the manifest.  Done in that order on
 * one thread, the hash adds its time to every request (about a tenth of
 * a copy that the page cache serves).  The write and the hash only read
 * the buffer, so they can run at once: the hash is then off the copy's
 * critical path wherever a second CPU is free, and costs two wake-ups a
 * request where none is. */
#ifndef QBAK_LIB_CLUSTER_HASHER_H
#define QBAK_LIB_CLUSTER_HASHER_H

#include <stdint.h>

struct cluster_hasher;

/* A hasher with its thread, or NULL if no thread could be started (the
 * caller then hashes on its own thread; nothing is lost but the
 * overlap). */
struct cluster_hasher *cluster_hasher_start (void);

/* Start hashing BUF's [0, LEN) in clusters of CLUSTER_SIZE (the last one
 * may be shorter) into HASHES, one manifest_hash per cluster.  BUF and
 * HASHES must stay as they are until cluster_hasher_wait returns.  One
 * request at a time. */
void cluster_hasher_submit (struct cluster_hasher *h, const uint8_t *buf,
                            uint64_t len, uint32_t cluster_size,
                            uint64_t *hashes);

/* Wait until the submitted request is hashed. */
void cluster_hasher_wait (struct cluster_hasher *h);

/* Stop the thread and free H (after the request in hand, if any).
 * Accepts NULL. */
void cluster_hasher_stop (struct cluster_hasher *h);

#endif
