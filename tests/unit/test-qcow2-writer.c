/* Unit tests for formats/qcow2-writer.c and formats/raw-writer.c.
 *
 * QEMU's own tools are the oracles: qemu-img check must find every
 * finished image clean, qemu-io reads the contents back with pattern
 * verification, qemu-img map shows what is data, zero or unallocated.
 * A missing tool fails the test.  Each test checks one behaviour, so a
 * failure names what broke.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <setjmp.h>
#include <cmocka.h>

#include "qbak.h"
#include "formats/qcow2-writer.h"
#include "formats/raw-writer.h"
#include "fixture.h"

#define KiB (1024ULL)
#define MiB (1024ULL * 1024)

/* ---- helpers ---------------------------------------------------------- */

/* qemu-io reads [OFF, +LEN) of PATH (format FMT) and verifies every byte
 * is PATTERN. */
static void
assert_reads (const char *fmt, const char *path, int pattern,
              uint64_t off, uint64_t len)
{
  char *out;
  assert_int_equal (fx_run (&out, "cd / && qemu-io -r -f %s -c "
                         "'read -P 0x%02x %llu %llu' '%s'", fmt, pattern,
                         (unsigned long long) off, (unsigned long long) len,
                         path), 0);
  assert_null (strstr (out, "verification failed"));
  assert_non_null (strstr (out, "read "));
  free (out);
}

struct map_ext {
  uint64_t start, length;
  bool present, zero, data;
  uint64_t offset;              /* host offset, or UINT64_MAX */
};

static bool
json_bool (const char *rec, const char *key)
{
  const char *p = strstr (rec, key);
  assert_non_null (p);
  return strncmp (p + strlen (key), " true", 5) == 0;
}

/* The qemu-img map extent of PATH that contains guest offset OFF. */
static struct map_ext
map_at (const char *path, uint64_t off)
{
  char *out, *rec;
  struct map_ext e = { 0 };
  bool found = false;

  assert_int_equal (fx_run (&out, "qemu-img map -f qcow2 --output=json '%s'",
                         path), 0);
  for (rec = strstr (out, "{"); rec && !found; rec = strstr (rec + 1, "{")) {
    char *end = strchr (rec, '}');
    unsigned long long start, length, offset;
    const char *o;
    assert_non_null (end);
    *end = '\0';
    assert_int_equal (sscanf (strstr (rec, "\"start\":"), "\"start\": %llu",
                              &start), 1);
    assert_int_equal (sscanf (strstr (rec, "\"length\":"),
                              "\"length\": %llu", &length), 1);
    if (off >= start && off - start < length) {
      e.start = start;
      e.length = length;
      e.present = json_bool (rec, "\"present\":");
      e.zero = json_bool (rec, "\"zero\":");
      e.data = json_bool (rec, "\"data\":");
      e.offset = UINT64_MAX;
      o = strstr (rec, "\"offset\":");
      if (o && sscanf (o, "\"offset\": %llu", &offset) == 1)
        e.offset = offset;
      found = true;
    }
    rec = end;
  }
  assert_true (found);
  free (out);
  return e;
}

static void *
filled (size_t len, int byte)
{
  void *p = malloc (len);
  assert_non_null (p);
  memset (p, byte, len);
  return p;
}

static struct qcow2_writer *
create (const char *path, uint64_t size, uint32_t cluster_size)
{
  struct qcow2_writer_opts o = { .size = size, .cluster_size = cluster_size };
  struct qcow2_writer *w = qcow2_writer_create (path, &o);
  if (!w)
    print_message ("%s\n", qbak_get_error ());
  assert_non_null (w);
  return w;
}

static void
write_pattern (struct qcow2_writer *w, uint64_t off, size_t len, int byte)
{
  void *buf = filled (len, byte);
  int r = qcow2_writer_write (w, off, buf, len);
  if (r < 0)
    print_message ("%s\n", qbak_get_error ());
  assert_int_equal (r, 0);
  free (buf);
}

static void
zero (struct qcow2_writer *w, uint64_t off, uint64_t len)
{
  int r = qcow2_writer_zero (w, off, len);
  if (r < 0)
    print_message ("%s\n", qbak_get_error ());
  assert_int_equal (r, 0);
}

static void
finish (struct qcow2_writer *w)
{
  int r = qcow2_writer_finish (w);
  if (r < 0)
    print_message ("%s\n", qbak_get_error ());
  assert_int_equal (r, 0);
  qcow2_writer_free (w);
}

/* The image of the data tests: 1 GiB, 64 KiB clusters (an L2 table maps
 * 512 MiB).  Data in cluster 0 (0x11) and 5 (0x22), zero clusters 6-7, a
 * 4 MiB run of 0x33 across the L2 boundary at 512 MiB, zero clusters at
 * 600 MiB (2 MiB) and one more data cluster at 900 MiB (0x44). */
static const char *
make_data_image (void)
{
  const char *path = fx_path ("data.qcow2");
  struct qcow2_writer *w = create (path, 1024 * MiB, 64 * KiB);
  write_pattern (w, 0, 64 * KiB, 0x11);
  write_pattern (w, 5 * 64 * KiB, 64 * KiB, 0x22);
  zero (w, 6 * 64 * KiB, 2 * 64 * KiB);
  write_pattern (w, 510 * MiB, 4 * MiB, 0x33);
  zero (w, 600 * MiB, 2 * MiB);
  write_pattern (w, 900 * MiB, 64 * KiB, 0x44);
  finish (w);
  return path;
}

/* ---- qcow2: empty image ----------------------------------------------- */

static void
test_empty_check_clean (void **state)
{
  (void) state;
  const char *path = fx_path ("empty.qcow2");
  finish (create (path, 64 * MiB, 64 * KiB));
  fx_assert_check_clean (path);
}

static void
test_empty_info (void **state)
{
  (void) state;
  const char *path = fx_path ("empty.qcow2");
  char *out;
  finish (create (path, 64 * MiB, 64 * KiB));
  assert_int_equal (fx_run (&out, "qemu-img info -f qcow2 --output=json '%s'",
                         path), 0);
  assert_non_null (strstr (out, "\"virtual-size\": 67108864,"));
  assert_non_null (strstr (out, "\"cluster-size\": 65536,"));
  assert_non_null (strstr (out, "\"compat\": \"1.1\""));
  assert_non_null (strstr (out, "\"refcount-bits\": 16"));
  free (out);
}

static void
test_empty_reads_zeroes (void **state)
{
  (void) state;
  const char *path = fx_path ("empty.qcow2");
  finish (create (path, 64 * MiB, 64 * KiB));
  assert_reads ("qcow2", path, 0, 0, 64 * MiB);
}

static void
test_zero_size_check_clean (void **state)
{
  (void) state;
  const char *path = fx_path ("zero-size.qcow2");
  finish (create (path, 0, 64 * KiB));
  fx_assert_check_clean (path);
}

/* An interrupted target: cluster 0 is still zero, so no tool takes it for
 * a qcow2 image. */
