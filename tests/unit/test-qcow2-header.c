/* Unit tests for formats/qcow2-header.c, the qcow2 header codec.
 *
 * QEMU is the oracle: headers made by qemu-img create decode to the
 * fields qemu-img info reports, and a header qbak encodes over one of
 * them reads the same in qemu-img info and passes qemu-img check.  Every
 * limit is refused one step past it and accepted at it.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <cmocka.h>

#include "qbak.h"
#include "helpers.h"
#include "fixture.h"
#include "common/error.h"
#include "formats/qcow2-header.h"

#define KiB 1024ULL

/* Run a command that must succeed, its output into OUT. */
static void
sh_out (char *out, size_t outsz, const char *fmt, ...)
  __attribute__((format (printf, 3, 4)));
static void
sh_out (char *out, size_t outsz, const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  int st = test_vsh (out, outsz, fmt, ap);
  va_end (ap);
  if (st != 0)
    fail_msg ("command failed (status %d): %s", st, out);
}

/* The value of "KEY": in JSON (a string without its quotes, or a number
 * or literal) into OUT; false if absent.  Enough for qemu-img info's
 * flat keys. */
static bool
json_value (const char *json, const char *key, char *out, size_t outsz)
{
  char pat[128];
  snprintf (pat, sizeof pat, "\"%s\": ", key);
  const char *p = strstr (json, pat);
  if (!p)
    return false;
  p += strlen (pat);
  bool quoted = *p == '"';
  if (quoted)
    p++;
  size_t n = quoted ? strcspn (p, "\"") : strcspn (p, ",\n}");
  assert_true (n < outsz);
  memcpy (out, p, n);
  out[n] = '\0';
  return true;
}

static uint64_t
json_number (const char *json, const char *key)
{
  char v[64];
  if (!json_value (json, key, v, sizeof v))
    fail_msg ("qemu-img info has no '%s'", key);
  return strtoull (v, NULL, 10);
}

static bool
json_true (const char *json, const char *key)
{
  char v[16];
  return json_value (json, key, v, sizeof v) && strcmp (v, "true") == 0;
}

static size_t
count (const char *s, const char *what)
{
  size_t n = 0;
  for (const char *p = strstr (s, what); p; p = strstr (p + 1, what))
    n++;
  return n;
}

/* The file PATH (at least one largest cluster, zero-padded), its size
 * in *FILE_SIZE and *LEN. */
static uint8_t *
read_head (const char *path, size_t *len, uint64_t *file_size)
{
  uint8_t *b = test_read_file (path, len);
  size_t min = (size_t) 1 << QCOW2_MAX_CLUSTER_BITS;
  *file_size = *len;
  if (*len < min) {
    b = realloc (b, min);
    assert_non_null (b);
    memset (b + *len, 0, min - *len);
  }
  return b;
}

/* HDR must show what qemu-img info says of the image in JSON. */
static void
check_against_info (const struct qcow2_header *hdr, const char *json)
{
  char v[1024];

  assert_int_equal (hdr->size, json_number (json, "virtual-size"));
  assert_int_equal (1ULL << hdr->cluster_bits,
                    json_number (json, "cluster-size"));
  assert_true (json_value (json, "compat", v, sizeof v));
  assert_int_equal (hdr->version, strcmp (v, "0.10") == 0 ? 2 : 3);
  assert_int_equal (1u << hdr->refcount_order,
                    json_number (json, "refcount-bits"));
  assert_int_equal (json_true (json, "lazy-refcounts"),
                    !!(hdr->compatible_features &
                       QCOW2_COMPAT_LAZY_REFCOUNTS));
  if (json_value (json, "compression-type", v, sizeof v))
    assert_int_equal (hdr->compression_type, strcmp (v, "zstd") == 0);
  assert_int_equal (json_true (json, "extended-l2"),
                    !!(hdr->incompatible_features & QCOW2_INCOMPAT_EXTL2));
  if (json_value (json, "backing-filename", v, sizeof v)) {
    assert_non_null (hdr->backing_name);
    assert_string_equal (hdr->backing_name, v);
  }
  else
    assert_null (hdr->backing_name);
  if (json_value (json, "backing-filename-format", v, sizeof v)) {
    assert_non_null (hdr->backing_format);
    assert_string_equal (hdr->backing_format, v);
  }
  else
    assert_null (hdr->backing_format);
  if (json_value (json, "data-file", v, sizeof v)) {
    assert_non_null (hdr->data_file_name);
    assert_string_equal (hdr->data_file_name, v);
  }
  else
    assert_null (hdr->data_file_name);
  assert_int_equal (json_true (json, "data-file-raw"),
                    !!(hdr->autoclear_features & QCOW2_AUTOCLEAR_DATA_RAW));
  size_t nb = count (json, "\"granularity\"");
  assert_int_equal (hdr->has_bitmaps_ext, nb > 0);
  if (nb)
    assert_int_equal (hdr->nb_bitmaps, nb);
}

