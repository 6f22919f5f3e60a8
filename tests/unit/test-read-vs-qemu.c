/* qbak's guest reads against QEMU's: for each kind of image, built at test
 * time with qemu-img and qemu-io, every guest byte read through
 * qbak_image_pread must equal `qemu-img convert -O raw` of the same image.
 * One test per image kind; the QEMU tools are the oracle and must be
 * installed (a missing one fails the test, naming the package). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "qbak.h"
#include "helpers.h"

#define KiB 1024ULL
#define MiB (1024ULL * KiB)

#define fixture pattern_fixture

static int
setup (void **state)
{
  return pattern_fixture_setup (state, 1);
}

static int
teardown (void **state)
{
  return pattern_fixture_teardown (state);
}

/* Build the image and compare: NAME is relative to the fixture dir. */
static void
check (struct fixture *fx, const char *name, const char *fmt)
{
  char p[TEST_PATH_MAX];
  test_path (p, fx->dir, name);
  test_compare_with_qemu (p, fmt);
}

/* A mixed raw source of SIZE bytes (random, text, constant and hole
 * blocks of 4 KiB). */
static void
mixed_raw (struct fixture *fx, const char *name, uint64_t size,
           uint64_t seed)
{
  char p[TEST_PATH_MAX];
  test_path (p, fx->dir, name);
  test_write_mixed_file (p, size, 4 * KiB, seed);
}

/* ---- compression ---------------------------------------------------- */

/* Every cluster of a mixed disk compressed (compressed clusters of every
 * size, straddling host sectors and clusters, and the partial last
 * cluster; incompressible ones stored plain), then rewritten: compressed
 * writes into the unallocated megabyte 3M..4M (QEMU compresses only into
 * unallocated clusters), COW of a compressed cluster, zero writes over
 * compressed data. */
static void
compressed (struct fixture *fx, const char *type)
{
  mixed_raw (fx, "src.raw", 3 * MiB, 11);
  test_sh ("cd '%s' && truncate -s 4195840 src.raw && "
           "dd if=text.bin of=src.raw bs=512 seek=8192 count=3 "
           "conv=notrunc status=none", fx->dir);
  test_sh ("cd '%s' && qemu-img convert -q -c -f raw -O qcow2 "
           "-o compression_type=%s,cluster_size=64k src.raw img.qcow2",
           fx->dir, type);
  test_sh ("cd '%s' && qemu-io -f qcow2 "
           "-c 'write -c -s text.bin 3M 64k' "
           "-c 'write -c -s rand.bin 3136k 64k' "
           "-c 'write -c -P 0x11 3200k 64k' "
           "-c 'write -P 0x22 3082k 10k' "
           "-c 'write -z 300k 64k' "
           "-c 'write -z 1M 128k' "
           "img.qcow2", fx->dir);
  check (fx, "img.qcow2", "qcow2");
}

static void
test_compressed_zlib (void **state)
{
  compressed (*state, "zlib");
}

static void
test_compressed_zstd (void **state)
{
  compressed (*state, "zstd");
}

/* qemu-img convert -c output as it is: the last compressed cluster ends at
 * (or, rounded to sectors, past) the end of the image file. */
static void
compressed_at_eof (struct fixture *fx, const char *type)
{
  mixed_raw (fx, "src.raw", 1 * MiB + 3 * 512, 13);
  test_sh ("cd '%s' && dd if=text.bin of=src.raw bs=512 seek=2048 count=3 "
           "conv=notrunc status=none", fx->dir);
  test_sh ("cd '%s' && qemu-img convert -q -c -f raw -O qcow2 "
           "-o compression_type=%s src.raw img.qcow2", fx->dir, type);
  check (fx, "img.qcow2", "qcow2");
}

static void
test_compressed_zlib_at_eof (void **state)
{
  compressed_at_eof (*state, "zlib");
}

static void
test_compressed_zstd_at_eof (void **state)
{
  compressed_at_eof (*state, "zstd");
}

/* ---- extended L2 (subclusters) -------------------------------------- */

/* 64k clusters, 2k subclusters: single subclusters written, zeroed (in
 * allocated and unallocated clusters, with and without unmap), a
 * compressed cluster, unaligned writes across subclusters. */
static const char extl2_cmds[] =
  "-c 'write -P 0x11 0 512' "
  "-c 'write -P 0x12 2k 2k' "
  "-c 'write -s text.bin 5k 3k' "
  "-c 'write -z 8k 4k' "
  "-c 'write -s rand.bin 64k 64k' "
  "-c 'write -z 66k 2k' "
  "-c 'write -z -u 70k 4k' "
  "-c 'write -P 0x13 71k 100' "
  "-c 'write -c -s text.bin 128k 64k' "
  "-c 'write -z 256k 64k' "
  "-c 'write -z -u 320k 64k' "
  "-c 'write -P 0x14 400k 1' "
  "-c 'write -s rand.bin 510k 4k' "
  "-c 'write -z 2047k 1k' ";

