/* Big objects of a repository's storage (storage.h) on a local folder:
 * a created object is written in the pattern an object stream accepts
 * (appends, then its head last) and reads back after the commit; an
 * abort leaves nothing; an existing key and planted links are refused.
 * And the file layer's seam (fileio.h): a backend without an operation
 * refuses it with STATUS_USAGE instead of skipping it. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/error.h"
#include "common/fileio.h"
#include "common/storage.h"
#include "formats/image.h"
#include "helpers.h"

struct fixture {
  char dir[TEST_PATH_MAX];
  char repo[TEST_PATH_MAX + 16];
  struct storage *st;
};

static int
setup (void **state)
{
  struct fixture *fx = calloc (1, sizeof *fx);
  assert_non_null (fx);
  test_tmpdir_create (fx->dir);
  snprintf (fx->repo, sizeof fx->repo, "%s/repo", fx->dir);
  fx->st = storage_open_folder (fx->repo, true, NULL);
  assert_non_null (fx->st);
  *state = fx;
  return 0;
}

static int
teardown (void **state)
{
  struct fixture *fx = *state;
  storage_close (fx->st);
  test_sh_status ("rm -rf '%s'", fx->dir);
  free (fx);
  return 0;
}

#define HEAD 65536u
#define PIECE 100000u

static void
fill (uint8_t *buf, size_t len, unsigned seed)
{
  for (size_t i = 0; i < len; i++)
    buf[i] = (uint8_t) (seed * 31 + i * 7 + (i >> 9));
}

/* Create, write as the qcow2 writer does (the head reserved, appends
 * with a gap, the head written last), commit, and read it all back. */
static void
test_create_commit_read (void **state)
{
  struct fixture *fx = *state;
  assert_true (storage_can_continue_in_place (fx->st));
  uint8_t *head = malloc (HEAD), *piece = malloc (PIECE),
          *back = malloc (PIECE);
  assert_non_null (head);
  assert_non_null (piece);
  assert_non_null (back);
  fill (head, HEAD, 1);
  fill (piece, PIECE, 2);

  struct qbak_file *f = storage_create_object (fx->st, "disks/vda/A.qcow2");
  assert_non_null (f);
  assert_true (f->writable);
  assert_int_equal (qbak_file_truncate (f, HEAD), 0);
  assert_int_equal (qbak_file_pwrite (f, piece, PIECE, HEAD), 0);
  /* A gap: reads as zeroes. */
  uint64_t second = HEAD + PIECE + 4096;
  assert_int_equal (qbak_file_pwrite (f, piece, PIECE, second), 0);
  assert_int_equal (qbak_file_flush (f), 0);
  assert_int_equal (qbak_file_pwrite (f, head, HEAD, 0), 0);
  assert_int_equal (storage_commit_object (fx->st, f), 0);
  qbak_file_close (f);

  uint64_t size;
  assert_int_equal (storage_size (fx->st, "disks/vda/A.qcow2", &size), 1);
  assert_int_equal (size, second + PIECE);

  struct qbak_file *r = storage_open_object (fx->st, "disks/vda/A.qcow2");
  assert_non_null (r);
  assert_false (r->writable);
  assert_int_equal (qbak_file_size (r), (int64_t) (second + PIECE));
  assert_int_equal (qbak_file_pread (r, back, HEAD, 0), 0);
  assert_memory_equal (back, head, HEAD);
  assert_int_equal (qbak_file_pread (r, back, PIECE, HEAD), 0);
  assert_memory_equal (back, piece, PIECE);
  assert_int_equal (qbak_file_pread (r, back, 4096, HEAD + PIECE), 0);
  for (size_t i = 0; i < 4096; i++)
    assert_int_equal (back[i], 0);
  assert_int_equal (qbak_file_pread (r, back, PIECE, second), 0);
  assert_memory_equal (back, piece, PIECE);
  /* Read-only: a write is refused by the kernel, not done. */
  assert_int_equal (qbak_file_pwrite (r, "x", 1, 0), -1);
  error_clear ();
  qbak_file_close (r);

  /* The object is never replaced. */
  assert_null (storage_create_object (fx->st, "disks/vda/A.qcow2"));
  assert_int_equal (error_get_status (), STATUS_USAGE);
  assert_int_equal (error_get_errno (), EEXIST);
  error_clear ();

  free (head);
  free (piece);
  free (back);
}

