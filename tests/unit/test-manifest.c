/* Unit tests for formats/manifest.c: the manifest written while a backup
 * is copied, read back as runs, and composed along a chain.
 *
 * The hashes are checked against xxhsum -H3 (Debian's xxhash package) of
 * the same bytes, the digest against xxhsum -H2 of the file: an oracle
 * outside qbak. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#include "qbak.h"
#include "common/fileio.h"
#include "formats/manifest.h"
#include "fixture.h"

#define KiB 1024u
#define CS (64 * KiB)

static struct manifest_writer *
new_writer (const char *name, uint32_t cs, uint64_t size)
{
  struct qbak_file *f = qbak_file_create (fx_path (name));
  assert_non_null (f);
  struct manifest_writer *w = manifest_writer_create (f, cs, size);
  if (!w)
    print_message ("%s\n", qbak_get_error ());
  assert_non_null (w);
  return w;
}

/* A cluster of BYTE, the last byte I so clusters differ. */
static void
fill (uint8_t *buf, size_t len, int byte, unsigned i)
{
  memset (buf, byte, len);
  buf[len - 1] = (uint8_t) i;
}

/* xxhsum -H3 of LEN bytes of BUF, through a file. */
static uint64_t
xxhsum64 (const void *buf, size_t len)
{
  const char *p = fx_path ("hashme");
  FILE *f = fopen (p, "w");
  assert_non_null (f);
  assert_int_equal (fwrite (buf, 1, len, f), len);
  fclose (f);
  char *out;
  assert_int_equal (fx_run (&out, "xxhsum -H3 '%s'", p), 0);
  const char *eq = strstr (out, "= ");
  uint64_t h = 0;
  if (eq)
    h = strtoull (eq + 2, NULL, 16);
  else
    h = strtoull (out, NULL, 16);  /* GNU style: "HASH  FILE" */
  free (out);
  return h;
}

static void
finish (struct manifest_writer *w, char *digest)
{
  int r = manifest_writer_finish (w, digest);
  if (r < 0)
    print_message ("%s\n", qbak_get_error ());
  assert_int_equal (r, 0);
  manifest_writer_free (w);
}

static int
next (struct manifest_reader *r, struct manifest_run *run)
{
  int rc = manifest_reader_next (r, run);
  if (rc < 0)
    print_message ("%s\n", qbak_get_error ());
  return rc;
}

/* Data in clusters 0-2, zeroes 3-4, data 10, a last partial cluster of
 * data; read back as runs with the hashes xxhsum gives. */
static void
test_round_trip (void **state)
{
  (void) state;
  uint64_t size = 20 * (uint64_t) CS + 4096;
  uint8_t *buf = malloc (3 * CS);
  char digest[MANIFEST_DIGEST_HEX + 1];
  struct manifest_writer *w = new_writer ("m", CS, size);
  for (unsigned i = 0; i < 3; i++)
    fill (buf + i * CS, CS, 0x11, i);
  assert_int_equal (manifest_writer_data (w, 0, buf, 3 * CS), 0);
  assert_int_equal (manifest_writer_zero (w, 3 * CS, 2 * CS), 0);
  fill (buf, CS, 0x22, 9);
  assert_int_equal (manifest_writer_data (w, 10 * (uint64_t) CS, buf, CS), 0);
  fill (buf, 4096, 0x33, 7);
  assert_int_equal (manifest_writer_data (w, 20 * (uint64_t) CS, buf, 4096),
                    0);
  finish (w, digest);

  struct manifest_reader *r = manifest_reader_open (fx_path ("m"));
  assert_non_null (r);
  assert_int_equal (manifest_reader_cluster_size (r), CS);
  assert_int_equal (manifest_reader_virtual_size (r), size);
  struct manifest_run run;
  assert_int_equal (next (r, &run), 1);
  assert_int_equal (run.first, 0);
  assert_int_equal (run.count, 3);
  assert_int_equal (run.kind, MANIFEST_DATA);
  for (unsigned i = 0; i < 3; i++) {
    fill (buf, CS, 0x11, i);
    assert_true (run.hashes[i] == xxhsum64 (buf, CS));
    assert_true (run.hashes[i] == manifest_hash (buf, CS));
  }
  assert_int_equal (next (r, &run), 1);
  assert_int_equal (run.first, 3);
  assert_int_equal (run.count, 2);
  assert_int_equal (run.kind, MANIFEST_ZERO);
  assert_int_equal (next (r, &run), 1);
  assert_int_equal (run.first, 10);
  fill (buf, CS, 0x22, 9);
  assert_true (run.hashes[0] == xxhsum64 (buf, CS));
  assert_int_equal (next (r, &run), 1);
  assert_int_equal (run.first, 20);
  fill (buf, 4096, 0x33, 7);
  assert_true (run.hashes[0] == xxhsum64 (buf, 4096));
  assert_int_equal (next (r, &run), 0);
  assert_int_equal (next (r, &run), 0);
  manifest_reader_free (r);

  /* The digest is the XXH3-128 of the whole file. */
  char again[MANIFEST_DIGEST_HEX + 1], *out;
  assert_int_equal (manifest_file_digest (fx_path ("m"), again), 0);
  assert_string_equal (digest, again);
  assert_int_equal (fx_run (&out, "xxhsum -H2 '%s'", fx_path ("m")), 0);
  assert_non_null (strstr (out, digest));
  free (out);
  free (buf);
}