static void
test_extended_l2 (void **state)
{
  struct fixture *fx = *state;
  test_sh ("cd '%s' && qemu-img create -q -f qcow2 "
           "-o extended_l2=on,cluster_size=64k img.qcow2 2M", fx->dir);
  test_sh ("cd '%s' && qemu-io -f qcow2 %s img.qcow2", fx->dir, extl2_cmds);
  check (fx, "img.qcow2", "qcow2");
}

/* The same writes over a backing file full of data: unallocated
 * subclusters read through, zero subclusters hide it. */
static void
test_extended_l2_over_backing (void **state)
{
  struct fixture *fx = *state;
  test_sh ("cd '%s' && qemu-img create -q -f qcow2 base.qcow2 2M && "
           "qemu-io -f qcow2 -c 'write -P 0x77 0 2M' base.qcow2", fx->dir);
  test_sh ("cd '%s' && qemu-img create -q -f qcow2 "
           "-o extended_l2=on,cluster_size=64k -b base.qcow2 -F qcow2 "
           "img.qcow2 2M", fx->dir);
  test_sh ("cd '%s' && qemu-io -f qcow2 %s img.qcow2", fx->dir, extl2_cmds);
  check (fx, "img.qcow2", "qcow2");
}

/* ---- cluster sizes -------------------------------------------------- */

/* A mixed disk converted at CLUSTER bytes per cluster, then writes that
 * straddle clusters (and, at 512 bytes, L2 tables: 64 entries each),
 * zero writes and discards. */
static void
cluster_size_image (struct fixture *fx, uint64_t cluster, uint64_t size)
{
  mixed_raw (fx, "src.raw", size, cluster);
  test_sh ("cd '%s' && qemu-img convert -q -f raw -O qcow2 "
           "-o cluster_size=%llu src.raw img.qcow2", fx->dir,
           (unsigned long long) cluster);
  test_sh ("cd '%s' && qemu-io -f qcow2 "
           "-c 'write -s rand.bin %llu 1000' "
           "-c 'write -s text.bin %llu %llu' "
           "-c 'write -z %llu %llu' "
           "-c 'discard %llu %llu' "
           "-c 'write -P 0x31 %llu 512' "
           "img.qcow2", fx->dir,
           (unsigned long long) (cluster - 500),
           (unsigned long long) (32 * KiB + 7),
           (unsigned long long) (cluster + 3),
           (unsigned long long) (size / 2), (unsigned long long) (2 * cluster),
           (unsigned long long) (size / 4), (unsigned long long) cluster,
           (unsigned long long) (size - 512));
  check (fx, "img.qcow2", "qcow2");
}

static void
test_cluster_512 (void **state)
{
  cluster_size_image (*state, 512, 2 * MiB);
}

static void
test_cluster_64k (void **state)
{
  cluster_size_image (*state, 64 * KiB, 8 * MiB);
}

static void
test_cluster_2m (void **state)
{
  cluster_size_image (*state, 2 * MiB, 16 * MiB);
}

/* ---- backing chain -------------------------------------------------- */

/* base (1M, mixed) <- mid (2M) <- top (3M + 512): writes in mid that cross
 * the end of base; in top, zero writes and a discard over base and mid
 * data, a partial-cluster write (COW from base), data past mid's end.
 * Reads past base's end (in mid) and past mid's end (in top) are zeroes. */
static void
test_backing_chain (void **state)
{
  struct fixture *fx = *state;
  mixed_raw (fx, "src.raw", 1 * MiB, 3);
  test_sh ("cd '%s' && qemu-img convert -q -f raw -O qcow2 src.raw "
           "base.qcow2", fx->dir);
  test_sh ("cd '%s' && qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "
           "mid.qcow2 2M", fx->dir);
  test_sh ("cd '%s' && qemu-io -f qcow2 "
           "-c 'write -P 0x22 512k 640k' "
           "-c 'write -z 64k 64k' "
           "-c 'write -s rand.bin 1536k 4k' "
           "mid.qcow2", fx->dir);
  test_sh ("cd '%s' && qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 "
           "top.qcow2 3146240", fx->dir);
  test_sh ("cd '%s' && qemu-io -f qcow2 "
           "-c 'write -P 0x33 4k 4k' "
           "-c 'write -z 128k 64k' "
           "-c 'write -z 600k 10k' "
           "-c 'discard 256k 64k' "
           "-c 'write -z 960k 128k' "
           "-c 'write -s text.bin 2112k 4k' "
           "-c 'write -P 0x34 3M 512' "
           "top.qcow2", fx->dir);
  check (fx, "top.qcow2", "qcow2");
}