static void
test_abort_leaves_nothing (void **state)
{
  struct fixture *fx = *state;
  struct qbak_file *f = storage_create_object (fx->st, "disks/vdb/B.qcow2");
  assert_non_null (f);
  assert_int_equal (qbak_file_pwrite (f, "partial", 7, 0), 0);
  assert_int_equal (storage_abort_object (fx->st, f), 0);
  qbak_file_close (f);
  uint64_t size;
  assert_int_equal (storage_size (fx->st, "disks/vdb/B.qcow2", &size), 0);
  /* The key is free again. */
  f = storage_create_object (fx->st, "disks/vdb/B.qcow2");
  assert_non_null (f);

  /* A file that took the name meanwhile is not this object's to remove. */
  char path[TEST_PATH_MAX + 64], moved[TEST_PATH_MAX + 64];
  snprintf (path, sizeof path, "%s/disks/vdb/B.qcow2", fx->repo);
  snprintf (moved, sizeof moved, "%s/disks/vdb/C.qcow2", fx->repo);
  assert_int_equal (rename (path, moved), 0);
  test_sh_status ("echo other > '%s'", path);
  assert_int_equal (storage_abort_object (fx->st, f), 0);
  qbak_file_close (f);
  assert_int_equal (storage_size (fx->st, "disks/vdb/B.qcow2", &size), 1);
  assert_int_equal (size, 6);

  /* Missing: ENOENT, STATUS_INVALID. */
  assert_null (storage_open_object (fx->st, "disks/vdb/none.qcow2"));
  assert_int_equal (error_get_status (), STATUS_INVALID);
  assert_int_equal (error_get_errno (), ENOENT);
  error_clear ();
}

/* Links planted at the key or on the way to it are never followed, to
 * read or to create. */
static void
test_links_refused (void **state)
{
  struct fixture *fx = *state;
  char outside[TEST_PATH_MAX + 32];
  snprintf (outside, sizeof outside, "%s/outside", fx->dir);
  test_sh_status ("echo secret > '%s' && mkdir -p '%s/disks' '%s/elsewhere' "
                  "&& ln -s '%s' '%s/disks/L.qcow2' && "
                  "ln -s '%s/elsewhere' '%s/disks/vdc'", outside, fx->repo,
                  fx->dir, outside, fx->repo, fx->dir, fx->repo);

  assert_null (storage_open_object (fx->st, "disks/L.qcow2"));
  assert_int_equal (error_get_status (), STATUS_INVALID);
  error_clear ();
  assert_null (storage_create_object (fx->st, "disks/L.qcow2"));
  assert_int_not_equal (error_get_status (), STATUS_OK);
  error_clear ();
  /* Through a linked folder. */
  assert_null (storage_create_object (fx->st, "disks/vdc/X.qcow2"));
  assert_int_equal (error_get_status (), STATUS_INVALID);
  error_clear ();
  char created[TEST_PATH_MAX + 64];
  snprintf (created, sizeof created, "%s/elsewhere/X.qcow2", fx->dir);
  struct stat sb;
  assert_int_equal (stat (created, &sb), -1);
  /* The target of the link is untouched. */
  assert_int_equal (test_sh_status ("test \"$(cat '%s')\" = secret",
                                    outside), 0);
  /* A folder at the key is not an object. */
  test_sh_status ("mkdir -p '%s/disks/D.qcow2'", fx->repo);
  assert_null (storage_open_object (fx->st, "disks/D.qcow2"));
  assert_int_equal (error_get_status (), STATUS_INVALID);
  error_clear ();
  /* Nor is a key that leaves the repository. */
  assert_null (storage_open_object (fx->st, "disks/../../outside"));
  assert_int_equal (error_get_status (), STATUS_USAGE);
  error_clear ();
}

/* A backing file name stored in an object leads only to a neighbour in
 * its folder: qemu-img's resolution of a relative name, and nothing that
 * leaves the folder. */