static void
test_unfinished_is_not_qcow2 (void **state)
{
  (void) state;
  const char *path = fx_path ("unfinished.qcow2");
  unsigned char magic[4] = { 1, 1, 1, 1 };
  struct qcow2_writer *w = create (path, 64 * MiB, 64 * KiB);
  write_pattern (w, 0, 128 * KiB, 0x11);
  qcow2_writer_free (w);

  int fd = open (path, O_RDONLY);
  assert_true (fd >= 0);
  assert_int_equal (pread (fd, magic, 4, 0), 4);
  close (fd);
  assert_memory_equal (magic, "\0\0\0\0", 4);
  assert_int_not_equal (fx_run (NULL, "qemu-img info -f qcow2 '%s'", path), 0);
}

/* ---- qcow2: data and zero clusters ------------------------------------ */

static void
test_data_check_clean (void **state)
{
  (void) state;
  fx_assert_check_clean (make_data_image ());
}

static void
test_data_reads_back (void **state)
{
  (void) state;
  const char *path = make_data_image ();
  assert_reads ("qcow2", path, 0x11, 0, 64 * KiB);
  assert_reads ("qcow2", path, 0x22, 5 * 64 * KiB, 64 * KiB);
  assert_reads ("qcow2", path, 0x33, 510 * MiB, 4 * MiB);
  assert_reads ("qcow2", path, 0x44, 900 * MiB, 64 * KiB);
}

static void
test_gaps_and_zeroes_read_zero (void **state)
{
  (void) state;
  const char *path = make_data_image ();
  assert_reads ("qcow2", path, 0, 64 * KiB, 4 * 64 * KiB);
  assert_reads ("qcow2", path, 0, 6 * 64 * KiB, 2 * 64 * KiB);
  assert_reads ("qcow2", path, 0, 514 * MiB, 386 * MiB);
  assert_reads ("qcow2", path, 0, 900 * MiB + 64 * KiB,
                124 * MiB - 64 * KiB);
}

static void
test_map_shows_data_zero_unallocated (void **state)
{
  (void) state;
  const char *path = make_data_image ();
  struct map_ext e;

  e = map_at (path, 0);
  assert_true (e.present && e.data && !e.zero);
  e = map_at (path, 64 * KiB);                /* never written */
  assert_true (!e.present && !e.data);
  e = map_at (path, 6 * 64 * KiB);            /* zero clusters */
  assert_true (e.present && e.zero && !e.data);
  assert_int_equal (e.start, 6 * 64 * KiB);
  assert_int_equal (e.length, 2 * 64 * KiB);
  e = map_at (path, 600 * MiB);
  assert_true (e.present && e.zero && !e.data);
  e = map_at (path, 900 * MiB);
  assert_true (e.present && e.data);
}

/* A multi-cluster write lands in contiguous host clusters, across an L2
 * table boundary: qemu-img map shows it as one extent. */
static void
test_run_is_contiguous (void **state)
{
  (void) state;
  const char *path = make_data_image ();
  struct map_ext e = map_at (path, 510 * MiB);
  assert_true (e.present && e.data);
  assert_int_equal (e.start, 510 * MiB);
  assert_int_equal (e.length, 4 * MiB);
  assert_int_not_equal (e.offset, UINT64_MAX);
}

/* ---- qcow2: backing file ---------------------------------------------- */

/* base.qcow2 (8 MiB of 0xaa, made by qemu-img) and top.qcow2 over it, with
 * the relative backing name "base.qcow2": data 0x11 in cluster 1, zero
 * clusters 2-3, the rest unwritten. */
static const char *
make_backed_image (void)
{
  const char *base = fx_path ("base.qcow2");
  const char *top = fx_path ("top.qcow2");
  struct qcow2_writer_opts o = {
    .size = 8 * MiB, .cluster_size = 64 * KiB,
    .backing_name = "base.qcow2", .backing_format = "qcow2",
  };
  struct qcow2_writer *w;

  assert_int_equal (fx_run (NULL, "qemu-img create -q -f qcow2 '%s' 8M && "
                         "qemu-io -f qcow2 -c 'write -P 0xaa 0 8M' '%s'",
                         base, base), 0);
  w = qcow2_writer_create (top, &o);
  assert_non_null (w);
  write_pattern (w, 64 * KiB, 64 * KiB, 0x11);
  zero (w, 2 * 64 * KiB, 2 * 64 * KiB);
  finish (w);
  return top;
}

static void
test_backing_check_clean (void **state)
{
  (void) state;
  fx_assert_check_clean (make_backed_image ());
}

static void
test_backing_name_stored (void **state)
{
  (void) state;
  const char *top = make_backed_image ();
  char *out;
  assert_int_equal (fx_run (&out, "qemu-img info -f qcow2 --output=json '%s'",
                         top), 0);
  assert_non_null (strstr (out, "\"backing-filename\": \"base.qcow2\""));
  assert_non_null (strstr (out, "\"backing-filename-format\": \"qcow2\""));
  free (out);
}

static void
test_backing_zero_clusters_read_zeroes (void **state)
{
  (void) state;
  assert_reads ("qcow2", make_backed_image (), 0, 2 * 64 * KiB,
                2 * 64 * KiB);
}

/* qemu-io runs from /, so "base.qcow2" resolves against top's directory. */
static void
test_backing_unwritten_reads_backing (void **state)
{
  (void) state;
  const char *top = make_backed_image ();
  assert_reads ("qcow2", top, 0xaa, 0, 64 * KiB);
  assert_reads ("qcow2", top, 0xaa, 4 * 64 * KiB, 8 * MiB - 4 * 64 * KiB);
}

static void
test_backing_data_overrides (void **state)
{
  (void) state;
  assert_reads ("qcow2", make_backed_image (), 0x11, 64 * KiB, 64 * KiB);
}

/* ---- qcow2: cluster sizes and odd sizes ------------------------------- */

/* Data, zeroes and a run in an image of SIZE with clusters of CS; the last
 * request writes the (possibly partial) last cluster with 0x5a. */
static void
round_trip (uint32_t cs, uint64_t size)
{
  const char *path = fx_path ("rt.qcow2");
  struct qcow2_writer *w = create (path, size, cs);
  uint64_t last = (size - 1) / cs * cs;
  char *out;

  write_pattern (w, 0, cs, 0x11);
  zero (w, 2 * (uint64_t) cs, cs);
  write_pattern (w, 4 * (uint64_t) cs, 8 * (size_t) cs, 0x33);
  write_pattern (w, last, (size_t) (size - last), 0x5a);
  finish (w);

  fx_assert_check_clean (path);
  assert_reads ("qcow2", path, 0x11, 0, cs);
  assert_reads ("qcow2", path, 0, cs, 3 * (uint64_t) cs);
  assert_reads ("qcow2", path, 0x33, 4 * (uint64_t) cs, 8 * (uint64_t) cs);
  assert_reads ("qcow2", path, 0x5a, last, size - last);
  assert_int_equal (fx_run (&out, "qemu-img info -f qcow2 --output=json '%s'",
                         path), 0);
  char want[64];
  snprintf (want, sizeof want, "\"virtual-size\": %llu,",
            (unsigned long long) size);
  assert_non_null (strstr (out, want));
  free (out);
}

