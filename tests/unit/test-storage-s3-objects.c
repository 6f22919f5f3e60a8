/* Big objects on S3 (common/storage-s3-objects.c) against the Ceph RADOS
 * Gateway the s3 test fixture starts (tests/s3/rgw.sh; endpoint and keys
 * in $QBAK_RGW_DIR/env): a qcow2 image written by the qcow2 writer
 * through storage_create_object reads back byte for byte like the same
 * image written to a local file, and qemu-img finds the downloaded copy
 * clean and equal to it; an aborted or never committed object leaves
 * nothing behind, not even an upload in progress; a write that would need
 * a part already sent is refused; a small object is one PUT; the read
 * cache costs about one GET per MiB for a sequential reader (counted by
 * tests/s3/fault-proxy.py) and reads right through 503s.  Each run uses
 * a bucket of its own, each test a prefix of its own. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/error.h"
#include "common/fileio.h"
#include "common/s3-client.h"
#include "common/s3-config.h"
#include "common/storage.h"
#include "formats/qcow2-writer.h"
#include "lib/repo-objects.h"
#include "qbak.h"
#include "helpers.h"
#include "s3-fixture.h"

#define MiB ((size_t) 1 << 20)

static char bucket[64];
static unsigned test_number;

struct fixture {
  char url[256];        /* s3://BUCKET/oN */
  char prefix[32];      /* oN */
  struct storage *st;
  char dir[TEST_PATH_MAX];
};




static int
group_setup (void **state)
{
  (void) state;
  gateway_bucket (bucket, sizeof bucket, "objects");
  return 0;
}

static int
group_teardown (void **state)
{
  (void) state;
  proxy_stop_stray ();
  return 0;
}

static struct storage *
open_prefix (const char *prefix)
{
  char url[300];
  snprintf (url, sizeof url, "s3://%s/%s", bucket, prefix);
  struct storage *st = storage_open (url, true, NULL);
  if (!st)
    fail_msg ("%s: %s", url, error_get_message ());
  return st;
}

static int
setup (void **state)
{
  struct fixture *fx = calloc (1, sizeof *fx);
  assert_non_null (fx);
  snprintf (fx->prefix, sizeof fx->prefix, "o%u", ++test_number);
  snprintf (fx->url, sizeof fx->url, "s3://%s/%s", bucket, fx->prefix);
  fx->st = open_prefix (fx->prefix);
  test_tmpdir_create (fx->dir);
  *state = fx;
  return 0;
}

static int
teardown (void **state)
{
  struct fixture *fx = *state;
  storage_close (fx->st);
  test_rmtree (fx->dir);
  free (fx);
  return 0;
}

static void
fill (uint8_t *buf, size_t len, unsigned seed)
{
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
  for (size_t i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    buf[i] = (uint8_t) x;
  }
}

/* Uploads in progress under the fixture's prefix. */
static int
uploads_in_progress (struct fixture *fx)
{
  return s3_uploads_in_progress (fx->url, fx->prefix);
}

/* The whole object KEY, read with reads of STEP bytes (the last one
 * shorter), into a malloc'ed buffer; its size in *LEN. */
static uint8_t *
read_object (struct storage *st, const char *key, size_t step, size_t *len)
{
  struct qbak_file *f = storage_open_object (st, key);
  if (!f)
    fail_msg ("%s: %s", key, error_get_message ());
  int64_t size = qbak_file_size (f);
  assert_true (size >= 0);
  uint8_t *buf = malloc (size ? (size_t) size : 1);
  assert_non_null (buf);
  for (size_t off = 0; off < (size_t) size; off += step) {
    size_t n = (size_t) size - off < step ? (size_t) size - off : step;
    if (qbak_file_pread (f, buf + off, n, off) < 0)
      fail_msg ("%s: %s", key, error_get_message ());
  }
  qbak_file_close (f);
  *len = (size_t) size;
  return buf;
}

static uint8_t *
read_local (const char *path, size_t *len)
{
  FILE *f = fopen (path, "rb");
  assert_non_null (f);
  assert_int_equal (fseek (f, 0, SEEK_END), 0);
  long size = ftell (f);
  assert_true (size >= 0);
  rewind (f);
  uint8_t *buf = malloc (size ? (size_t) size : 1);
  assert_non_null (buf);
  assert_int_equal (fread (buf, 1, (size_t) size, f), (size_t) size);
  fclose (f);
  *len = (size_t) size;
  return buf;
}