static void
test_backing_names (void **state)
{
  struct fixture *fx = *state;
  struct qbak_file *f = storage_create_object (fx->st, "disks/vda/B.qcow2");
  assert_non_null (f);
  assert_int_equal (storage_commit_object (fx->st, f), 0);
  qbak_file_close (f);
  f = storage_create_object (fx->st, "disks/vda/T.qcow2");
  assert_non_null (f);
  assert_int_equal (storage_commit_object (fx->st, f), 0);
  assert_string_equal (storage_object_key (fx->st, f), "disks/vda/T.qcow2");

  struct qbak_file *b = storage_open_backing (fx->st, f, "B.qcow2");
  assert_non_null (b);
  assert_false (b->writable);
  char want[TEST_PATH_MAX + 64];
  snprintf (want, sizeof want, "%s/disks/vda/B.qcow2", fx->repo);
  assert_string_equal (b->path, want);
  qbak_file_close (b);

  static const char *const refused[] = {
    "../vda/B.qcow2", "./B.qcow2", "/etc/passwd", "vda/B.qcow2", "..",
    ".B.qcow2", "", "B.qcow2/", "nbd:localhost:10809",
  };
  for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
    assert_null (storage_open_backing (fx->st, f, refused[i]));
    assert_int_equal (error_get_status (), STATUS_INVALID);
    error_clear ();
  }
  /* A neighbour that is not there. */
  assert_null (storage_open_backing (fx->st, f, "C.qcow2"));
  assert_int_equal (error_get_errno (), ENOENT);
  error_clear ();
  qbak_file_close (f);
}

/* ---- images opened through the storage (formats/image.h) ----------- */

static struct qbak_file *
opener (struct image *from, const char *name, void *opaque)
{
  return storage_open_backing (opaque, from->file, name);
}

static struct image *
open_key (struct storage *st, const char *key, unsigned flags)
{
  struct qbak_file *f = storage_open_object (st, key);
  assert_non_null (f);
  return image_open_file (f, "qcow2", flags, opener, st, NULL, NULL);
}

/* A chain of three, its backing files opened as neighbours, read as
 * qemu-io wrote it; the rules of image_open hold: a backing name that
 * leaves the folder or is absolute, an external data file and a loop are
 * refused. */
static void
test_image_chain (void **state)
{
  struct fixture *fx = *state;
  test_require_qemu ();
  test_sh ("cd '%s' && mkdir -p disks/vda && cd disks/vda && "
           "qemu-img create -q -f qcow2 A.qcow2 4M && "
           "qemu-io -c 'write -P 0x11 0 1M' A.qcow2 >/dev/null && "
           "qemu-img create -q -f qcow2 -b A.qcow2 -F qcow2 B.qcow2 && "
           "qemu-io -c 'write -P 0x22 1M 1M' B.qcow2 >/dev/null && "
           "qemu-img create -q -f qcow2 -b B.qcow2 -F qcow2 C.qcow2 && "
           "qemu-io -c 'write -P 0x33 2M 64k' C.qcow2 >/dev/null && "
           "for f in up abs self; do "
           "qemu-img create -q -f qcow2 $f.qcow2 4M || exit 1; done && "
           "qemu-img rebase -u -b ../vdb/X.qcow2 -F qcow2 up.qcow2 && "
           "qemu-img rebase -u -b /etc/hosts -F raw abs.qcow2 && "
           "qemu-img rebase -u -b self.qcow2 -F qcow2 self.qcow2 && "
           "qemu-img create -q -f qcow2 -o data_file=data.raw dfile.qcow2 "
           "4M", fx->repo);

  struct image *img = open_key (fx->st, "disks/vda/C.qcow2", 0);
  assert_non_null (img);
  assert_non_null (img->backing);
  assert_non_null (img->backing->backing);
  assert_null (img->backing->backing->backing);
  uint8_t buf[4];
  static const struct { uint64_t off; uint8_t v; } want[] = {
    { 0, 0x11 }, { 1 << 20, 0x22 }, { 2 << 20, 0x33 }, { 3 << 20, 0 },
  };
  for (size_t i = 0; i < 4; i++) {
    assert_int_equal (image_read (img, buf, sizeof buf, want[i].off), 0);
    for (size_t k = 0; k < sizeof buf; k++)
      assert_int_equal (buf[k], want[i].v);
  }
  image_close (img);

  static const struct { const char *key, *why; } refused[] = {
    { "disks/vda/up.qcow2", "not a file in the same folder" },
    { "disks/vda/abs.qcow2", "not a file in the same folder" },
    { "disks/vda/dfile.qcow2", "names an external data file" },
    { "disks/vda/self.qcow2", "backing chain loop" },
  };
  for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
    assert_null (open_key (fx->st, refused[i].key, 0));
    assert_non_null (strstr (error_get_message (), refused[i].why));
    assert_int_equal (error_get_status (), STATUS_INVALID);
    error_clear ();
  }
  /* Without the chain, the image alone opens (to be inspected). */
  img = open_key (fx->st, "disks/vda/dfile.qcow2", IMAGE_OPEN_NO_BACKING);
  assert_non_null (img);
  image_close (img);
  /* A read-only object is never opened for writing. */
  assert_null (open_key (fx->st, "disks/vda/C.qcow2", IMAGE_OPEN_WRITE));
  assert_int_equal (error_get_status (), STATUS_USAGE);
  error_clear ();
}