static void
test_cluster_512 (void **state)
{
  (void) state;
  round_trip (512, 4 * MiB);
}

static void
test_cluster_64k (void **state)
{
  (void) state;
  round_trip (64 * KiB, 64 * MiB);
}

static void
test_cluster_2m (void **state)
{
  (void) state;
  round_trip (2 * MiB, 64 * MiB);
}

static void
test_partial_last_cluster_64k (void **state)
{
  (void) state;
  round_trip (64 * KiB, 10 * MiB + 512);
}

static void
test_partial_last_cluster_2m (void **state)
{
  (void) state;
  round_trip (2 * MiB, 30 * MiB + 4096);
}

/* 512-byte clusters: one refcount-table cluster covers 64 blocks of 256
 * clusters, 8 MiB; 12 MiB of data needs a refcount table of two clusters. */
static void
test_refcount_table_multi_cluster (void **state)
{
  (void) state;
  const char *path = fx_path ("rt512.qcow2");
  struct qcow2_writer *w = create (path, 16 * MiB, 512);
  unsigned char hdr[60];

  for (int i = 0; i < 12; i++)
    write_pattern (w, (uint64_t) i * MiB, MiB, 0x10 + i);
  finish (w);

  int fd = open (path, O_RDONLY);
  assert_true (fd >= 0);
  assert_int_equal (pread (fd, hdr, sizeof hdr, 0), (ssize_t) sizeof hdr);
  close (fd);
  uint32_t rt_clusters = (uint32_t) hdr[56] << 24 | (uint32_t) hdr[57] << 16
                         | (uint32_t) hdr[58] << 8 | hdr[59];
  assert_true (rt_clusters >= 2);
  fx_assert_check_clean (path);
  assert_reads ("qcow2", path, 0x10, 0, MiB);
  assert_reads ("qcow2", path, 0x1b, 11 * MiB, MiB);
  assert_reads ("qcow2", path, 0, 12 * MiB, 4 * MiB);
}

/* ---- qcow2: errors ---------------------------------------------------- */

static void
assert_usage_error (const char *fragment)
{
  assert_int_equal (qbak_get_status (), QBAK_STATUS_USAGE);
  if (!strstr (qbak_get_error (), fragment))
    print_message ("error: %s\n", qbak_get_error ());
  assert_non_null (strstr (qbak_get_error (), fragment));
}

static void
test_error_out_of_order_write (void **state)
{
  (void) state;
  const char *path = fx_path ("ooo.qcow2");
  struct qcow2_writer *w = create (path, 64 * MiB, 64 * KiB);
  void *buf = filled (64 * KiB, 0x11);
  assert_int_equal (qcow2_writer_write (w, 128 * KiB, buf, 64 * KiB), 0);
  assert_int_equal (qcow2_writer_write (w, 64 * KiB, buf, 64 * KiB), -1);
  assert_usage_error ("out of order");
  assert_non_null (strstr (qbak_get_error (), path));
  free (buf);
  qcow2_writer_free (w);
}

static void
test_error_overlapping_zero (void **state)
{
  (void) state;
  struct qcow2_writer *w = create (fx_path ("ovl.qcow2"), 64 * MiB, 64 * KiB);
  void *buf = filled (128 * KiB, 0x11);
  assert_int_equal (qcow2_writer_write (w, 0, buf, 128 * KiB), 0);
  assert_int_equal (qcow2_writer_zero (w, 64 * KiB, 128 * KiB), -1);
  assert_usage_error ("out of order");
  free (buf);
  qcow2_writer_free (w);
}

static void
test_error_unaligned_offset (void **state)
{
  (void) state;
  struct qcow2_writer *w = create (fx_path ("unal.qcow2"), 64 * MiB, 64 * KiB);
  void *buf = filled (64 * KiB, 0x11);
  assert_int_equal (qcow2_writer_write (w, 512, buf, 64 * KiB), -1);
  assert_usage_error ("not aligned");
  free (buf);
  qcow2_writer_free (w);
}

static void
test_error_partial_cluster_not_at_end (void **state)
{
  (void) state;
  struct qcow2_writer *w = create (fx_path ("part.qcow2"), 64 * MiB, 64 * KiB);
  void *buf = filled (4096, 0x11);
  assert_int_equal (qcow2_writer_write (w, 0, buf, 4096), -1);
  assert_usage_error ("not a multiple of the cluster size");
  free (buf);
  qcow2_writer_free (w);
}

static void
test_error_beyond_size (void **state)
{
  (void) state;
  struct qcow2_writer *w = create (fx_path ("big.qcow2"), 64 * MiB, 64 * KiB);
  assert_int_equal (qcow2_writer_zero (w, 64 * MiB - 64 * KiB, 128 * KiB),
                    -1);
  assert_usage_error ("beyond the virtual size");
  assert_int_equal (qcow2_writer_zero (w, UINT64_MAX - 65535, 65536), -1);
  assert_usage_error ("beyond the virtual size");
  qcow2_writer_free (w);
}

static void
test_error_existing_path (void **state)
{
  (void) state;
  const char *path = fx_path ("exists.qcow2");
  struct qcow2_writer_opts o = { .size = 64 * MiB, .cluster_size = 65536 };
  int fd = open (path, O_CREAT | O_WRONLY, 0644);
  assert_true (fd >= 0);
  close (fd);
  assert_null (qcow2_writer_create (path, &o));
  assert_int_equal (qbak_get_errno (), EEXIST);
  assert_usage_error (path);
}

static void
test_error_bad_cluster_size (void **state)
{
  (void) state;
  static const uint32_t bad[] = { 0, 256, 3000, 65535, 4u << 20 };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    struct qcow2_writer_opts o = { .size = 64 * MiB, .cluster_size = bad[i] };
    assert_null (qcow2_writer_create (fx_path ("bad.qcow2"), &o));
    assert_usage_error ("invalid cluster size");
    assert_int_equal (access (fx_path ("bad.qcow2"), F_OK), -1);
  }
}

static void
test_error_backing_name_too_long (void **state)
{
  (void) state;
  char name[451];
  memset (name, 'b', sizeof name - 1);
  name[sizeof name - 1] = '\0';
  struct qcow2_writer_opts o = { .size = 64 * MiB, .cluster_size = 512,
                                 .backing_name = name };
  assert_null (qcow2_writer_create (fx_path ("long.qcow2"), &o));
  assert_usage_error ("does not fit");
}

static void
test_error_write_after_finish (void **state)
{
  (void) state;
  struct qcow2_writer *w = create (fx_path ("fin.qcow2"), 64 * MiB, 64 * KiB);
  assert_int_equal (qcow2_writer_finish (w), 0);
  assert_int_equal (qcow2_writer_zero (w, 0, 64 * KiB), -1);
  assert_usage_error ("after the image was finished");
  qcow2_writer_free (w);
}