/* ---- external data file --------------------------------------------- */

static void
test_data_file_raw (void **state)
{
  struct fixture *fx = *state;
  test_sh ("cd '%s' && qemu-img create -q -f qcow2 "
           "-o data_file='%s/img.data',data_file_raw=on img.qcow2 4M",
           fx->dir, fx->dir);
  test_sh ("cd '%s' && qemu-io -f qcow2 "
           "-c 'write -s rand.bin 0 64k' "
           "-c 'write -s text.bin 100k 30k' "
           "-c 'write -z 20k 8k' "
           "-c 'write -P 0x41 1M 64k' "
           "-c 'discard 1M 64k' "
           "-c 'write -P 0x42 4193792 512' "
           "img.qcow2", fx->dir);
  check (fx, "img.qcow2", "qcow2");
}

/* ---- raw ------------------------------------------------------------ */

/* A sparse raw file: data blocks between holes, data in the last sector. */
static void
test_raw_with_holes (void **state)
{
  struct fixture *fx = *state;
  mixed_raw (fx, "img.raw", 4 * MiB + 512, 5);
  test_sh ("cd '%s' && truncate -s 8M img.raw && "
           "dd if=rand.bin of=img.raw bs=512 seek=16383 count=1 "
           "conv=notrunc status=none", fx->dir);
  check (fx, "img.raw", "raw");
}

/* A raw file whose size is not a multiple of 512: QEMU's raw driver
 * rounds the virtual size up to whole sectors (the tail reads as
 * zeroes), and qbak must present the same disk. */
static void
test_raw_odd_size (void **state)
{
  struct fixture *fx = *state;
  mixed_raw (fx, "img.raw", 64 * KiB + 1000, 17);
  test_sh ("cd '%s' && dd if=rand.bin of=img.raw bs=1 seek=65536 count=1000 "
           "conv=notrunc status=none", fx->dir);
  check (fx, "img.raw", "raw");
}

/* ---- qcow v1 -------------------------------------------------------- */

static void
test_qcow1 (void **state)
{
  struct fixture *fx = *state;
  test_sh ("cd '%s' && qemu-img create -q -f qcow img.qcow 2M", fx->dir);
  test_sh ("cd '%s' && qemu-io -f qcow "
           "-c 'write -s rand.bin 0 10k' "
           "-c 'write -s text.bin 100k 64k' "
           "-c 'write -P 0x51 1M 4k' "
           "-c 'write -P 0x52 2047k 1k' "
           "img.qcow", fx->dir);
  check (fx, "img.qcow", "qcow");
}

/* Compressed qcow v1 clusters (qemu-io write -c; qemu-img convert -c
 * cannot write qcow), one partly rewritten, over a mixed disk. */
static void
test_qcow1_compressed (void **state)
{
  struct fixture *fx = *state;
  mixed_raw (fx, "src.raw", 2 * MiB, 9);
  test_sh ("cd '%s' && qemu-img convert -q -f raw -O qcow src.raw img.qcow",
           fx->dir);
  test_sh ("cd '%s' && qemu-io -f qcow "
           "-c 'write -c -s text.bin 0 4k' "
           "-c 'write -c -s text.bin 12k 4k' "
           "-c 'write -c -s rand.bin 16k 4k' "
           "-c 'write -c -P 0x54 1M 4k' "
           "-c 'write -P 0x53 13k 1k' "
           "img.qcow", fx->dir);
  check (fx, "img.qcow", "qcow");
}

#define T(f) cmocka_unit_test_setup_teardown (f, setup, teardown)

int
main (void)
{
  const struct CMUnitTest tests[] = {
    T (test_compressed_zlib),
    T (test_compressed_zstd),
    T (test_compressed_zlib_at_eof),
    T (test_compressed_zstd_at_eof),
    T (test_extended_l2),
    T (test_extended_l2_over_backing),
    T (test_cluster_512),
    T (test_cluster_64k),
    T (test_cluster_2m),
    T (test_backing_chain),
    T (test_data_file_raw),
    T (test_raw_with_holes),
    T (test_raw_odd_size),
    T (test_qcow1),
    T (test_qcow1_compressed),
  };
  int r = cmocka_run_group_tests (tests, NULL, NULL);
  qbak_clear_error ();
  return r;
}