/* ---- the seam: a backend that can only read ------------------------- */

struct mem {
  const char *data;
  size_t len;
  int closed;
};

static ssize_t
mem_pread (struct qbak_file *f, void *buf, size_t count, uint64_t offset)
{
  struct mem *m = f->impl;
  if (offset >= m->len)
    return 0;
  size_t n = m->len - offset < count ? m->len - offset : count;
  /* Short reads: the generic layer loops. */
  if (n > 3)
    n = 3;
  memcpy (buf, m->data + offset, n);
  return (ssize_t) n;
}

static int64_t
mem_size (struct qbak_file *f)
{
  return (int64_t) ((struct mem *) f->impl)->len;
}

static void
mem_close (struct qbak_file *f)
{
  ((struct mem *) f->impl)->closed++;
}

static const struct qbak_file_ops mem_ops = {
  .name = "memory",
  .pread = mem_pread,
  .size = mem_size,
  .close = mem_close,
};

static void
test_backend_without_operations (void **state)
{
  (void) state;
  struct mem m = { .data = "0123456789", .len = 10 };
  struct qbak_file *f = qbak_file_new (&mem_ops, &m, "mem://ten", false);
  assert_non_null (f);
  char buf[16] = "";
  assert_int_equal (qbak_file_pread (f, buf, 10, 0), 0);
  assert_memory_equal (buf, "0123456789", 10);
  assert_int_equal (qbak_file_pread_zerofill (f, buf, 4, 8), 0);
  assert_memory_equal (buf, "89\0\0", 4);
  assert_int_equal (qbak_file_pread (f, buf, 4, 8), -1);
  assert_int_equal (error_get_status (), STATUS_INVALID);
  error_clear ();
  assert_int_equal (qbak_file_size (f), 10);
  /* The hints have defaults: all data, nothing to start. */
  bool is_data;
  uint64_t pnum;
  assert_int_equal (qbak_file_extent (f, 0, 8, &is_data, &pnum), 0);
  assert_true (is_data);
  assert_int_equal (pnum, 8);
  qbak_file_writeback (f, 0, 10);

  /* Everything else is refused, clearly. */
  assert_int_equal (qbak_file_pwrite (f, "x", 1, 0), -1);
  assert_int_equal (error_get_status (), STATUS_USAGE);
  assert_non_null (strstr (error_get_message (),
                           "not supported on object storage"));
  error_clear ();
  assert_int_equal (qbak_file_flush (f), -1);
  assert_int_equal (error_get_status (), STATUS_USAGE);
  error_clear ();
  assert_int_equal (qbak_file_truncate (f, 0), -1);
  assert_int_equal (error_get_status (), STATUS_USAGE);
  error_clear ();
  assert_int_equal (qbak_file_punch_hole (f, 0, 1), -1);
  assert_int_equal (error_get_status (), STATUS_USAGE);
  error_clear ();
  assert_int_equal (qbak_file_allocated (f), -1);
  assert_int_equal (error_get_status (), STATUS_USAGE);
  error_clear ();

  struct qbak_file *g = qbak_file_new (&mem_ops, &m, "mem://ten", false);
  assert_true (qbak_file_same (f, g));
  qbak_file_close (g);
  qbak_file_close (f);
  assert_int_equal (m.closed, 2);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_create_commit_read, setup,
                                     teardown),
    cmocka_unit_test_setup_teardown (test_abort_leaves_nothing, setup,
                                     teardown),
    cmocka_unit_test_setup_teardown (test_links_refused, setup, teardown),
    cmocka_unit_test_setup_teardown (test_backing_names, setup, teardown),
    cmocka_unit_test_setup_teardown (test_image_chain, setup, teardown),
    cmocka_unit_test (test_backend_without_operations),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