/* Long runs are split at MANIFEST_RUN_MAX and read back whole. */
static void
test_long_runs_split (void **state)
{
  (void) state;
  uint32_t cs = 512;
  uint64_t n = 3 * MANIFEST_RUN_MAX + 5;
  uint8_t *buf = calloc (n, cs);
  char digest[MANIFEST_DIGEST_HEX + 1];
  for (uint64_t i = 0; i < n; i++)
    buf[i * cs] = (uint8_t) (i * 7 + 1);
  struct manifest_writer *w = new_writer ("long", cs, 2 * n * cs);
  assert_int_equal (manifest_writer_data (w, 0, buf, n * cs), 0);
  assert_int_equal (manifest_writer_zero (w, n * cs, n * cs), 0);
  finish (w, digest);
  struct manifest_reader *r = manifest_reader_open (fx_path ("long"));
  struct manifest_run run;
  uint64_t data = 0, zero = 0;
  int rc;
  while ((rc = next (r, &run)) == 1) {
    assert_true (run.count <= MANIFEST_RUN_MAX);
    if (run.kind == MANIFEST_DATA) {
      assert_int_equal (run.first, data);
      for (uint32_t i = 0; i < run.count; i++)
        assert_true (run.hashes[i] ==
                     manifest_hash (buf + (run.first + i) * cs, cs));
      data += run.count;
    }
    else {
      assert_int_equal (run.first, n + zero);
      zero += run.count;
    }
  }
  assert_int_equal (rc, 0);
  assert_int_equal (data, n);
  assert_int_equal (zero, n);
  manifest_reader_free (r);
  free (buf);
}

static void
test_requests_in_order_only (void **state)
{
  (void) state;
  uint8_t buf[CS] = { 1 };
  struct manifest_writer *w = new_writer ("order", CS, 8 * (uint64_t) CS);
  assert_int_equal (manifest_writer_data (w, 2 * CS, buf, CS), 0);
  assert_int_equal (manifest_writer_data (w, CS, buf, CS), -1);
  manifest_writer_free (w);
  w = new_writer ("align", CS, 8 * (uint64_t) CS);
  assert_int_equal (manifest_writer_zero (w, 100, CS), -1);
  manifest_writer_free (w);
  w = new_writer ("past", CS, 8 * (uint64_t) CS);
  assert_int_equal (manifest_writer_zero (w, 7 * CS, 2 * CS), -1);
  manifest_writer_free (w);
}

/* Read every run of PATH; the result of the last call (0 or -1). */
static int
read_all (const char *path)
{
  struct manifest_reader *r = manifest_reader_open (path);
  if (!r)
    return -1;
  struct manifest_run run;
  int rc;
  while ((rc = manifest_reader_next (r, &run)) == 1)
    ;
  manifest_reader_free (r);
  return rc;
}

static void
make_sample (const char *name)
{
  uint8_t *buf = malloc (4 * CS);
  char digest[MANIFEST_DIGEST_HEX + 1];
  for (unsigned i = 0; i < 4; i++)
    fill (buf + i * CS, CS, 0x40 + (int) i, i);
  struct manifest_writer *w = new_writer (name, CS, 16 * (uint64_t) CS);
  assert_int_equal (manifest_writer_data (w, 0, buf, 4 * CS), 0);
  assert_int_equal (manifest_writer_zero (w, 8 * CS, CS), 0);
  finish (w, digest);
  free (buf);
}

