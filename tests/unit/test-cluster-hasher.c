/* Unit tests for the hashing thread of the copy loop
 * (lib/cluster-hasher.c): every cluster's hash is XXH3-64 of its bytes
 * (libxxhash called directly is the oracle), the last cluster of a
 * request may be short, requests follow one another on one thread, and
 * the thread stops cleanly with or without work. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <xxhash.h>

#include "lib/cluster-hasher.h"

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
check_request (struct cluster_hasher *h, const uint8_t *buf, uint64_t len,
               uint32_t cs)
{
  uint64_t n = (len + cs - 1) / cs;
  uint64_t *hashes = calloc (n + 1, sizeof *hashes);
  assert_non_null (hashes);
  hashes[n] = 0x5a5a5a5a5a5a5a5aull;    /* must stay: one hash a cluster */
  cluster_hasher_submit (h, buf, len, cs, hashes);
  cluster_hasher_wait (h);
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
  struct cluster_hasher *h = cluster_hasher_start ();
  assert_non_null (h);
  check_request (h, buf, 8u << 20, 65536);
  check_request (h, buf, 8u << 20, 512);
  check_request (h, buf, 8u << 20, 2u << 20);
  /* A disk whose size is not a multiple of the cluster size. */
  check_request (h, buf + 3, (1u << 20) + 1536, 65536);
  check_request (h, buf, len, 2u << 20);
  cluster_hasher_stop (h);
  free (buf);
}

static void
test_many_requests_in_a_row (void **state)
{
  (void) state;
  uint8_t *buf = random_bytes (1u << 20, 2);
  struct cluster_hasher *h = cluster_hasher_start ();
  assert_non_null (h);
  for (unsigned i = 0; i < 2000; i++)
    check_request (h, buf + (i % 64) * 512, (256u << 10) + (i % 3) * 512,
                   4096);
  cluster_hasher_stop (h);
  free (buf);
}

static void
test_stop_idle_and_null (void **state)
{
  (void) state;
  cluster_hasher_stop (cluster_hasher_start ());
  cluster_hasher_stop (NULL);
}

/* Stopped right after a submit: the request in hand is finished first. */
static void
test_stop_with_request_in_hand (void **state)
{
  (void) state;
  uint8_t *buf = random_bytes (4u << 20, 3);
  uint64_t hashes[64];
  struct cluster_hasher *h = cluster_hasher_start ();
  assert_non_null (h);
  memset (hashes, 0, sizeof hashes);
  cluster_hasher_submit (h, buf, 4u << 20, 65536, hashes);
  cluster_hasher_stop (h);
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