/* ---- qcow2: failures and resume --------------------------------------- */

/* The resume image: 16 MiB, 4 KiB clusters (an L2 table maps 2 MiB), over
 * base.qcow2 (16 MiB of 0xaa).  Each pass is a list of requests in
 * increasing order; pass 1 creates the image, later passes reopen it. */
#define RS_SIZE (16 * MiB)
#define RS_CS ((uint32_t) (4 * KiB))
#define ZERO_OP (-1)

struct op {
  int pass;
  int pattern;                  /* byte, or ZERO_OP */
  uint64_t off, len;
};

static const struct op ops[] = {
  { 1, 0x11, 0, 16 * KiB },
  { 1, ZERO_OP, 64 * KiB, 64 * KiB },
  { 1, 0x22, MiB, 64 * KiB },
  { 1, 0x33, 2 * MiB - 8 * KiB, 16 * KiB },        /* tables 0 and 1 */
  { 1, 0x44, 6 * MiB, 4 * KiB },                   /* table 3 */
  { 2, 0x55, 4 * KiB, 8 * KiB },                   /* replaces 0x11 */
  { 2, 0x66, 32 * KiB, 8 * KiB },                  /* new, table 0 */
  { 2, ZERO_OP, MiB, 32 * KiB },                   /* half of 0x22 */
  { 2, 0x77, 2 * MiB, 4 * KiB },                   /* replaces 0x33 */
  { 2, 0x88, 4 * MiB, 12 * KiB },                  /* new table 2 */
  { 2, ZERO_OP, 6 * MiB, 4 * KiB },                /* replaces 0x44 */
  { 2, 0x99, 8 * MiB - 4 * KiB, 8 * KiB },         /* tables 3 and 4 */
  { 2, 0x5a, 16 * MiB - 4 * KiB, 4 * KiB },        /* new table 7 */
  { 3, 0xab, 0, 4 * KiB },
  { 3, ZERO_OP, 4 * KiB, 4 * KiB },
  { 3, 0xcd, 2 * MiB + 4 * KiB, 4 * KiB },         /* replaces 0x33 */
  { 3, 0xef, 10 * MiB, 2 * MiB },                  /* all of table 5 */
};

/* Run the requests of PASS on W.  With RETRY, a call that fails with an
 * I/O error is made once more, and *FAILURES counts such failures.
 * Returns -1 (error left set) if a call fails for good.  No cmocka
 * asserts: forked children use it too. */
static int
run_pass (struct qcow2_writer *w, int pass, bool retry, int *failures)
{
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
    const struct op *o = &ops[i];
    void *buf = NULL;
    int r;

    if (o->pass != pass)
      continue;
    if (o->pattern != ZERO_OP) {
      buf = malloc (o->len);
      if (!buf)
        return -1;
      memset (buf, o->pattern, o->len);
    }
    for (int attempt = 0;; attempt++) {
      r = buf ? qcow2_writer_write (w, o->off, buf, o->len)
              : qcow2_writer_zero (w, o->off, o->len);
      if (r == 0 || !retry || attempt > 0 ||
          qbak_get_status () != QBAK_STATUS_IO)
        break;
      (*failures)++;
    }
    free (buf);
    if (r < 0)
      return -1;
  }
  return 0;
}

static struct qcow2_writer *
create_resume_target (const char *path)
{
  struct qcow2_writer_opts o = {
    .size = RS_SIZE, .cluster_size = RS_CS,
    .backing_name = "base.qcow2", .backing_format = "qcow2",
  };
  return qcow2_writer_create (path, &o);
}

static void
make_base (void)
{
  const char *base = fx_path ("base.qcow2");
  assert_int_equal (fx_run (NULL, "qemu-img create -q -f qcow2 '%s' 16M && "
                         "qemu-io -f qcow2 -c 'write -P 0xaa 0 16M' '%s'",
                         base, base), 0);
}

/* NAME made by qemu-img and qemu-io over base.qcow2 with the requests of
 * passes 1 to PASSES: the expected contents. */
static const char *
make_reference (const char *name, int passes)
{
  const char *ref = fx_path (name);
  char *cmd, *next;

  assert_true (asprintf (&cmd, "qemu-img create -q -f qcow2 -b base.qcow2 "
                         "-F qcow2 '%s' 16M && qemu-io -f qcow2", ref) >= 0);
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
    const struct op *o = &ops[i];
    if (o->pass > passes)
      continue;
    if (o->pattern == ZERO_OP)
      assert_true (asprintf (&next, "%s -c 'write -z %llu %llu'", cmd,
                             (unsigned long long) o->off,
                             (unsigned long long) o->len) >= 0);
    else
      assert_true (asprintf (&next, "%s -c 'write -P 0x%02x %llu %llu'",
                             cmd, o->pattern, (unsigned long long) o->off,
                             (unsigned long long) o->len) >= 0);
    free (cmd);
    cmd = next;
  }
  assert_int_equal (fx_run (NULL, "%s '%s'", cmd, ref), 0);
  free (cmd);
  return ref;
}

/* top.qcow2 after passes 1 to PASSES (the first creates it, each later
 * one reopens and finishes it), in this process. */
static const char *
make_resumed (int passes)
{
  const char *top = fx_path ("top.qcow2");
  int failures = 0;
  struct qcow2_writer *w = create_resume_target (top);

  assert_non_null (w);
  for (int pass = 1; pass <= passes; pass++) {
    if (pass > 1) {
      w = qcow2_writer_reopen (top);
      if (!w)
        print_message ("reopen: %s\n", qbak_get_error ());
      assert_non_null (w);
    }
    if (run_pass (w, pass, false, &failures) < 0)
      print_message ("pass %d: %s\n", pass, qbak_get_error ());
    assert_int_equal (failures, 0);
    finish (w);
  }
  return top;
}

static bool
same_contents (const char *a, const char *b)
{
  char *cmd;
  int status;

  assert_true (asprintf (&cmd, "cd / && qemu-img compare -q -f qcow2 "
                         "-F qcow2 '%s' '%s' >/dev/null 2>&1", a, b) >= 0);
  status = system (cmd);
  free (cmd);
  return WIFEXITED (status) && WEXITSTATUS (status) == 0;
}

static void
assert_same_contents (const char *a, const char *b)
{
  assert_int_equal (fx_run (NULL, "cd / && qemu-img compare -f qcow2 -F qcow2 "
                         "'%s' '%s'", a, b), 0);
}

/* qemu-img check's "Image end offset" is the file size: nothing of a
 * failed append was left behind. */
static void
assert_no_tail (const char *path)
{
  char *out, *p;
  unsigned long long end;
  struct stat st;

  assert_int_equal (fx_run (&out, "qemu-img check -f qcow2 '%s'", path), 0);
  p = strstr (out, "Image end offset: ");
  assert_non_null (p);
  assert_int_equal (sscanf (p, "Image end offset: %llu", &end), 1);
  free (out);
  assert_int_equal (stat (path, &st), 0);
  assert_int_equal ((unsigned long long) st.st_size, end);
}