/* Decode the image NAME made by the shell command CMD, compare with
 * qemu-img info; then encode it, decode again (equal), and write the
 * encoding over cluster 0 of a copy, which QEMU must read the same and
 * find clean. */
static void
check_image (const char *name, const char *cmd)
{
  const char *p = fx_path (name), *copy = fx_path ("copy.qcow2");
  char json[16384];
  struct qcow2_header hdr, again;
  uint64_t file_size;
  size_t len;

  test_sh ("cd '%s' && rm -f *.qcow2 *.raw && %s", fx_dir (), cmd);
  uint8_t *buf = read_head (p, &len, &file_size);
  assert_int_equal (qcow2_header_decode (p, buf, len, file_size, &hdr), 0);
  sh_out (json, sizeof json, "qemu-img info --output=json '%s'", p);
  check_against_info (&hdr, json);

  size_t cs = (size_t) 1 << hdr.cluster_bits;
  uint8_t *enc = malloc (cs);
  assert_non_null (enc);
  assert_int_equal (qcow2_header_encode (&hdr, enc, cs), 0);
  assert_int_equal (qcow2_header_decode (p, enc, cs, file_size, &again), 0);
  assert_true (qcow2_header_equal (&hdr, &again));

  test_sh ("cp '%s' '%s'", p, copy);
  int fd = open (copy, O_WRONLY);
  assert_true (fd >= 0);
  assert_int_equal (pwrite (fd, enc, cs, 0), (ssize_t) cs);
  close (fd);
  sh_out (json, sizeof json, "qemu-img info --output=json '%s'", copy);
  check_against_info (&hdr, json);
  test_sh ("cd '%s' && qemu-img check -q copy.qcow2", fx_dir ());

  qcow2_header_free (&again);
  qcow2_header_free (&hdr);
  free (enc);
  free (buf);
}

static void
test_default (void **state)
{
  (void) state;
  check_image ("a.qcow2", "qemu-img create -q -f qcow2 a.qcow2 4M");
}

static void
test_v2 (void **state)
{
  (void) state;
  check_image ("a.qcow2", "qemu-img create -q -f qcow2 "
               "-o compat=0.10,cluster_size=4096 a.qcow2 3M");
}

static void
test_backing (void **state)
{
  (void) state;
  check_image ("top.qcow2", "qemu-img create -q -f qcow2 base.qcow2 8M && "
               "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "
               "-o cluster_size=512 top.qcow2");
}

static void
test_features (void **state)
{
  (void) state;
  check_image ("a.qcow2", "qemu-img create -q -f qcow2 -o extended_l2=on,"
               "compression_type=zstd,lazy_refcounts=on,refcount_bits=64,"
               "cluster_size=128k a.qcow2 100M");
}

static void
test_data_file (void **state)
{
  (void) state;
  check_image ("a.qcow2", "qemu-img create -q -f qcow2 "
               "-o data_file=a.raw,data_file_raw=on a.qcow2 2M");
}

static void
test_bitmaps (void **state)
{
  (void) state;
  check_image ("a.qcow2", "qemu-img create -q -f qcow2 a.qcow2 4M && "
               "qemu-img bitmap --add a.qcow2 b0 && "
               "qemu-img bitmap --add -g 4096 a.qcow2 b1");
}

/* ---- round trip of everything the struct holds ------------------------ */

