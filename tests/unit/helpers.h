/* Header-only helpers for the cmocka unit tests: scratch directories,
 * running the QEMU tools that build fixtures and act as oracles, and
 * comparing qbak's guest reads with a raw file.
 *
 * Include after <cmocka.h>.  Every helper fails the current test (never
 * skips it) when a tool is missing or a command fails: a missing oracle is
 * a missing install step, so the message names the
 * package. */
#ifndef QBAK_TESTS_UNIT_HELPERS_H
#define QBAK_TESTS_UNIT_HELPERS_H

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "qbak.h"

#define TEST_PATH_MAX 4096

/* Create a fresh scratch directory under $QBAK_TEST_TMPDIR (created if
 * needed) or /tmp, and write its path to DIR (TEST_PATH_MAX bytes). */
static inline void
test_tmpdir_create (char *dir)
{
  const char *base = getenv ("QBAK_TEST_TMPDIR");
  if (!base || !*base)
    base = "/tmp";
  if (mkdir (base, 0755) < 0 && errno != EEXIST)
    fail_msg ("cannot create %s: %s", base, strerror (errno));
  int n = snprintf (dir, TEST_PATH_MAX, "%s/qbak-unit-XXXXXX", base);
  assert_true (n > 0 && n < TEST_PATH_MAX);
  if (!mkdtemp (dir))
    fail_msg ("mkdtemp %s: %s", dir, strerror (errno));
}

/* Run a shell command built from FMT, its stdout and stderr captured
 * into OUT (OUTSZ bytes, NUL-terminated; may be NULL).  Returns the exit
 * status, or -1 if it did not exit. */
static inline int
test_vsh (char *out, size_t outsz, const char *fmt, va_list ap)
{
  char cmd[3 * TEST_PATH_MAX];
  int n = vsnprintf (cmd, sizeof cmd - 16, fmt, ap);
  assert_true (n > 0 && (size_t) n < sizeof cmd - 16);
  strcat (cmd, " 2>&1");
  fflush (NULL);
  FILE *p = popen (cmd, "r");
  if (!p)
    fail_msg ("popen: %s", strerror (errno));
  size_t len = 0;
  char chunk[4096];
  size_t got;
  while ((got = fread (chunk, 1, sizeof chunk, p)) > 0) {
    if (out && len + 1 < outsz) {
      size_t k = outsz - 1 - len < got ? outsz - 1 - len : got;
      memcpy (out + len, chunk, k);
      len += k;
    }
  }
  if (out && outsz)
    out[len] = '\0';
  int st = pclose (p);
  if (st == -1 || !WIFEXITED (st))
    return -1;
  return WEXITSTATUS (st);
}

static inline int
test_sh_status (const char *fmt, ...)
  __attribute__((format (printf, 1, 2)));
static inline int
test_sh_status (const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  int r = test_vsh (NULL, 0, fmt, ap);
  va_end (ap);
  return r;
}

/* Run a command that must succeed; on failure print it and its output. */
static inline void
test_sh_at (const char *file, int line, const char *fmt, ...)
  __attribute__((format (printf, 3, 4)));
static inline void
test_sh_at (const char *file, int line, const char *fmt, ...)
{
  static char out[16384];
  char cmd[3 * TEST_PATH_MAX];
  va_list ap;
  va_start (ap, fmt);
  vsnprintf (cmd, sizeof cmd, fmt, ap);
  va_end (ap);
  va_start (ap, fmt);
  int st = test_vsh (out, sizeof out, fmt, ap);
  va_end (ap);
  if (st != 0) {
    print_error ("%s:%d: command failed (status %d): %s\n%s", file, line, st,
                 cmd, out);
    fail ();
  }
}
#define test_sh(...) test_sh_at (__FILE__, __LINE__, __VA_ARGS__)

/* Fail unless TOOL is on $PATH; PACKAGE names what installs it. */
static inline void
test_require_tool (const char *tool, const char *package)
{
  if (test_sh_status ("command -v '%s'", tool) != 0)
    fail_msg ("%s not found: install the %s package (the test oracle)",
              tool, package);
}

static inline void
test_require_qemu (void)
{
  test_require_tool ("qemu-img", "qemu-utils");
  test_require_tool ("qemu-io", "qemu-utils");
}

/* Remove DIR and everything in it (kept if $QBAK_TEST_KEEP is set, to
 * inspect a failure's fixtures). */
static inline void
test_rmtree (const char *dir)
{
  if (getenv ("QBAK_TEST_KEEP")) {
    print_message ("keeping %s\n", dir);
    return;
  }
  if (dir && *dir)
    test_sh ("rm -rf -- '%s'", dir);
}