/* ---- Forked children with fail points --------------------------------- */

/* Each scenario runs in a child with QBAK_FAILPOINT set for it alone
 * (common/failpoint.h, tests/unit/fixture.h). */
/* How many I/O calls (of any class) SCENARIO makes on a copy of FROM (or
 * on a new file if FROM is NULL) without faults. */
static unsigned long
count_io (const char *scenario, const char *from)
{
  const char *work = fx_path ("count.qcow2");
  unsigned long n;

  unlink (work);
  if (from)
    assert_int_equal (fx_run (NULL, "cp '%s' '%s'", from, work), 0);
  n = fx_count_io (scenario, work, "any");
  unlink (work);
  return n;
}

/* Write an error of a child and return CODE. */
static int
child_fail (int code, const char *what)
{
  fprintf (stderr, "child: %s: %s\n", what, qbak_get_error ());
  return code;
}

/* PASS on W, then finish, and free W.  With RETRY, a call that fails with
 * an I/O error (finish included) is made once more. */
/* Exit status of a child whose finish failed at a flush and whose retry
 * was refused, as it must be. */
#define CHILD_FLUSH_REFUSED 42

static int
child_pass_and_finish (struct qcow2_writer *w, int pass, bool retry)
{
  int failures = 0;
  const char *batch = getenv ("TEST_TABLE_BATCH");

  /* Small batches make the held-back tables overflow mid-request. */
  if (batch)
    qcow2_writer_set_table_batch (w, strtoul (batch, NULL, 10));

  if (run_pass (w, pass, retry, &failures) < 0)
    return child_fail (2, "pass");
  if (qcow2_writer_finish (w) < 0) {
    bool flush = strstr (qbak_get_error (), ": flush") != NULL;
    if (!retry || qbak_get_status () != QBAK_STATUS_IO)
      return child_fail (3, "finish");
    if (flush) {
      /* A failed flush is final: the retry must be refused, and so must
       * any other request. */
      if (qcow2_writer_finish (w) == 0 ||
          !strstr (qbak_get_error (), "after a failed flush") ||
          qcow2_writer_zero (w, RS_SIZE - RS_CS, RS_CS) == 0)
        return child_fail (5, "a finish retried after a failed flush was "
                           "not refused");
      qcow2_writer_free (w);
      return CHILD_FLUSH_REFUSED;
    }
    if (qcow2_writer_finish (w) < 0)
      return child_fail (4, "finish retried");
  }
  qcow2_writer_free (w);
  return 0;
}

/* The requests of the skip scenarios: 0x11 at 0, then a 4 MiB run at
 * 1 MiB that the fail point write:5:eio fails after its data and the
 * first of its two completed L2 tables were written (write 1 is create's
 * truncate, 2 the first request).  Returns 0 if exactly that happened. */
static int
child_skip_start (struct qcow2_writer *w)
{
  void *a = malloc (16 * KiB), *b = malloc (4 * MiB);
  int r = 0;

  if (!a || !b)
    return child_fail (10, "malloc");
  /* Tables go out with the request that completes them: write 1 is the
   * zeroed cluster 0 at create, 2 the first request's data, 3 the second
   * request's data, 4 and 5 the two tables it completes. */
  qcow2_writer_set_table_batch (w, 1);
  memset (a, 0x11, 16 * KiB);
  memset (b, 0x22, 4 * MiB);
  if (qcow2_writer_write (w, 0, a, 16 * KiB) < 0)
    r = child_fail (11, "first write");
  else if (qcow2_writer_write (w, MiB, b, 4 * MiB) == 0)
    r = child_fail (12, "the fail point did not fail the second write");
  else if (qbak_get_status () != QBAK_STATUS_IO)
    r = child_fail (13, "second write: not an I/O error");
  free (a);
  free (b);
  return r;
}

static int
child_main (const char *scenario, const char *path)
{
  struct qcow2_writer *w = NULL;
  int r;

  if (strcmp (scenario, "pass1-retry") == 0) {
    /* create itself is not retryable: a new file starts again. */
    if (!(w = create_resume_target (path))) {
      unlink (path);
      if (!(w = create_resume_target (path)))
        return child_fail (1, "create");
    }
    return child_pass_and_finish (w, 1, true);
  }
  if (strcmp (scenario, "pass2-retry") == 0) {
    if (!(w = qcow2_writer_reopen (path)) &&
        (qbak_get_status () != QBAK_STATUS_IO ||
         !(w = qcow2_writer_reopen (path))))
      return child_fail (1, "reopen");
    return child_pass_and_finish (w, 2, true);
  }
  if (strcmp (scenario, "pass2") == 0) {
    if (!(w = qcow2_writer_reopen (path)))
      return child_fail (1, "reopen");
    return child_pass_and_finish (w, 2, false);
  }
  if (strcmp (scenario, "skip") == 0 ||
      strcmp (scenario, "skip-finish") == 0) {
    void *c = malloc (8 * KiB);
    if (!c || !(w = create_resume_target (path)))
      return child_fail (1, "create");
    if ((r = child_skip_start (w)) != 0)
      return r;
    memset (c, 0x33, 8 * KiB);
    if (strcmp (scenario, "skip") == 0 &&
        (qcow2_writer_write (w, 6 * MiB, c, 8 * KiB) < 0 ||
         qcow2_writer_zero (w, 8 * MiB, 64 * KiB) < 0))
      return child_fail (20, "after the skipped write");
    free (c);
    if (qcow2_writer_finish (w) < 0)
      return child_fail (21, "finish");
    qcow2_writer_free (w);
    return 0;
  }
  fprintf (stderr, "child: unknown scenario %s\n", scenario);
  return 127;
}

/* A failed request leaves the writer as it was: repeating it succeeds and
 * the image is the same.  Every single I/O of pass 1 fails once in turn
 * (any:N:eio) and the child retries the failed call. */
static void
test_retry_after_eio (void **state)
{
  (void) state;
  const char *top = fx_path ("top.qcow2");
  const char *log = fx_path ("fp.log");
  const char *ref;
  unsigned long total;
  unsigned flushes = 0;
  int status;
  char fp[32];

  make_base ();
  ref = make_reference ("ref.qcow2", 1);
  total = count_io ("pass1-retry", NULL);
  assert_true (total > 10);
  for (unsigned long n = 1; n <= total; n++) {
    struct stat st;
    unlink (top);
    unlink (log);
    snprintf (fp, sizeof fp, "any:%lu:eio", n);
    status = fx_child_run ("pass1-retry", top,
                           &(struct fx_faults) { fp, NULL, log });
    assert_int_equal (stat (log, &st), 0);     /* the fault did happen */
    if (WIFEXITED (status) && WEXITSTATUS (status) == CHILD_FLUSH_REFUSED) {
      flushes++;
      continue;
    }
    fx_assert_exited (status, 0);
    fx_assert_check_clean (top);
    assert_same_contents (ref, top);
  }
  /* finish flushes twice: before and after the header write. */
  assert_int_equal (flushes, 2);
}

