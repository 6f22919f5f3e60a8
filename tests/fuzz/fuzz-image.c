/* libFuzzer target: open arbitrary bytes as a qcow2 image (header,
 * extensions, L1, refcount table, bitmap directory and tables), then walk
 * its map, every bitmap's extents and its first mebibytes of guest data.
 * Every path must end in a clean refusal, never a crash, hang, unbounded
 * allocation or out-of-bounds access: the bytes may come from a guest.
 *
 * The same bytes also go straight to the qcow2 header codec (decode, and
 * for what decodes, encode and decode again: the two must be equal) and
 * to the backup writer's reopen of a partial target, which reads a file
 * qbak wrote and must refuse anything else cleanly.
 *
 * Built two ways: with clang -fsanitize=fuzzer for fuzzing (QBAK_FUZZ=ON),
 * and with replay-main.c as a plain program that replays a corpus, which
 * ctest runs over the corrupted-image corpus. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "qbak.h"
#include "formats/qcow2-header.h"
#include "formats/qcow2-writer.h"

/* Decode DATA as cluster 0; if it decodes, its encoding must decode to
 * an equal header (abort otherwise: the fuzzer reports a crash). */
static void
round_trip (const uint8_t *data, size_t size)
{
  struct qcow2_header a, b;
  uint8_t *buf;
  size_t cs;

  if (qcow2_header_decode ("fuzz", data, size, size, &a) < 0)
    return;
  cs = (size_t) 1 << a.cluster_bits;
  buf = malloc (cs);
  /* Encoding may not fit (an end marker the input did without, an
   * extension's padding past the backing file name): that is no
   * round trip to check. */
  if (buf && qcow2_header_encode (&a, buf, cs) == 0) {
    if (qcow2_header_decode ("fuzz", buf, cs, cs, &b) < 0) {
      fprintf (stderr, "fuzz: an encoded header does not decode\n");
      abort ();
    }
    if (!qcow2_header_equal (&a, &b)) {
      fprintf (stderr, "fuzz: header round trip differs\n");
      abort ();
    }
    qcow2_header_free (&b);
  }
  free (buf);
  qcow2_header_free (&a);
}

/* The writer's reopen wants a regular file of its own (no /proc link). */
static void
reopen (const uint8_t *data, size_t size)
{
  const char *dir = getenv ("TMPDIR");
  char path[4096];
  int fd;

  snprintf (path, sizeof path, "%s/qbak-fuzz-XXXXXX",
            dir && *dir ? dir : "/tmp");
  fd = mkstemp (path);
  if (fd < 0)
    return;
  if (write (fd, data, size) == (ssize_t) size) {
    close (fd);
    qcow2_writer_free (qcow2_writer_reopen (path));
  }
  else
    close (fd);
  unlink (path);
}

static int
ignore_map (const struct qbak_map_extent *e, void *opaque)
{
  int *n = opaque;
  (void) e;
  return ++*n > 4096;          /* enough: stop the walk */
}

static int
ignore_extent (const struct qbak_bitmap_extent *e, void *opaque)
{
  int *n = opaque;
  (void) e;
  return ++*n > 4096;
}

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  round_trip (data, size);
  reopen (data, size);

  int fd = memfd_create ("fuzz", MFD_CLOEXEC);
  if (fd < 0)
    return 0;
  if (write (fd, data, size) != (ssize_t) size) {
    close (fd);
    return 0;
  }
  char path[64];
  snprintf (path, sizeof path, "/proc/self/fd/%d", fd);

  struct qbak_image *img =
    qbak_image_open_format (path, "qcow2", QBAK_OPEN_FORCE_SHARE |
                            QBAK_OPEN_NO_BACKING | QBAK_OPEN_INSPECT);
  if (img) {
    struct qbak_image_info info;
    qbak_image_info_init (&info);
    qbak_image_get_info (img, &info);
    int n = 0;
    uint64_t len = info.virtual_size < (64u << 20) ? info.virtual_size
                                                   : (64u << 20);
    qbak_image_map (img, 0, len, ignore_map, &n);
    for (size_t i = 0; i < qbak_bitmap_count (img); i++) {
      struct qbak_bitmap_info b;
      qbak_bitmap_info_init (&b);
      if (qbak_bitmap_get_info (img, i, &b) == 0) {
        n = 0;
        qbak_bitmap_extents (img, b.name, ignore_extent, &n);
      }
    }
    static uint8_t buf[1 << 20];
    uint64_t r = info.virtual_size < sizeof buf ? info.virtual_size
                                                : sizeof buf;
    qbak_image_pread (img, buf, r, 0);
    qbak_image_close (img);
  }
  close (fd);
  return 0;
}