/* "DIR/NAME" into OUT (TEST_PATH_MAX bytes). */
static inline void
test_path (char *out, const char *dir, const char *name)
{
  int n = snprintf (out, TEST_PATH_MAX, "%s/%s", dir, name);
  assert_true (n > 0 && n < TEST_PATH_MAX);
}

/* The whole of PATH, malloc'ed; its size in *SIZE. */
static inline uint8_t *
test_read_file (const char *path, size_t *size)
{
  FILE *f = fopen (path, "rb");
  if (!f)
    fail_msg ("cannot open %s: %s", path, strerror (errno));
  assert_int_equal (fseek (f, 0, SEEK_END), 0);
  long len = ftell (f);
  assert_true (len >= 0);
  assert_int_equal (fseek (f, 0, SEEK_SET), 0);
  uint8_t *buf = malloc ((size_t) len + 1);
  assert_non_null (buf);
  if (len > 0)
    assert_int_equal (fread (buf, 1, (size_t) len, f), (size_t) len);
  fclose (f);
  *size = (size_t) len;
  return buf;
}

/* Why the last test_compare_pread failed. */
static char test_compare_msg[512];

/* Read every guest byte of IMG with qbak_image_pread in CHUNK-sized
 * pieces (the last one shorter) and compare with EXPECT (SIZE bytes).
 * Returns 0, or -1 with the first difference (or the read error) in
 * test_compare_msg, so the caller can free its buffers before failing. */
static inline int
test_compare_pread (struct qbak_image *img, const uint8_t *expect,
                    size_t size, size_t chunk, const char *what)
{
  int ret = 0;
  uint8_t *buf = malloc (chunk);
  assert_non_null (buf);
  for (size_t off = 0; off < size && ret == 0; off += chunk) {
    size_t n = size - off < chunk ? size - off : chunk;
    memset (buf, 0xa5, n);
    if (qbak_image_pread (img, buf, n, off) < 0) {
      snprintf (test_compare_msg, sizeof test_compare_msg,
                "%s: qbak_image_pread (%zu bytes at %zu): %s", what, n, off,
                qbak_get_error ());
      ret = -1;
    }
    else if (memcmp (buf, expect + off, n) != 0) {
      size_t i = 0;
      while (buf[i] == expect[off + i])
        i++;
      snprintf (test_compare_msg, sizeof test_compare_msg,
                "%s (reads of %zu bytes): first difference at guest offset "
                "%zu (0x%zx): 0x%02x, expected 0x%02x", what, chunk, off + i,
                off + i, buf[i], expect[off + i]);
      ret = -1;
    }
  }
  free (buf);
  return ret;
}

/* Open IMAGE with qbak and compare all its guest bytes with RAW (the
 * oracle's rendering), twice: in 1 MiB requests, and in an odd size that
 * crosses every cluster and subcluster boundary unaligned. */
static inline void
test_compare_image_with_raw (const char *image, const char *raw)
{
  size_t size;
  uint8_t *expect = test_read_file (raw, &size);
  struct qbak_image *img = qbak_image_open (image, QBAK_OPEN_READ);
  if (!img) {
    free (expect);
    fail_msg ("qbak_image_open %s: %s", image, qbak_get_error ());
  }
  struct qbak_image_info info;
  qbak_image_info_init (&info);
  assert_int_equal (qbak_image_get_info (img, &info), 0);
  int r = 0;
  if (info.virtual_size != size) {
    snprintf (test_compare_msg, sizeof test_compare_msg,
              "%s: qbak's virtual size is %llu bytes, the oracle's %zu",
              image, (unsigned long long) info.virtual_size, size);
    r = -1;
  }
  if (r == 0)
    r = test_compare_pread (img, expect, size, 1 << 20, image);
  if (r == 0)
    r = test_compare_pread (img, expect, size, 12345, image);
  qbak_image_close (img);
  free (expect);
  if (r < 0)
    fail_msg ("%s", test_compare_msg);
}

/* Render IMAGE (of format FMT) to raw with qemu-img convert, next to it as
 * IMAGE.raw, and compare qbak's reading with it. */
static inline void
test_compare_with_qemu (const char *image, const char *fmt)
{
  char raw[TEST_PATH_MAX];
  int n = snprintf (raw, sizeof raw, "%s.oracle.raw", image);
  assert_true (n > 0 && n < (int) sizeof raw);
  test_sh ("qemu-img convert -f %s -O raw '%s' '%s'", fmt, image, raw);
  test_compare_image_with_raw (image, raw);
}