static void
test_round_trip_all (void **state)
{
  (void) state;
  struct qcow2_feature_name f[2] = { { 0, 7, "seven" }, { 2, 5, "five" } };
  uint8_t unk_hdr[16] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14 };
  uint8_t d1[5] = { 9, 8, 7, 6, 5 };
  struct qcow2_ext unk[2] = { { 0x12345678, 5, d1 }, { 0x9abcdef0, 0, d1 } };
  struct qcow2_header h = {
    .magic = QCOW2_MAGIC, .version = 3, .cluster_bits = 16,
    .size = 1ULL << 40, .crypt_method = 2, .l1_size = 2048,
    .l1_table_offset = 3 << 16, .refcount_table_offset = 1 << 16,
    .refcount_table_clusters = 2, .nb_snapshots = 3,
    .snapshots_offset = 5 << 16, .incompatible_features = 0x1f,
    .compatible_features = 1, .autoclear_features = 3,
    .refcount_order = 5, .header_length = 112 + 16,
    .compression_type = 1, .unknown_header = unk_hdr,
    .unknown_header_len = 16, .backing_name = (char *) "back/ing.qcow2",
    .backing_format = (char *) "qcow2", .features = f, .n_features = 2,
    .has_bitmaps_ext = true, .nb_bitmaps = 7, .bitmaps_reserved = 1,
    .bitmap_directory_size = 4096, .bitmap_directory_offset = 7 << 16,
    .data_file_name = (char *) "data.raw", .has_crypto_ext = true,
    .crypto_offset = 9 << 16, .crypto_length = 12345,
    .has_partial_id = true, .partial_id = "0123456789abcde",
    .unknown_exts = unk, .n_unknown_exts = 2,
  };
  struct qcow2_header d;
  uint8_t buf[1 << 16];

  assert_int_equal (qcow2_header_encode (&h, buf, sizeof buf), 0);
  assert_int_equal (qcow2_header_decode ("t", buf, sizeof buf, sizeof buf,
                                         &d), 0);
  assert_true (qcow2_header_equal (&h, &d));
  assert_int_equal (d.backing_file_offset, h.backing_file_offset);
  /* The bitmaps extension comes first, in the first sector. */
  assert_int_equal (be32_at (buf + h.header_length), QCOW2_EXT_BITMAPS);
  qcow2_header_free (&d);

  /* A v2 header keeps no v3 field. */
  struct qcow2_header v2 = { .magic = QCOW2_MAGIC, .version = 2,
                             .cluster_bits = 9, .size = 1 << 20,
                             .backing_name = (char *) "b" };
  assert_int_equal (qcow2_header_encode (&v2, buf, 512), 0);
  assert_int_equal (qcow2_header_decode ("t", buf, 512, 512, &d), 0);
  assert_int_equal (d.header_length, QCOW2_V2_HEADER_LENGTH);
  assert_int_equal (d.refcount_order, 4);
  assert_string_equal (d.backing_name, "b");
  qcow2_header_free (&d);

  /* What does not fit is said, not cut. */
  char name[600];
  memset (name, 'n', sizeof name - 1);
  name[sizeof name - 1] = '\0';
  v2.backing_name = name;
  assert_int_equal (qcow2_header_encode (&v2, buf, 512),
                    QCOW2_ENCODE_NAME_TOO_BIG);
}

/* ---- limits ------------------------------------------------------------ */

/* A valid v3 header with 64 KiB clusters in BUF (64 KiB). */
static void
base_header (struct qcow2_header *h, uint8_t *buf)
{
  memset (h, 0, sizeof *h);
  h->magic = QCOW2_MAGIC;
  h->version = 3;
  h->cluster_bits = 16;
  h->size = 1 << 20;
  h->refcount_order = 4;
  h->header_length = QCOW2_V3_HEADER_LENGTH;
  assert_int_equal (qcow2_header_encode (h, buf, 1 << 16), 0);
}

static void
refused (const uint8_t *buf, size_t len, uint64_t file_size,
         const char *what)
{
  struct qcow2_header d;
  assert_int_equal (qcow2_header_decode ("t", buf, len, file_size, &d), -1);
  if (!strstr (error_get_message (), what))
    fail_msg ("'%s' does not say '%s'", error_get_message (), what);
  assert_int_equal (error_get_status (), STATUS_INVALID);
}

static void
accepted (const uint8_t *buf, size_t len, uint64_t file_size)
{
  struct qcow2_header d;
  if (qcow2_header_decode ("t", buf, len, file_size, &d) < 0)
    fail_msg ("refused: %s", error_get_message ());
  qcow2_header_free (&d);
}