/* The same with batches of two tables, which overflow in the middle of
 * the requests: every write of held-back tables fails once in turn too. */
static void
test_retry_after_eio_batched (void **state)
{
  setenv ("TEST_TABLE_BATCH", "2", 1);
  test_retry_after_eio (state);
  unsetenv ("TEST_TABLE_BATCH");
}

/* The same for a resumed pass: reopen, the requests and finish. */
static void
test_retry_after_eio_resumed (void **state)
{
  (void) state;
  const char *old = fx_path ("old.qcow2");
  const char *work = fx_path ("work.qcow2");
  const char *log = fx_path ("fp.log");
  const char *ref;
  unsigned long total;
  unsigned flushes = 0;
  int status;
  char fp[32];

  make_base ();
  ref = make_reference ("ref.qcow2", 2);
  assert_int_equal (rename (make_resumed (1), old), 0);
  total = count_io ("pass2-retry", old);
  assert_true (total > 10);
  for (unsigned long n = 1; n <= total; n++) {
    struct stat st;
    unlink (log);
    assert_int_equal (fx_run (NULL, "cp '%s' '%s'", old, work), 0);
    snprintf (fp, sizeof fp, "any:%lu:eio", n);
    status = fx_child_run ("pass2-retry", work,
                           &(struct fx_faults) { fp, NULL, log });
    assert_int_equal (stat (log, &st), 0);
    fx_assert_check_clean (work);
    if (WIFEXITED (status) && WEXITSTATUS (status) == CHILD_FLUSH_REFUSED) {
      /* Refused for good: before the header write the old image stays,
       * after it (in the page cache) the new one. */
      if (!same_contents (old, work))
        assert_same_contents (ref, work);
      flushes++;
      continue;
    }
    fx_assert_exited (status, 0);
    assert_same_contents (ref, work);
  }
  assert_int_equal (flushes, 2);
}

static void
test_retry_after_eio_resumed_batched (void **state)
{
  setenv ("TEST_TABLE_BATCH", "2", 1);
  test_retry_after_eio_resumed (state);
  unsetenv ("TEST_TABLE_BATCH");
}

/* --on-error ignore: a request failed after writing its data and one L2
 * table; the job skips it and goes on.  Nothing of it is referenced, so
 * its range reads from the backing file, and the garbage it left past the
 * end is gone. */
static void
test_skip_after_error (void **state)
{
  (void) state;
  const char *top = fx_path ("top.qcow2");

  make_base ();
  fx_assert_exited (fx_child_run ("skip", top,
                                  &(struct fx_faults) { "write:5:eio" }),
                    0);
  fx_assert_check_clean (top);
  assert_no_tail (top);
  assert_reads ("qcow2", top, 0x11, 0, 16 * KiB);
  assert_reads ("qcow2", top, 0xaa, 16 * KiB, 6 * MiB - 16 * KiB);
  assert_reads ("qcow2", top, 0x33, 6 * MiB, 8 * KiB);
  assert_reads ("qcow2", top, 0xaa, 6 * MiB + 8 * KiB, 2 * MiB - 8 * KiB);
  assert_reads ("qcow2", top, 0, 8 * MiB, 64 * KiB);
  assert_reads ("qcow2", top, 0xaa, 8 * MiB + 64 * KiB,
                8 * MiB - 64 * KiB);
}

/* A failed job keeps what it wrote: finish right after the failed request
 * makes a valid image of the requests before it. */
static void
test_finish_after_error (void **state)
{
  (void) state;
  const char *top = fx_path ("top.qcow2");

  make_base ();
  fx_assert_exited (fx_child_run ("skip-finish", top,
                                  &(struct fx_faults) { "write:5:eio" }),
                    0);
  fx_assert_check_clean (top);
  assert_no_tail (top);
  assert_reads ("qcow2", top, 0x11, 0, 16 * KiB);
  assert_reads ("qcow2", top, 0xaa, 16 * KiB, 16 * MiB - 16 * KiB);
}

/* A second pass replaces clusters, adds clusters in old and new L2
 * ranges, and zeroes data: the image reads the latest content everywhere
 * (qemu-img compare against the same requests done by qemu-io), and
 * qemu-img check finds no errors and no leaks. */
static void
test_reopen_second_pass (void **state)
{
  (void) state;
  const char *top, *ref;

  make_base ();
  ref = make_reference ("ref.qcow2", 2);
  top = make_resumed (2);
  fx_assert_check_clean (top);
  assert_same_contents (ref, top);
}

static void
test_reopen_keeps_backing (void **state)
{
  (void) state;
  const char *top;
  char *out;

  make_base ();
  top = make_resumed (2);
  assert_int_equal (fx_run (&out, "qemu-img info -f qcow2 --output=json '%s'",
                         top), 0);
  assert_non_null (strstr (out, "\"backing-filename\": \"base.qcow2\""));
  assert_non_null (strstr (out, "\"backing-filename-format\": \"qcow2\""));
  free (out);
  assert_reads ("qcow2", top, 0xaa, 16 * KiB, 16 * KiB);
  assert_reads ("qcow2", top, 0x66, 32 * KiB, 8 * KiB);
  assert_reads ("qcow2", top, 0xaa, 40 * KiB, 24 * KiB);
  assert_reads ("qcow2", top, 0, 64 * KiB, 64 * KiB);
  assert_reads ("qcow2", top, 0, MiB, 32 * KiB);
  assert_reads ("qcow2", top, 0x22, MiB + 32 * KiB, 32 * KiB);
  assert_reads ("qcow2", top, 0, 6 * MiB, 4 * KiB);
  assert_reads ("qcow2", top, 0x5a, 16 * MiB - 4 * KiB, 4 * KiB);
}

static void
test_reopen_twice (void **state)
{
  (void) state;
  const char *top, *ref;

  make_base ();
  ref = make_reference ("ref.qcow2", 3);
  top = make_resumed (3);
  fx_assert_check_clean (top);
  assert_same_contents (ref, top);
}

static void
test_reopen_get_opts (void **state)
{
  (void) state;
  struct qcow2_writer *w;
  struct qcow2_writer_opts o;

  make_base ();
  w = qcow2_writer_reopen (make_resumed (1));
  assert_non_null (w);
  qcow2_writer_get_opts (w, &o);
  assert_int_equal (o.size, RS_SIZE);
  assert_int_equal (o.cluster_size, RS_CS);
  assert_string_equal (o.backing_name, "base.qcow2");
  assert_string_equal (o.backing_format, "qcow2");
  qcow2_writer_free (w);
}

/* A reopened writer that never finishes leaves the old image untouched. */
static void
test_reopen_unfinished_keeps_old (void **state)
{
  (void) state;
  const char *top, *old = fx_path ("old.qcow2");
  struct qcow2_writer *w;
  int failures = 0;

  make_base ();
  top = make_resumed (1);
  assert_int_equal (fx_run (NULL, "cp '%s' '%s'", top, old), 0);
  w = qcow2_writer_reopen (top);
  assert_non_null (w);
  assert_int_equal (run_pass (w, 2, false, &failures), 0);
  qcow2_writer_free (w);
  fx_assert_check_clean (top);
  assert_same_contents (old, top);
}