static void
write_file (const char *path, const uint8_t *buf, size_t len)
{
  FILE *f = fopen (path, "wb");
  assert_non_null (f);
  assert_int_equal (fwrite (buf, 1, len, f), len);
  assert_int_equal (fclose (f), 0);
}

/* The same guest data into W: 40 MiB of a 64 MiB disk, with holes (whole
 * L2 pages never written) and zeroed ranges. */
static void
write_guest (struct qcow2_writer *w)
{
  const size_t chunk = 2 * MiB;
  uint8_t *data = malloc (chunk);
  assert_non_null (data);
  unsigned i = 0;
  for (uint64_t off = 0; off < 64 * MiB; off += chunk, i++) {
    if (i % 8 == 3) {
      assert_int_equal (qcow2_writer_zero (w, off, chunk), 0);
      continue;
    }
    if (i % 8 == 5 || i % 8 == 6)
      continue;
    fill (data, chunk, i + 1);
    if (qcow2_writer_write (w, off, data, chunk) < 0)
      fail_msg ("%s", error_get_message ());
  }
  free (data);
}

/* A qcow2 image written through the object stream is, byte for byte, the
 * image the same writer makes in a local file, and qemu-img reads the
 * downloaded copy as the same disk. */
static void
test_qcow2_roundtrip (void **state)
{
  struct fixture *fx = *state;
  test_require_qemu ();
  const struct qcow2_writer_opts o = { .size = 64 * MiB,
                                       .cluster_size = 64 * 1024 };
  char local[TEST_PATH_MAX], copy[TEST_PATH_MAX];
  test_path (local, fx->dir, "local.qcow2");
  test_path (copy, fx->dir, "copy.qcow2");

  struct qbak_file *lf = qbak_file_create (local);
  assert_non_null (lf);
  struct qcow2_writer *lw = qcow2_writer_create_file (lf, &o);
  assert_non_null (lw);
  write_guest (lw);
  assert_int_equal (qcow2_writer_finish (lw), 0);
  qcow2_writer_free (lw);

  const char *key = "disks/vda/0001.qcow2";
  struct qbak_file *of = storage_create_object (fx->st, key);
  if (!of)
    fail_msg ("%s", error_get_message ());
  assert_false (storage_can_continue_in_place (fx->st));
  struct qcow2_writer *ow = qcow2_writer_create_file (of, &o);
  assert_non_null (ow);
  write_guest (ow);
  if (qcow2_writer_finish (ow) < 0)
    fail_msg ("%s", error_get_message ());
  /* Nothing is visible before the commit. */
  uint64_t size;
  assert_int_equal (storage_size (fx->st, key, &size), 0);
  assert_int_equal (uploads_in_progress (fx), 1);
  if (storage_commit_object (fx->st, of) < 0)
    fail_msg ("%s", error_get_message ());
  qcow2_writer_free (ow);
  assert_int_equal (uploads_in_progress (fx), 0);

  size_t llen, olen;
  uint8_t *lbuf = read_local (local, &llen);
  /* An odd read size: reads across blocks, through the cache. */
  uint8_t *obuf = read_object (fx->st, key, 100000, &olen);
  assert_true (llen > 16 * MiB);
  assert_int_equal (olen, llen);
  assert_memory_equal (obuf, lbuf, llen);
  write_file (copy, obuf, olen);
  assert_int_equal (test_sh_status ("qemu-img check -q '%s'", copy), 0);
  assert_int_equal (test_sh_status ("qemu-img compare -q '%s' '%s'", local,
                                    copy), 0);
  free (obuf);
  /* Big reads go straight through; the same bytes. */
  obuf = read_object (fx->st, key, 3 * MiB + 1, &olen);
  assert_memory_equal (obuf, lbuf, llen);
  free (obuf);
  free (lbuf);

  /* Opened as an image straight from the gateway (qcow2 reader over
   * ranged reads), its guest data is what qemu-img reads from the local
   * image. */
  char raw[TEST_PATH_MAX];
  test_path (raw, fx->dir, "local.raw");
  assert_int_equal (test_sh_status ("qemu-img convert -O raw '%s' '%s'",
                                    local, raw), 0);
  size_t rlen;
  uint8_t *rbuf = read_local (raw, &rlen);
  assert_int_equal (rlen, 64 * MiB);
  struct qbak_image *img = repo_image_open (fx->st, key,
                                            QBAK_OPEN_FORCE_SHARE);
  if (!img)
    fail_msg ("%s", error_get_message ());
  uint8_t *guest = malloc (rlen);
  assert_non_null (guest);
  for (size_t off = 0; off < rlen; off += 3 * MiB / 2) {
    size_t n = rlen - off < 3 * MiB / 2 ? rlen - off : 3 * MiB / 2;
    if (qbak_image_pread (img, guest + off, n, off) < 0)
      fail_msg ("%s", error_get_message ());
  }
  qbak_image_close (img);
  assert_memory_equal (guest, rbuf, rlen);
  free (guest);
  free (rbuf);

  /* Created once: the key is taken now. */
  assert_null (storage_create_object (fx->st, key));
  assert_int_equal (error_get_errno (), EEXIST);
  assert_int_equal (error_get_status (), STATUS_USAGE);
  /* A read-only file refuses writes. */
  struct qbak_file *rf = storage_open_object (fx->st, key);
  assert_non_null (rf);
  assert_int_equal (qbak_file_pwrite (rf, "x", 1, 0), -1);
  assert_int_equal (error_get_status (), STATUS_USAGE);
  assert_int_equal (qbak_file_truncate (rf, 0), -1);
  assert_int_equal (error_get_status (), STATUS_USAGE);
  qbak_file_close (rf);
  assert_null (storage_open_object (fx->st, "disks/vda/none.qcow2"));
  assert_int_equal (error_get_errno (), ENOENT);
  assert_int_equal (error_get_status (), STATUS_INVALID);
}