static void
test_limits_fixed (void **state)
{
  (void) state;
  static uint8_t buf[1 << 16];
  struct qcow2_header h;

  base_header (&h, buf);
  accepted (buf, sizeof buf, sizeof buf);
  refused (buf, sizeof buf, QCOW2_V2_HEADER_LENGTH - 1,
           "truncated qcow2 header (file is");
  refused (buf, sizeof buf, QCOW2_V3_MIN_HEADER_LENGTH - 1,
           "truncated qcow2 v3 header");
  put_be32 (buf, QCOW2_MAGIC + 1);
  refused (buf, sizeof buf, sizeof buf, "bad magic");
  put_be32 (buf, QCOW2_MAGIC);
  put_be32 (buf + 4, 4);
  refused (buf, sizeof buf, sizeof buf, "unsupported qcow2 version 4");
  put_be32 (buf + 4, 1);
  refused (buf, sizeof buf, sizeof buf, "unsupported qcow2 version 1");
  put_be32 (buf + 4, 3);

  put_be32 (buf + 20, QCOW2_MIN_CLUSTER_BITS - 1);
  refused (buf, sizeof buf, sizeof buf, "invalid cluster size");
  put_be32 (buf + 20, QCOW2_MAX_CLUSTER_BITS + 1);
  refused (buf, sizeof buf, sizeof buf, "invalid cluster size");
  put_be32 (buf + 20, QCOW2_MIN_CLUSTER_BITS);
  accepted (buf, 512, 512);
  put_be32 (buf + 20, QCOW2_MAX_CLUSTER_BITS);
  accepted (buf, sizeof buf, sizeof buf);
  put_be32 (buf + 20, 16);

  put_be32 (buf + 100, QCOW2_V3_MIN_HEADER_LENGTH - 1);
  refused (buf, sizeof buf, sizeof buf, "invalid qcow2 header_length");
  put_be32 (buf + 100, (1 << 16) + 8);
  refused (buf, sizeof buf, sizeof buf, "larger than the cluster size");
  put_be32 (buf + 100, 200);
  refused (buf, sizeof buf, 150, "truncated qcow2 header (header_length");
  put_be32 (buf + 100, QCOW2_V3_HEADER_LENGTH);

  put_be64 (buf + 8, (1 << 16) + 8);
  put_be32 (buf + 16, 1);
  refused (buf, sizeof buf, sizeof buf, "invalid backing file offset");
}

static void
test_limits_names (void **state)
{
  (void) state;
  static uint8_t buf[1 << 16];
  static char name[QCOW2_MAX_BACKING_NAME + 2];
  char fmt[QCOW2_MAX_BACKING_FORMAT + 2];
  struct qcow2_header h;

  base_header (&h, buf);
  memset (name, 'n', QCOW2_MAX_BACKING_NAME);
  h.backing_name = name;
  assert_int_equal (qcow2_header_encode (&h, buf, sizeof buf), 0);
  accepted (buf, sizeof buf, sizeof buf);
  name[QCOW2_MAX_BACKING_NAME] = 'n';
  assert_int_equal (qcow2_header_encode (&h, buf, sizeof buf), 0);
  refused (buf, sizeof buf, sizeof buf, "backing file name too long");
  name[3] = '\0';
  assert_int_equal (qcow2_header_encode (&h, buf, sizeof buf), 0);
  put_be32 (buf + 16, 5);              /* the NUL is in the name now */
  refused (buf, sizeof buf, sizeof buf, "invalid backing file name");

  memset (fmt, 'f', sizeof fmt - 1);
  fmt[QCOW2_MAX_BACKING_FORMAT] = '\0';
  h.backing_format = fmt;
  assert_int_equal (qcow2_header_encode (&h, buf, sizeof buf), 0);
  accepted (buf, sizeof buf, sizeof buf);
  fmt[QCOW2_MAX_BACKING_FORMAT] = 'f';
  fmt[QCOW2_MAX_BACKING_FORMAT + 1] = '\0';
  assert_int_equal (qcow2_header_encode (&h, buf, sizeof buf), 0);
  refused (buf, sizeof buf, sizeof buf, "backing format extension too long");
}

static void
test_limits_exts (void **state)
{
  (void) state;
  static uint8_t buf[1 << 16];
  uint8_t d[QCOW2_BITMAPS_EXT_BYTES + 1] = { 0 };
  struct qcow2_ext e = { QCOW2_EXT_BITMAPS, QCOW2_BITMAPS_EXT_BYTES - 1, d };
  struct qcow2_header h;

  base_header (&h, buf);
  h.unknown_exts = &e;
  h.n_unknown_exts = 1;
  assert_int_equal (qcow2_header_encode (&h, buf, sizeof buf), 0);
  refused (buf, sizeof buf, sizeof buf, "invalid extension length");
  e.len = QCOW2_BITMAPS_EXT_BYTES + 1;
  assert_int_equal (qcow2_header_encode (&h, buf, sizeof buf), 0);
  refused (buf, sizeof buf, sizeof buf, "invalid extension length");

  e.type = QCOW2_EXT_DATA_FILE;
  e.len = 0;
  assert_int_equal (qcow2_header_encode (&h, buf, sizeof buf), 0);
  refused (buf, sizeof buf, sizeof buf, "invalid external data file name");

  /* An extension running past the cluster. */
  e.type = 0x11111111;
  e.len = 8;
  assert_int_equal (qcow2_header_encode (&h, buf, sizeof buf), 0);
  put_be32 (buf + QCOW2_V3_HEADER_LENGTH + 4, 1 << 16);
  refused (buf, sizeof buf, sizeof buf, "too large");
}

