/* A request's cluster hashes, computed on a second thread
 * (lib/cluster-hasher.h says why). */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "formats/manifest.h"
#include "lib/cluster-hasher.h"

struct cluster_hasher {
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t wake;          /* a request came, or stop */
  pthread_cond_t done;          /* the request is hashed */
  bool busy;                    /* a request is submitted, not yet hashed */
  bool stopping;
  const uint8_t *buf;
  uint64_t len;
  uint32_t cs;
  uint64_t *hashes;
};

static void
hash_request (const uint8_t *buf, uint64_t len, uint32_t cs,
              uint64_t *hashes)
{
  for (uint64_t pos = 0, i = 0; pos < len; pos += cs, i++)
    hashes[i] = manifest_hash (buf + pos, len - pos < cs ? len - pos : cs);
}

static void *
run (void *opaque)
{
  struct cluster_hasher *h = opaque;

  pthread_mutex_lock (&h->lock);
  for (;;) {
    while (!h->busy && !h->stopping)
      pthread_cond_wait (&h->wake, &h->lock);
    if (!h->busy)
      break;
    const uint8_t *buf = h->buf;
    uint64_t len = h->len, *hashes = h->hashes;
    uint32_t cs = h->cs;
    pthread_mutex_unlock (&h->lock);
    hash_request (buf, len, cs, hashes);
    pthread_mutex_lock (&h->lock);
    h->busy = false;
    pthread_cond_signal (&h->done);
  }
  pthread_mutex_unlock (&h->lock);
  return NULL;
}

struct cluster_hasher *
cluster_hasher_start (void)
{
  struct cluster_hasher *h = calloc (1, sizeof *h);
  if (!h)
    return NULL;
  pthread_mutex_init (&h->lock, NULL);
  pthread_cond_init (&h->wake, NULL);
  pthread_cond_init (&h->done, NULL);
  if (pthread_create (&h->thread, NULL, run, h) != 0) {
    pthread_cond_destroy (&h->done);
    pthread_cond_destroy (&h->wake);
    pthread_mutex_destroy (&h->lock);
    free (h);
    return NULL;
  }
  return h;
}

void
cluster_hasher_submit (struct cluster_hasher *h, const uint8_t *buf,
                       uint64_t len, uint32_t cluster_size,
                       uint64_t *hashes)
{
  pthread_mutex_lock (&h->lock);
  h->buf = buf;
  h->len = len;
  h->cs = cluster_size;
  h->hashes = hashes;
  h->busy = true;
  pthread_cond_signal (&h->wake);
  pthread_mutex_unlock (&h->lock);
}

void
cluster_hasher_wait (struct cluster_hasher *h)
{
  pthread_mutex_lock (&h->lock);
  while (h->busy)
    pthread_cond_wait (&h->done, &h->lock);
  pthread_mutex_unlock (&h->lock);
}

void
cluster_hasher_stop (struct cluster_hasher *h)
{
  if (!h)
    return;
  pthread_mutex_lock (&h->lock);
  h->stopping = true;
  pthread_cond_signal (&h->wake);
  pthread_mutex_unlock (&h->lock);
  pthread_join (h->thread, NULL);
  pthread_cond_destroy (&h->done);
  pthread_cond_destroy (&h->wake);
  pthread_mutex_destroy (&h->lock);
  free (h);
}