/* Every single bit flipped anywhere, and every truncation, is refused. */
static void
test_damage_is_found (void **state)
{
  (void) state;
  make_sample ("ok");
  assert_int_equal (read_all (fx_path ("ok")), 0);
  char *out;
  assert_int_equal (fx_run (&out, "stat -c %%s '%s'", fx_path ("ok")), 0);
  long size = strtol (out, NULL, 10);
  free (out);
  assert_true (size > 64);
  for (long byte = 0; byte < size; byte++)
    for (int bit = 0; bit < 8; bit += 3) {
      assert_int_equal (fx_run (NULL, "cp '%s' '%s' && printf \"$(printf "
                                "'\\\\%%03o' $(( $(od -An -tu1 -j%ld -N1 '%s') "
                                "^ %d )))\" | dd of='%s' bs=1 seek=%ld "
                                "conv=notrunc status=none",
                                fx_path ("ok"), fx_path ("bad"), byte,
                                fx_path ("ok"), 1 << bit, fx_path ("bad"),
                                byte), 0);
      if (read_all (fx_path ("bad")) != -1)
        fail_msg ("a flip of bit %d of byte %ld went unnoticed", bit, byte);
      assert_int_equal (qbak_get_status (), QBAK_STATUS_INVALID);
    }
  for (long keep = 0; keep < size; keep += 7) {
    assert_int_equal (fx_run (NULL, "cp '%s' '%s' && truncate -s %ld '%s'",
                              fx_path ("ok"), fx_path ("bad"), keep,
                              fx_path ("bad")), 0);
    assert_int_equal (read_all (fx_path ("bad")), -1);
  }
  assert_int_equal (fx_run (NULL, "cp '%s' '%s' && echo x >> '%s'",
                            fx_path ("ok"), fx_path ("bad"),
                            fx_path ("bad")), 0);
  assert_int_equal (read_all (fx_path ("bad")), -1);
  assert_int_equal (fx_run (NULL, "ln -sf '%s' '%s'", fx_path ("ok"),
                            fx_path ("link")), 0);
  assert_null (manifest_reader_open (fx_path ("link")));
}

/* A chain of three: the top's clusters win, zero runs shadow data below,
 * unlisted clusters read through, past a shorter backing file zeroes. */
static void
test_view_of_a_chain (void **state)
{
  (void) state;
  char digest[MANIFEST_DIGEST_HEX + 1];
  uint8_t c[CS];
  uint64_t h[3];
  for (int i = 0; i < 3; i++) {
    fill (c, CS, 0x50 + i, (unsigned) i);
    h[i] = manifest_hash (c, CS);
  }
  /* base: 8 clusters, data in 0-5 (hash 0) */
  struct manifest_writer *w = new_writer ("base", CS, 8 * (uint64_t) CS);
  uint8_t *six = malloc (6 * CS);
  for (int i = 0; i < 6; i++)
    fill (six + i * CS, CS, 0x50, 0);
  assert_int_equal (manifest_writer_data (w, 0, six, 6 * CS), 0);
  finish (w, digest);
  /* mid: 8 clusters, data 1 (hash 1), zero 2 */
  w = new_writer ("mid", CS, 8 * (uint64_t) CS);
  fill (c, CS, 0x51, 1);
  assert_int_equal (manifest_writer_data (w, CS, c, CS), 0);
  assert_int_equal (manifest_writer_zero (w, 2 * CS, CS), 0);
  finish (w, digest);
  /* top: grown to 12 clusters, data 3 (hash 2) and 10 (hash 2) */
  w = new_writer ("top", CS, 12 * (uint64_t) CS);
  fill (c, CS, 0x52, 2);
  assert_int_equal (manifest_writer_data (w, 3 * CS, c, CS), 0);
  assert_int_equal (manifest_writer_data (w, 10 * CS, c, CS), 0);
  finish (w, digest);

  struct manifest_reader *layers[3] = {
    manifest_reader_open (fx_path ("top")),
    manifest_reader_open (fx_path ("mid")),
    manifest_reader_open (fx_path ("base")),
  };
  struct manifest_view *v = manifest_view_open (layers, 3,
                                                12 * (uint64_t) CS);
  assert_non_null (v);
  const struct { enum manifest_state s; int hash; } want[12] = {
    { MANIFEST_CLUSTER_DATA, 0 }, { MANIFEST_CLUSTER_DATA, 1 },
    { MANIFEST_CLUSTER_ZERO, -1 }, { MANIFEST_CLUSTER_DATA, 2 },
    { MANIFEST_CLUSTER_DATA, 0 }, { MANIFEST_CLUSTER_DATA, 0 },
    { MANIFEST_CLUSTER_ZERO, -1 }, { MANIFEST_CLUSTER_ZERO, -1 },
    { MANIFEST_CLUSTER_ZERO, -1 }, { MANIFEST_CLUSTER_ZERO, -1 },
    { MANIFEST_CLUSTER_DATA, 2 }, { MANIFEST_CLUSTER_ZERO, -1 },
  };
  for (uint64_t i = 0; i < 12; i++) {
    enum manifest_state s;
    uint64_t hash;
    assert_int_equal (manifest_view_get (v, i, &s, &hash), 0);
    assert_int_equal (s, want[i].s);
    if (s == MANIFEST_CLUSTER_DATA)
      assert_true (hash == h[want[i].hash]);
  }
  enum manifest_state s;
  uint64_t hash;
  assert_int_equal (manifest_view_get (v, 3, &s, &hash), -1);
  manifest_view_free (v);
  free (six);
}