/* ---- qcow2: checkpoints ------------------------------------------------ */

/* Each step of make_data_image with a checkpoint after it, a copy of the
 * file taken at each checkpoint: every copy is a clean image that reads
 * as the steps so far, and the end result reads as the image made without
 * checkpoints (the tables of the current L2 range change after a
 * checkpoint: copy-on-write of the committed table). */
static void
test_checkpoint_mid_pass (void **state)
{
  (void) state;
  const char *ref = make_data_image ();
  const char *path = fx_path ("ckpt.qcow2");
  char copy[PATH_MAX];
  struct qcow2_writer *w = create (path, 1024 * MiB, 64 * KiB);
  int step = 0;
#define CHECKPOINT()                                                         \
  do {                                                                       \
    assert_int_equal (qcow2_writer_checkpoint (w), 0);                       \
    snprintf (copy, sizeof copy, "%s.%d", path, ++step);                     \
    assert_int_equal (fx_run (NULL, "cp --sparse=always '%s' '%s'", path,    \
                              copy), 0);                                     \
    fx_assert_check_clean (copy);                                            \
  } while (0)
  write_pattern (w, 0, 64 * KiB, 0x11);
  CHECKPOINT ();
  assert_reads ("qcow2", copy, 0x11, 0, 64 * KiB);
  assert_reads ("qcow2", copy, 0, 64 * KiB, 64 * KiB);
  write_pattern (w, 5 * 64 * KiB, 64 * KiB, 0x22);
  CHECKPOINT ();
  assert_reads ("qcow2", copy, 0x11, 0, 64 * KiB);
  assert_reads ("qcow2", copy, 0x22, 5 * 64 * KiB, 64 * KiB);
  zero (w, 6 * 64 * KiB, 2 * 64 * KiB);
  write_pattern (w, 510 * MiB, 4 * MiB, 0x33);
  CHECKPOINT ();
  assert_reads ("qcow2", copy, 0x33, 510 * MiB, 4 * MiB);
  zero (w, 600 * MiB, 2 * MiB);
  CHECKPOINT ();
  write_pattern (w, 900 * MiB, 64 * KiB, 0x44);
  finish (w);
#undef CHECKPOINT
  fx_assert_check_clean (path);
  assert_same_contents (ref, path);
  struct map_ext e = map_at (path, 6 * 64 * KiB);
  assert_true (e.zero && !e.data);
}

/* Allocated bytes of PATH. */
static uint64_t
allocated (const char *path)
{
  struct stat st;
  assert_int_equal (stat (path, &st), 0);
  return (uint64_t) st.st_blocks * 512;
}

/* Checkpoints leave old L1, refcount and L2 copies unreferenced; the
 * space is given back, so a target checkpointed a hundred times takes
 * about the space of one written in one go. */
static void
test_checkpoint_gives_space_back (void **state)
{
  (void) state;
  const char *one = fx_path ("one.qcow2"), *many = fx_path ("many.qcow2");
  struct qcow2_writer *a = create (one, 256 * MiB, 64 * KiB);
  struct qcow2_writer *b = create (many, 256 * MiB, 64 * KiB);
  for (int i = 0; i < 100; i++) {
    write_pattern (a, (uint64_t) i * 2 * MiB, 256 * KiB, 0x10 + i % 64);
    write_pattern (b, (uint64_t) i * 2 * MiB, 256 * KiB, 0x10 + i % 64);
    assert_int_equal (qcow2_writer_checkpoint (b), 0);
  }
  finish (a);
  finish (b);
  fx_assert_check_clean (many);
  assert_same_contents (one, many);
  print_message ("allocated: one pass %llu, 100 checkpoints %llu\n",
                 (unsigned long long) allocated (one),
                 (unsigned long long) allocated (many));
  /* Garbage of one checkpoint at most (L1, refcounts, an L2 copy). */
  assert_true (allocated (many) <= allocated (one) + 4 * 64 * KiB);
}

static void
assert_reopen_refused (const char *path, const char *fragment)
{
  assert_null (qcow2_writer_reopen (path));
  assert_int_equal (qbak_get_status (), QBAK_STATUS_INVALID);
  if (!strstr (qbak_get_error (), fragment))
    print_message ("error: %s\n", qbak_get_error ());
  assert_non_null (strstr (qbak_get_error (), fragment));
  assert_non_null (strstr (qbak_get_error (), path));
}

static void
test_reopen_refuses_compression_type (void **state)
{
  (void) state;
  const char *path = fx_path ("zstd.qcow2");
  assert_int_equal (fx_run (NULL, "qemu-img create -q -f qcow2 -o "
                         "compression_type=zstd '%s' 16M", path), 0);
  assert_reopen_refused (path, "compression type");
}

static void
test_reopen_refuses_v2 (void **state)
{
  (void) state;
  const char *path = fx_path ("v2.qcow2");
  assert_int_equal (fx_run (NULL, "qemu-img create -q -f qcow2 -o compat=0.10 "
                         "'%s' 16M", path), 0);
  assert_reopen_refused (path, "version 2");
}

/* qemu-img's own v3 images carry a feature name table. */
static void
test_reopen_refuses_qemu_image (void **state)
{
  (void) state;
  const char *path = fx_path ("qemu.qcow2");
  assert_int_equal (fx_run (NULL, "qemu-img create -q -f qcow2 '%s' 16M",
                         path), 0);
  assert_reopen_refused (path, "header extension");
}

static void
test_reopen_refuses_unfinished (void **state)
{
  (void) state;
  const char *path = fx_path ("unfinished.qcow2");
  struct qcow2_writer *w = create (path, 64 * MiB, 64 * KiB);
  write_pattern (w, 0, 64 * KiB, 0x11);
  qcow2_writer_free (w);
  assert_reopen_refused (path, "not a qcow2 image");
}

/* Crash safety of a resume: the child aborts at each of its I/O calls in
 * turn (any:N:abort).  The file is then the old image or the new one,
 * never anything else, qemu-img check finds no corruption, and a resume
 * of the crashed file succeeds. */