/* The limits that are the reader's and bitmaps/' rules, not the codec's:
 * an image qemu-img made, its header changed through the codec, refused
 * by qbak_image_open with the field named. */
static void
open_refused (const char *create, void (*change) (struct qcow2_header *),
              const char *what)
{
  const char *p = fx_path ("a.qcow2");
  struct qcow2_header h;
  uint64_t file_size;
  size_t len;

  test_sh ("cd '%s' && rm -f a.qcow2 && %s", fx_dir (), create);
  uint8_t *buf = read_head (p, &len, &file_size);
  assert_int_equal (qcow2_header_decode (p, buf, len, file_size, &h), 0);
  change (&h);
  assert_int_equal (qcow2_header_encode (&h, buf, 1u << h.cluster_bits), 0);
  int fd = open (p, O_WRONLY);
  assert_true (fd >= 0);
  assert_int_equal (pwrite (fd, buf, 1u << h.cluster_bits, 0),
                    (ssize_t) (1u << h.cluster_bits));
  close (fd);
  qcow2_header_free (&h);
  free (buf);

  struct qbak_image *img = qbak_image_open (p, QBAK_OPEN_NO_BACKING |
                                               QBAK_OPEN_INSPECT);
  if (img) {
    qbak_image_close (img);
    fail_msg ("opened, not refused for '%s'", what);
  }
  if (!strstr (qbak_get_error (), what))
    fail_msg ("'%s' does not say '%s'", qbak_get_error (), what);
}

static void refcount_order (struct qcow2_header *h)
{ h->refcount_order = QCOW2_MAX_REFCOUNT_ORDER + 1; }
static void l1_size (struct qcow2_header *h)
{ h->l1_size = QCOW2_MAX_L1_BYTES / 8 + 1; }
static void snapshots (struct qcow2_header *h)
{ h->nb_snapshots = QCOW2_MAX_SNAPSHOTS + 1; }
static void extl2 (struct qcow2_header *h)
{ h->incompatible_features |= QCOW2_INCOMPAT_EXTL2; }
static void nb_bitmaps (struct qcow2_header *h)
{ h->nb_bitmaps = QCOW2_MAX_BITMAPS + 1; }
static void dir_size (struct qcow2_header *h)
{ h->bitmap_directory_size = QCOW2_MAX_BITMAP_DIRECTORY_SIZE + 8; }

static void
test_limits_open (void **state)
{
  (void) state;
  const char *plain = "qemu-img create -q -f qcow2 a.qcow2 4M";
  const char *bm = "qemu-img create -q -f qcow2 a.qcow2 4M && "
                   "qemu-img bitmap --add a.qcow2 b0";

  open_refused (plain, refcount_order, "invalid refcount order");
  open_refused (plain, l1_size, "L1 table too large");
  open_refused (plain, snapshots, "too many snapshots");
  open_refused ("qemu-img create -q -f qcow2 -o cluster_size=8k "
                "a.qcow2 4M", extl2, "extended L2 entries need clusters");
  open_refused (bm, nb_bitmaps, "bitmaps exceed the maximum of 65535");
  open_refused (bm, dir_size, "exceeds the maximum of 67107840");
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_default),
    cmocka_unit_test (test_v2),
    cmocka_unit_test (test_backing),
    cmocka_unit_test (test_features),
    cmocka_unit_test (test_data_file),
    cmocka_unit_test (test_bitmaps),
    cmocka_unit_test (test_round_trip_all),
    cmocka_unit_test (test_limits_fixed),
    cmocka_unit_test (test_limits_names),
    cmocka_unit_test (test_limits_exts),
    cmocka_unit_test (test_limits_open),
  };
  test_require_qemu ();
  return cmocka_run_group_tests (tests, fx_setup, fx_teardown);
}