/* The qcow2 pattern by hand, 20 MiB: reserve the header cluster, append
 * with a gap, rewrite the head at 0 last; a failed append's tail cut. */
static void
write_pattern (struct qbak_file *f, uint8_t *expect)
{
  const size_t total = 20 * MiB;
  memset (expect, 0, total);
  assert_int_equal (qbak_file_truncate (f, 65536), 0);
  uint8_t *chunk = malloc (MiB);
  assert_non_null (chunk);
  uint64_t off = 65536;
  for (unsigned i = 0; off < total; i++) {
    size_t n = total - off < MiB ? total - off : MiB;
    if (i == 5) {
      off += 3 * MiB + 4096;    /* a gap: zeroes */
      continue;
    }
    fill (chunk, n, 100 + i);
    assert_int_equal (qbak_file_pwrite (f, chunk, n, off), 0);
    memcpy (expect + off, chunk, n);
    off += n;
  }
  /* Garbage of a failed append, cut again. */
  assert_int_equal (qbak_file_pwrite (f, chunk, 4096, total), 0);
  assert_int_equal (qbak_file_truncate (f, total), 0);
  assert_int_equal (qbak_file_flush (f), 0);
  fill (chunk, 65536, 7);
  assert_int_equal (qbak_file_pwrite (f, chunk, 65536, 0), 0);
  memcpy (expect, chunk, 65536);
  assert_int_equal (qbak_file_flush (f), 0);
  assert_int_equal (qbak_file_size (f), (int64_t) total);
  free (chunk);
}

static void
test_pattern_and_refusals (void **state)
{
  struct fixture *fx = *state;
  const size_t total = 20 * MiB;
  uint8_t *expect = malloc (total);
  assert_non_null (expect);
  struct qbak_file *f = storage_create_object (fx->st, "p/1");
  assert_non_null (f);
  write_pattern (f, expect);

  /* Parts 2 (8..16 MiB) is sent: going back into it is refused, and
   * nothing of that write lands in the head either. */
  uint8_t junk[8192];
  memset (junk, 0xee, sizeof junk);
  assert_int_equal (qbak_file_pwrite (f, junk, 4096, 9 * MiB), -1);
  assert_int_equal (error_get_status (), STATUS_USAGE);
  assert_non_null (strstr (error_get_message (),
                           "not supported on object storage"));
  assert_non_null (strstr (error_get_message (), "p/1"));
  assert_int_equal (qbak_file_pwrite (f, junk, 8192, 8 * MiB - 4096), -1);
  assert_int_equal (qbak_file_truncate (f, 10 * MiB), -1);
  assert_int_equal (error_get_status (), STATUS_USAGE);
  /* No reads, no holes. */
  assert_int_equal (qbak_file_pread (f, junk, 10, 0), -1);
  assert_int_equal (error_get_status (), STATUS_USAGE);
  assert_int_equal (qbak_file_punch_hole (f, 65536, 65536), -1);
  assert_int_equal (error_get_status (), STATUS_USAGE);
  /* The head still takes rewrites until the commit. */
  assert_int_equal (qbak_file_pwrite (f, junk, 100, 1000), 0);
  memcpy (expect + 1000, junk, 100);
  if (storage_commit_object (fx->st, f) < 0)
    fail_msg ("%s", error_get_message ());
  assert_int_equal (qbak_file_pwrite (f, junk, 1, 0), -1);
  qbak_file_close (f);

  size_t len;
  uint8_t *back = read_object (fx->st, "p/1", MiB, &len);
  assert_int_equal (len, total);
  assert_memory_equal (back, expect, total);
  free (back);
  free (expect);
}