/* The merge of two manifests lists what the top lists, and the bottom's
 * entries where the top lists nothing; runs split across both. */
static void
test_merge (void **state)
{
  (void) state;
  char digest[MANIFEST_DIGEST_HEX + 1];
  uint8_t *buf = malloc (8 * CS);
  uint64_t top_h[2], bot_h[7];
  struct manifest_writer *w = new_writer ("mtop", CS, 12 * (uint64_t) CS);
  for (unsigned i = 0; i < 2; i++) {
    fill (buf + i * CS, CS, 0x70, i);
    top_h[i] = manifest_hash (buf + i * CS, CS);
  }
  assert_int_equal (manifest_writer_data (w, 2 * CS, buf, 2 * CS), 0);
  assert_int_equal (manifest_writer_zero (w, 5 * CS, CS), 0);
  finish (w, digest);
  w = new_writer ("mbot", CS, 12 * (uint64_t) CS);
  for (unsigned i = 0; i < 7; i++) {
    fill (buf + i * CS, CS, 0x60, i);
    bot_h[i] = manifest_hash (buf + i * CS, CS);
  }
  assert_int_equal (manifest_writer_data (w, 0, buf, 7 * CS), 0);
  assert_int_equal (manifest_writer_zero (w, 8 * CS, CS), 0);
  finish (w, digest);

  struct qbak_file *f = qbak_file_create (fx_path ("merged"));
  w = manifest_writer_create (f, CS, 12 * (uint64_t) CS);
  assert_int_equal (manifest_merge (manifest_reader_open (fx_path ("mtop")),
                                    manifest_reader_open (fx_path ("mbot")),
                                    w, digest), 0);
  /* cluster: -1 unlisted, -2 zero, else the hash */
  uint64_t want_h[12];
  int want[12] = { 1, 1, 2, 2, 1, -2, 1, -1, -2, -1, -1, -1 };
  for (int i = 0; i < 12; i++)
    want_h[i] = want[i] == 1 ? bot_h[i] : want[i] == 2 ? top_h[i - 2] : 0;
  struct manifest_reader *r = manifest_reader_open (fx_path ("merged"));
  struct manifest_run run;
  int seen[12] = { 0 };
  int rc;
  while ((rc = next (r, &run)) == 1)
    for (uint32_t i = 0; i < run.count; i++) {
      uint64_t c = run.first + i;
      seen[c] = 1;
      if (run.kind == MANIFEST_ZERO)
        assert_int_equal (want[c], -2);
      else {
        assert_true (want[c] > 0);
        assert_true (run.hashes[i] == want_h[c]);
      }
    }
  assert_int_equal (rc, 0);
  for (int i = 0; i < 12; i++)
    assert_int_equal (seen[i], want[i] != -1);
  manifest_reader_free (r);
  char again[MANIFEST_DIGEST_HEX + 1];
  assert_int_equal (manifest_file_digest (fx_path ("merged"), again), 0);
  assert_string_equal (digest, again);
  free (buf);
}

int
main (void)
{
#define T(f) cmocka_unit_test_setup_teardown (f, fx_setup, fx_teardown)
  const struct CMUnitTest tests[] = {
    T (test_round_trip),
    T (test_long_runs_split),
    T (test_requests_in_order_only),
    T (test_damage_is_found),
    T (test_view_of_a_chain),
    T (test_merge),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
