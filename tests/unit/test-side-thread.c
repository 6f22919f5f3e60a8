/* Unit tests for verify's second thread
 * (lib/side-thread.c) and the cluster hashes it computes there
 * (manifest_hash_clusters): every cluster's hash is XXH3-64 of its bytes
 * (libxxhash called directly is the oracle), the last cluster of a
 * request may be short, calls follow one another on one thread, each
 * runs on the other thread, and the thread stops cleanly with or without
 * work. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <xxhash.h>

#include "formats/manifest.h"
#include "lib/side-thread.h"

struct req {
  const uint8_t *buf;
  uint64_t len;
  uint32_t cs;
  uint64_t *hashes;
  pthread_t ran_on;
};

static void
hash_req (void *opaque)
{
  struct req *r = opaque;
  r->ran_on = pthread_self ();
  manifest_hash_clusters (r->buf, r->len, r->cs, r->hashes);
}

static uint8_t *
random_bytes (size_t len, unsigned seed)
{
  uint8_t *p = malloc (len);
  assert_non_null (p);
  srand (seed);
  for (size_t i = 0; i < len; i++)
    p[i] = (uint8_t) rand ();
  return p;
}

static void
check_request (struct side_thread *h, const uint8_t *buf, uint64_t len,
               uint32_t cs)
{
  uint64_t n = (len + cs - 1) / cs;
  uint64_t *hashes = calloc (n + 1, sizeof *hashes);
  assert_non_null (hashes);
  hashes[n] = 0x5a5a5a5a5a5a5a5aull;    /* must stay: one hash a cluster */
  struct req r = { .buf = buf, .len = len, .cs = cs, .hashes = hashes };
  r.ran_on = pthread_self ();
  side_thread_run (h, hash_req, &r);
  side_thread_wait (h);
  assert_false (pthread_equal (r.ran_on, pthread_self ()));
  for (uint64_t i = 0; i < n; i++) {
    uint64_t off = i * cs, c = len - off < cs ? len - off : cs;
    assert_int_equal (hashes[i], XXH3_64bits (buf + off, c));
  }
  assert_int_equal (hashes[n], 0x5a5a5a5a5a5a5a5aull);
  free (hashes);
}

static void
test_cluster_sizes_and_short_tail (void **state)
{
  (void) state;
  size_t len = (8u << 20) + 4096;
  uint8_t *buf = random_bytes (len, 1);
  struct side_thread *h = side_thread_start ();
  assert_non_null (h);
  check_request (h, buf, 8u << 20, 65536);
  check_request (h, buf, 8u << 20, 512);
  check_request (h, buf, 8u << 20, 2u << 20);
  /* A disk whose size is not a multiple of the cluster size. */
  check_request (h, buf + 3, (1u << 20) + 1536, 65536);
  check_request (h, buf, len, 2u << 20);
  side_thread_stop (h);
  free (buf);
}

static void
test_many_requests_in_a_row (void **state)
{
  (void) state;
  uint8_t *buf = random_bytes (1u << 20, 2);
  struct side_thread *h = side_thread_start ();
  assert_non_null (h);
  for (unsigned i = 0; i < 2000; i++)
    check_request (h, buf + (i % 64) * 512, (256u << 10) + (i % 3) * 512,
                   4096);
  side_thread_stop (h);
  free (buf);
}

static void
test_stop_idle_and_null (void **state)
{
  (void) state;
  side_thread_stop (side_thread_start ());
  side_thread_stop (NULL);
}

/* Stopped right after a submit: the request in hand is finished first. */
static void
test_stop_with_request_in_hand (void **state)
{
  (void) state;
  uint8_t *buf = random_bytes (4u << 20, 3);
  uint64_t hashes[64];
  struct side_thread *h = side_thread_start ();
  assert_non_null (h);
  memset (hashes, 0, sizeof hashes);
  struct req r = { .buf = buf, .len = 4u << 20, .cs = 65536,
                   .hashes = hashes };
  side_thread_run (h, hash_req, &r);
  side_thread_stop (h);
  for (unsigned i = 0; i < 64; i++)
    assert_int_equal (hashes[i], XXH3_64bits (buf + i * 65536ull, 65536));
  free (buf);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_cluster_sizes_and_short_tail),
    cmocka_unit_test (test_many_requests_in_a_row),
    cmocka_unit_test (test_stop_idle_and_null),
    cmocka_unit_test (test_stop_with_request_in_hand),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