/* Aborted, or closed without a commit: no object, no upload left. */
static void
test_abort (void **state)
{
  struct fixture *fx = *state;
  uint8_t *expect = malloc (20 * MiB);
  assert_non_null (expect);
  struct qbak_file *f = storage_create_object (fx->st, "a/1");
  assert_non_null (f);
  write_pattern (f, expect);
  assert_int_equal (uploads_in_progress (fx), 1);
  assert_int_equal (storage_abort_object (fx->st, f), 0);
  assert_int_equal (uploads_in_progress (fx), 0);
  qbak_file_close (f);
  uint64_t size;
  assert_int_equal (storage_size (fx->st, "a/1", &size), 0);

  f = storage_create_object (fx->st, "a/2");
  assert_non_null (f);
  write_pattern (f, expect);
  qbak_file_close (f);
  assert_int_equal (uploads_in_progress (fx), 0);
  assert_int_equal (storage_size (fx->st, "a/2", &size), 0);
  /* The key is free again. */
  f = storage_create_object (fx->st, "a/1");
  assert_non_null (f);
  assert_int_equal (storage_abort_object (fx->st, f), 0);
  qbak_file_close (f);
  free (expect);
}

/* Under the head: one PUT, no upload; created once. */
static void
test_small (void **state)
{
  struct fixture *fx = *state;
  const size_t total = 300000;
  uint8_t *expect = calloc (1, total);
  assert_non_null (expect);
  struct qbak_file *f = storage_create_object (fx->st, "m/1.json");
  assert_non_null (f);
  fill (expect + 4096, 100000, 9);
  assert_int_equal (qbak_file_pwrite (f, expect + 4096, 100000, 4096), 0);
  fill (expect + 200000, 100000, 10);
  assert_int_equal (qbak_file_pwrite (f, expect + 200000, 100000, 200000),
                    0);
  fill (expect, 4096, 11);
  assert_int_equal (qbak_file_pwrite (f, expect, 4096, 0), 0);
  assert_int_equal (uploads_in_progress (fx), 0);
  assert_int_equal (storage_commit_object (fx->st, f), 0);
  qbak_file_close (f);
  uint64_t size;
  assert_int_equal (storage_size (fx->st, "m/1.json", &size), 1);
  assert_int_equal (size, total);
  size_t len;
  uint8_t *back = read_object (fx->st, "m/1.json", 4096, &len);
  assert_int_equal (len, total);
  assert_memory_equal (back, expect, total);
  free (back);
  /* Taken between create and commit: the PUT is conditional. */
  f = storage_create_object (fx->st, "m/2.json");
  assert_non_null (f);
  assert_int_equal (qbak_file_pwrite (f, "mine", 4, 0), 0);
  assert_int_equal (storage_put_once (fx->st, "m/2.json", "theirs", 6), 0);
  assert_int_equal (storage_commit_object (fx->st, f), -1);
  assert_int_equal (error_get_errno (), EEXIST);
  assert_int_equal (storage_abort_object (fx->st, f), 0);
  qbak_file_close (f);
  void *buf;
  assert_int_equal (storage_get (fx->st, "m/2.json", &buf, &len), 0);
  assert_int_equal (len, 6);
  free (buf);
  /* An empty object is an object. */
  f = storage_create_object (fx->st, "m/empty");
  assert_non_null (f);
  assert_int_equal (storage_commit_object (fx->st, f), 0);
  qbak_file_close (f);
  assert_int_equal (storage_size (fx->st, "m/empty", &size), 1);
  assert_int_equal (size, 0);
  free (expect);
}