static void
test_resume_crash_at_every_io (void **state)
{
  (void) state;
  const char *old = fx_path ("old.qcow2"), *new = fx_path ("new.qcow2");
  const char *work = fx_path ("work.qcow2");
  unsigned long total;
  unsigned n_old = 0, n_new = 0;
  char fp[32];

  make_base ();
  assert_int_equal (rename (make_resumed (1), old), 0);
  assert_int_equal (fx_run (NULL, "cp '%s' '%s'", old, new), 0);
  fx_assert_exited (fx_child_run ("pass2", new, NULL), 0);
  assert_same_contents (make_reference ("ref.qcow2", 2), new);
  total = count_io ("pass2", old);
  assert_true (total > 10);
  for (unsigned long n = 1; n <= total; n++) {
    int status, r;
    assert_int_equal (fx_run (NULL, "cp '%s' '%s'", old, work), 0);
    snprintf (fp, sizeof fp, "any:%lu:abort", n);
    status = fx_child_run ("pass2", work, &(struct fx_faults) { fp });
    fx_assert_signaled (status, SIGABRT);
    r = fx_qemu_check (work);
    if (r != 0 && r != 3)              /* 3: leaks only */
      print_message ("crash at I/O %lu\n", n);
    assert_true (r == 0 || r == 3);
    if (same_contents (old, work))
      n_old++;
    else {
      assert_same_contents (new, work);
      n_new++;
    }
    /* The job runs again: resuming the crashed file gives the new image,
     * without leaks. */
    fx_assert_exited (fx_child_run ("pass2", work, NULL), 0);
    fx_assert_check_clean (work);
    assert_same_contents (new, work);
  }
  /* Before the header write the old image, after it the new one. */
  assert_true (n_old > 0 && n_new > 0);
}

static void
test_resume_crash_at_every_io_batched (void **state)
{
  setenv ("TEST_TABLE_BATCH", "2", 1);
  test_resume_crash_at_every_io (state);
  unsetenv ("TEST_TABLE_BATCH");
}

/* ---- raw writer ------------------------------------------------------- */

/* out.raw, 64 MiB: 0x11 at 1 MiB (64 KiB), zero range, 0x22 at 40 MiB
 * (128 KiB), 0x33 in the last 512 bytes; expected.raw the same made by
 * qemu-img and qemu-io. */
static const char *
make_raw (void)
{
  const char *out = fx_path ("out.raw");
  const char *exp = fx_path ("expected.raw");
  struct raw_writer *w = raw_writer_create (out, 64 * MiB);
  void *a = filled (64 * KiB, 0x11), *b = filled (128 * KiB, 0x22);
  void *c = filled (512, 0x33);

  assert_non_null (w);
  assert_int_equal (raw_writer_write (w, MiB, a, 64 * KiB), 0);
  assert_int_equal (raw_writer_zero (w, 2 * MiB, 8 * MiB), 0);
  assert_int_equal (raw_writer_write (w, 40 * MiB, b, 128 * KiB), 0);
  assert_int_equal (raw_writer_write (w, 64 * MiB - 512, c, 512), 0);
  assert_int_equal (raw_writer_finish (w), 0);
  raw_writer_free (w);
  free (a);
  free (b);
  free (c);

  assert_int_equal (fx_run (NULL, "qemu-img create -q -f raw '%s' 64M && "
                         "qemu-io -f raw -c 'write -P 0x11 1M 64k' "
                         "-c 'write -P 0x22 40M 128k' "
                         "-c 'write -P 0x33 67108352 512' '%s'", exp, exp),
                    0);
  return out;
}

static void
test_raw_matches_expected (void **state)
{
  (void) state;
  const char *out = make_raw ();
  struct stat st;
  assert_int_equal (fx_run (NULL, "qemu-img compare -f raw -F raw '%s' '%s'",
                         fx_path ("expected.raw"), out), 0);
  assert_int_equal (stat (out, &st), 0);
  assert_int_equal (st.st_size, 64 * MiB);
}

static void
test_raw_is_sparse (void **state)
{
  (void) state;
  struct stat st;
  assert_int_equal (stat (make_raw (), &st), 0);
  assert_true ((uint64_t) st.st_blocks * 512 <= 2 * MiB);
}

static void
test_raw_out_of_order (void **state)
{
  (void) state;
  struct raw_writer *w = raw_writer_create (fx_path ("ooo.raw"), 64 * MiB);
  void *buf = filled (4096, 0x11);
  assert_non_null (w);
  assert_int_equal (raw_writer_write (w, MiB, buf, 4096), 0);
  assert_int_equal (raw_writer_zero (w, 0, 4096), -1);
  assert_usage_error ("out of order");
  free (buf);
  raw_writer_free (w);
}

static void
test_raw_existing_path (void **state)
{
  (void) state;
  const char *path = fx_path ("exists.raw");
  int fd = open (path, O_CREAT | O_WRONLY, 0644);
  assert_true (fd >= 0);
  close (fd);
  assert_null (raw_writer_create (path, 64 * MiB));
  assert_int_equal (qbak_get_errno (), EEXIST);
  assert_usage_error (path);
}

#define T(f) cmocka_unit_test_setup_teardown (f, fx_setup, fx_teardown)

int
main (int argc, char **argv)
{
  if (fx_is_child (argc, argv))
    return child_main (argv[2], argv[3]);

  const struct CMUnitTest tests[] = {
    T (test_empty_check_clean),
    T (test_empty_info),
    T (test_empty_reads_zeroes),
    T (test_zero_size_check_clean),
    T (test_unfinished_is_not_qcow2),
    T (test_data_check_clean),
    T (test_data_reads_back),
    T (test_gaps_and_zeroes_read_zero),
    T (test_map_shows_data_zero_unallocated),
    T (test_run_is_contiguous),
    T (test_backing_check_clean),
    T (test_backing_name_stored),
    T (test_backing_zero_clusters_read_zeroes),
    T (test_backing_unwritten_reads_backing),
    T (test_backing_data_overrides),
    T (test_cluster_512),
    T (test_cluster_64k),
    T (test_cluster_2m),
    T (test_partial_last_cluster_64k),
    T (test_partial_last_cluster_2m),
    T (test_refcount_table_multi_cluster),
    T (test_error_out_of_order_write),
    T (test_error_overlapping_zero),
    T (test_error_unaligned_offset),
    T (test_error_partial_cluster_not_at_end),
    T (test_error_beyond_size),
    T (test_error_existing_path),
    T (test_error_bad_cluster_size),
    T (test_error_backing_name_too_long),
    T (test_error_write_after_finish),
    T (test_retry_after_eio),
    T (test_retry_after_eio_batched),
    T (test_retry_after_eio_resumed),
    T (test_retry_after_eio_resumed_batched),
    T (test_skip_after_error),
    T (test_finish_after_error),
    T (test_reopen_second_pass),
    T (test_reopen_keeps_backing),
    T (test_reopen_twice),
    T (test_reopen_get_opts),
    T (test_checkpoint_mid_pass),
    T (test_checkpoint_gives_space_back),
    T (test_reopen_unfinished_keeps_old),
    T (test_reopen_refuses_compression_type),
    T (test_reopen_refuses_v2),
    T (test_reopen_refuses_qemu_image),
    T (test_reopen_refuses_unfinished),
    T (test_resume_crash_at_every_io),
    T (test_resume_crash_at_every_io_batched),
    T (test_raw_matches_expected),
    T (test_raw_is_sparse),
    T (test_raw_out_of_order),
    T (test_raw_existing_path),
  };
  return cmocka_run_group_tests_name ("qcow2-writer", tests, NULL, NULL);
}