/* ---- Deterministic test data ---------------------------------------- */

/* A 64-bit LCG (Knuth's MMIX constants): same bytes on every run. */
static inline uint64_t
test_lcg (uint64_t *state)
{
  *state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
  return *state >> 33;
}

enum test_block_kind {
  TEST_BLOCK_HOLE,       /* not written at all (reads as zeroes) */
  TEST_BLOCK_RANDOM,     /* incompressible */
  TEST_BLOCK_TEXT,       /* compressible but not constant */
  TEST_BLOCK_CONSTANT,   /* one non-zero byte value */
};

/* Fill BUF (LEN bytes) with data of KIND; SEED varies the content. */
static inline void
test_fill_block (uint8_t *buf, size_t len, enum test_block_kind kind,
                 uint64_t seed)
{
  uint64_t s = seed;
  switch (kind) {
  case TEST_BLOCK_HOLE:
    memset (buf, 0, len);
    break;
  case TEST_BLOCK_RANDOM:
    for (size_t i = 0; i < len; i++)
      buf[i] = (uint8_t) test_lcg (&s);
    break;
  case TEST_BLOCK_TEXT:
    for (size_t i = 0; i < len; ) {
      char line[64];
      int n = snprintf (line, sizeof line, "block %llu line %zu: qbak\n",
                        (unsigned long long) seed, i);
      for (int j = 0; j < n && i < len; j++)
        buf[i++] = (uint8_t) line[j];
    }
    break;
  case TEST_BLOCK_CONSTANT:
    memset (buf, (int) (seed % 255) + 1, len);
    break;
  }
}

/* Write PATH (created or truncated) of SIZE bytes made of BLOCK-sized
 * blocks of pseudo-randomly chosen kinds; hole blocks are left unwritten,
 * so the file is sparse where the file system allows. */
static inline void
test_write_mixed_file (const char *path, uint64_t size, size_t block,
                       uint64_t seed)
{
  FILE *f = fopen (path, "wb");
  if (!f)
    fail_msg ("cannot create %s: %s", path, strerror (errno));
  uint8_t *buf = malloc (block);
  assert_non_null (buf);
  uint64_t s = seed;
  for (uint64_t off = 0; off < size; off += block) {
    size_t n = size - off < block ? (size_t) (size - off) : block;
    enum test_block_kind kind = (enum test_block_kind) (test_lcg (&s) % 4);
    if (kind == TEST_BLOCK_HOLE)
      continue;
    test_fill_block (buf, n, kind, test_lcg (&s));
    assert_int_equal (fseeko (f, (off_t) off, SEEK_SET), 0);
    assert_int_equal (fwrite (buf, 1, n, f), n);
  }
  free (buf);
  assert_int_equal (fflush (f), 0);
  assert_int_equal (ftruncate (fileno (f), (off_t) size), 0);
  assert_int_equal (fclose (f), 0);
}

/* Write PATH of SIZE bytes, all of one KIND. */
static inline void
test_write_kind_file (const char *path, size_t size, enum test_block_kind kind,
                      uint64_t seed)
{
  FILE *f = fopen (path, "wb");
  if (!f)
    fail_msg ("cannot create %s: %s", path, strerror (errno));
  uint8_t *buf = malloc (size);
  assert_non_null (buf);
  test_fill_block (buf, size, kind, seed);
  assert_int_equal (fwrite (buf, 1, size, f), size);
  free (buf);
  assert_int_equal (fclose (f), 0);
}

/* A scratch directory holding two 64 KiB pattern files for qemu-io -s:
 * rand.bin (incompressible) and text.bin (compressible, not constant),
 * generated from SEED and SEED + 1.  For cmocka group setup/teardown. */
struct pattern_fixture {
  char dir[TEST_PATH_MAX];
};

static inline int
pattern_fixture_setup (void **state, unsigned seed)
{
  struct pattern_fixture *fx = calloc (1, sizeof *fx);
  assert_non_null (fx);
  test_require_qemu ();
  test_tmpdir_create (fx->dir);
  char p[TEST_PATH_MAX];
  test_path (p, fx->dir, "rand.bin");
  test_write_kind_file (p, 64 * 1024, TEST_BLOCK_RANDOM, seed);
  test_path (p, fx->dir, "text.bin");
  test_write_kind_file (p, 64 * 1024, TEST_BLOCK_TEXT, seed + 1);
  *state = fx;
  return 0;
}

static inline int
pattern_fixture_teardown (void **state)
{
  struct pattern_fixture *fx = *state;
  test_rmtree (fx->dir);
  free (fx);
  return 0;
}

#endif