/* A new version of an object: the old one reads until the commit, an
 * aborted version changes nothing, a committed one replaces it whole,
 * big (an upload) or small (a PUT); storage_create_object still never
 * replaces, and a folder, which rewrites its files in place, refuses a
 * replacement. */
static void
test_replace (void **state)
{
  struct fixture *fx = *state;
  uint8_t *expect = malloc (20 * MiB), *old = calloc (1, 4096);
  assert_non_null (expect);
  assert_non_null (old);
  fill (old, 4096, 21);
  assert_int_equal (storage_put_once (fx->st, "r/1", old, 4096), 0);
  size_t len;
  uint64_t size;

  struct qbak_file *f = storage_replace_object (fx->st, "r/1");
  assert_non_null (f);
  write_pattern (f, expect);
  uint8_t *back = read_object (fx->st, "r/1", 4096, &len);
  assert_int_equal (len, 4096);
  assert_memory_equal (back, old, 4096);
  free (back);
  assert_int_equal (storage_abort_object (fx->st, f), 0);
  qbak_file_close (f);
  assert_int_equal (uploads_in_progress (fx), 0);
  back = read_object (fx->st, "r/1", 4096, &len);
  assert_int_equal (len, 4096);
  assert_memory_equal (back, old, 4096);
  free (back);

  f = storage_replace_object (fx->st, "r/1");
  assert_non_null (f);
  write_pattern (f, expect);
  assert_int_equal (storage_commit_object (fx->st, f), 0);
  qbak_file_close (f);
  back = read_object (fx->st, "r/1", MiB, &len);
  assert_int_equal (len, 20 * MiB);
  assert_memory_equal (back, expect, 20 * MiB);
  free (back);

  f = storage_replace_object (fx->st, "r/1");
  assert_non_null (f);
  assert_int_equal (qbak_file_pwrite (f, old, 4096, 0), 0);
  assert_int_equal (storage_commit_object (fx->st, f), 0);
  qbak_file_close (f);
  assert_int_equal (storage_size (fx->st, "r/1", &size), 1);
  assert_int_equal (size, 4096);

  /* A backup's object is still never replaced. */
  assert_null (storage_create_object (fx->st, "r/1"));
  assert_int_equal (error_get_errno (), EEXIST);

  char dir[TEST_PATH_MAX + 8];
  snprintf (dir, sizeof dir, "%s/repo", fx->dir);
  struct storage *folder = storage_open_folder (dir, true, NULL);
  assert_non_null (folder);
  assert_null (storage_replace_object (folder, "r/1"));
  assert_int_equal (error_get_status (), STATUS_USAGE);
  storage_close (folder);
  free (old);
  free (expect);
}

/* Through the proxy: a sequential reader costs about a GET per MiB, not
 * one per read; small reads inside cached blocks cost none; and reads
 * come right through one request in ten answered 503. */
static void
test_cache_and_faults (void **state)
{
  (void) state;
  struct proxy p;
  proxy_start (&p);
  char prefix[32];
  snprintf (prefix, sizeof prefix, "o%u", ++test_number);
  struct storage *st = open_prefix (prefix);
  const size_t total = 40 * MiB;
  uint8_t *data = malloc (total);
  assert_non_null (data);
  fill (data, total, 42);
  struct qbak_file *f = storage_create_object (st, "big");
  assert_non_null (f);
  for (size_t off = 0; off < total; off += MiB)
    assert_int_equal (qbak_file_pwrite (f, data + off, MiB, off), 0);
  if (storage_commit_object (st, f) < 0)
    fail_msg ("%s", error_get_message ());
  qbak_file_close (f);

  int before = proxy_count (&p, " GET ");
  size_t len;
  uint8_t *back = read_object (st, "big", MiB, &len);
  assert_int_equal (len, total);
  assert_memory_equal (back, data, total);
  free (back);
  int gets = proxy_count (&p, " GET ") - before;
  print_message ("sequential 1 MiB reads of 40 MiB: %d GETs\n", gets);
  assert_true (gets >= 20 && gets <= 42);

  /* 64 KiB reads of 4 MiB, twice, then scattered small reads in the
   * last 16 blocks read: cached. */
  f = storage_open_object (st, "big");
  assert_non_null (f);
  uint8_t small[65536];
  before = proxy_count (&p, " GET ");
  for (int round = 0; round < 2; round++)
    for (size_t off = 0; off < 4 * MiB; off += sizeof small) {
      assert_int_equal (qbak_file_pread (f, small, sizeof small, off), 0);
      assert_memory_equal (small, data + off, sizeof small);
    }
  for (unsigned i = 0; i < 12; i++) {
    size_t off = 4 * MiB - 4000 - i * 333331;
    assert_int_equal (qbak_file_pread (f, small, 3000, off), 0);
    assert_memory_equal (small, data + off, 3000);
  }
  gets = proxy_count (&p, " GET ") - before;
  print_message ("128 reads of 64 KiB and 12 small ones over 4 MiB: %d "
                 "GETs\n", gets);
  assert_true (gets >= 2 && gets <= 4);
  /* A read past the end is short. */
  assert_int_equal (qbak_file_pread (f, small, 10, total - 5), -1);
  assert_int_equal (error_get_status (), STATUS_INVALID);
  qbak_file_close (f);

  proxy_rules (&p, "[{\"fault\": \"503\", \"rate\": 0.1}]");
  int faults_before = proxy_count (&p, "fault 503");
  for (int i = 0; i < 2; i++) {
    back = read_object (st, "big", i ? 3 * MiB - 7 : 200000, &len);
    assert_int_equal (len, total);
    assert_memory_equal (back, data, total);
    free (back);
  }
  int faults = proxy_count (&p, "fault 503") - faults_before;
  print_message ("503 answers met while reading: %d\n", faults);
  assert_true (faults >= 1);
  storage_close (st);
  proxy_stop (&p);
  free (data);
}

/* Every part upload answered 500 until the retries give up: the commit
 * fails with the service's error, the file's flush reports it from then
 * on (an upload's failure is final), the abort leaves nothing behind. */
static void
test_part_failure (void **state)
{
  (void) state;
  struct proxy p;
  proxy_start (&p);
  char prefix[32];
  snprintf (prefix, sizeof prefix, "o%u", ++test_number);
  struct fixture fx = { .st = open_prefix (prefix) };
  snprintf (fx.prefix, sizeof fx.prefix, "%s", prefix);
  snprintf (fx.url, sizeof fx.url, "s3://%s/%s", bucket, prefix);
  proxy_rules (&p, "[{\"fault\": \"500\", \"match\": "
               "\"^PUT .*partNumber=\"}]");
  uint8_t *data = malloc (MiB);
  assert_non_null (data);
  fill (data, MiB, 5);
  struct qbak_file *f = storage_create_object (fx.st, "fail/1");
  assert_non_null (f);
  int failed_at = -1;
  for (size_t off = 0; off < 30 * MiB; off += MiB)
    if (qbak_file_pwrite (f, data, MiB, off) < 0) {
      failed_at = (int) (off / MiB);  /* a part failed already */
      break;
    }
  print_message ("a write failed at MiB %d (-1: none)\n", failed_at);
  assert_int_equal (storage_commit_object (fx.st, f), -1);
  assert_int_equal (error_get_status (), STATUS_IO);
  assert_non_null (strstr (error_get_message (), "500"));
  assert_int_equal (qbak_file_flush (f), -1);
  assert_int_equal (qbak_file_pwrite (f, data, 4096, 40 * MiB), -1);
  assert_int_equal (storage_abort_object (fx.st, f), 0);
  qbak_file_close (f);
  assert_true (proxy_count (&p, "fault 500") >= 8);
  proxy_rules (&p, "[]");
  uint64_t size;
  assert_int_equal (storage_size (fx.st, "fail/1", &size), 0);
  assert_int_equal (uploads_in_progress (&fx), 0);
  storage_close (fx.st);
  proxy_stop (&p);
  free (data);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_qcow2_roundtrip, setup, teardown),
    cmocka_unit_test_setup_teardown (test_pattern_and_refusals, setup,
                                     teardown),
    cmocka_unit_test_setup_teardown (test_abort, setup, teardown),
    cmocka_unit_test_setup_teardown (test_small, setup, teardown),
    cmocka_unit_test_setup_teardown (test_replace, setup, teardown),
    cmocka_unit_test (test_cache_and_faults),
    cmocka_unit_test (test_part_failure),
  };
  return cmocka_run_group_tests (tests, group_setup, group_teardown);
}
