/* Prune's merges written as new objects (lib/layer-merge-object.c)
 * against the Ceph RADOS Gateway the s3 test fixture starts
 * (tests/s3/rgw.sh; endpoint and keys in $QBAK_RGW_DIR/env).  A chain
 * base <- mid <- top is made by qemu-img and qemu-io in a local folder
 * and uploaded through the storage; each merge is downloaded next to the
 * local chain and checked with QEMU's tools: qemu-img check finds it
 * clean, qemu-img info names the backing file asked for, and qemu-img
 * compare finds that it reads as the chain it replaces, and that its own
 * layer is what qemu-img commit makes of the same two files.  A merge
 * that fails (sizes of clusters that differ, or the gateway refusing the
 * upload) leaves no object and no upload in progress.  Each run uses a
 * bucket of its own, each test a prefix of its own. */
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
#include <unistd.h>

#include <cmocka.h>

#include "common/error.h"
#include "common/fileio.h"
#include "common/s3-client.h"
#include "common/s3-config.h"
#include "common/storage.h"
#include "formats/qcow2-header.h"
#include "lib/job.h"
#include "helpers.h"
#include "s3-fixture.h"

#define MiB ((size_t) 1 << 20)

static char bucket[64];
static unsigned test_number;

struct fixture {
  char url[256];        /* s3://BUCKET/mN */
  char prefix[32];      /* mN */
  struct storage *st;
  char dir[TEST_PATH_MAX];
};

static int
group_setup (void **state)
{
  (void) state;
  gateway_bucket (bucket, sizeof bucket, "merge");
  return 0;
}

static int
group_teardown (void **state)
{
  (void) state;
  proxy_stop_stray ();
  /* Every test removed its objects: the bucket is empty. */
  bucket_request ("DELETE", bucket);
  return 0;
}

static int
setup (void **state)
{
  struct fixture *fx = calloc (1, sizeof *fx);
  assert_non_null (fx);
  snprintf (fx->prefix, sizeof fx->prefix, "m%u", ++test_number);
  snprintf (fx->url, sizeof fx->url, "s3://%s/%s", bucket, fx->prefix);
  fx->st = storage_open (fx->url, true, NULL);
  if (!fx->st)
    fail_msg ("%s: %s", fx->url, error_get_message ());
  test_tmpdir_create (fx->dir);
  *state = fx;
  return 0;
}

static int
delete_entry (const struct storage_entry *e, void *opaque)
{
  return storage_delete (opaque, e->key);
}

static int
teardown (void **state)
{
  struct fixture *fx = *state;
  storage_list (fx->st, "", delete_entry, fx->st);
  storage_close (fx->st);
  test_rmtree (fx->dir);
  free (fx);
  return 0;
}

/* Uploads in progress under the fixture's prefix. */
static int
uploads_in_progress (struct fixture *fx)
{
  return s3_uploads_in_progress (fx->url, fx->prefix);
}

/* The local file NAME of the fixture's folder uploaded as d/NAME,
 * appended in 3 MiB writes (the storage's object write pattern). */
static void
upload (struct fixture *fx, const char *name)
{
  char path[TEST_PATH_MAX], key[128];
  size_t len;
  test_path (path, fx->dir, name);
  snprintf (key, sizeof key, "d/%s", name);
  uint8_t *buf = test_read_file (path, &len);
  struct qbak_file *f = storage_create_object (fx->st, key);
  if (!f)
    fail_msg ("%s: %s", key, error_get_message ());
  for (size_t off = 0; off < len; off += 3 * MiB) {
    size_t n = len - off < 3 * MiB ? len - off : 3 * MiB;
    assert_int_equal (qbak_file_pwrite (f, buf + off, n, off), 0);
  }
  if (storage_commit_object (fx->st, f) < 0)
    fail_msg ("%s: %s", key, error_get_message ());
  qbak_file_close (f);
  free (buf);
}

/* The object d/KEY downloaded into the fixture's folder as NAME. */
static void
download (struct fixture *fx, const char *key, const char *name)
{
  char path[TEST_PATH_MAX], k[128];
  snprintf (k, sizeof k, "d/%s", key);
  test_path (path, fx->dir, name);
  struct qbak_file *f = storage_open_object (fx->st, k);
  if (!f)
    fail_msg ("%s: %s", k, error_get_message ());
  int64_t size = qbak_file_size (f);
  assert_true (size > 0);
  uint8_t *buf = malloc ((size_t) size);
  assert_non_null (buf);
  assert_int_equal (qbak_file_pread (f, buf, (size_t) size, 0), 0);
  qbak_file_close (f);
  FILE *out = fopen (path, "wb");
  assert_non_null (out);
  assert_int_equal (fwrite (buf, 1, (size_t) size, out), (size_t) size);
  assert_int_equal (fclose (out), 0);
  free (buf);
}

/* base (24 MiB, so that its upload and a merge over it are multipart):
 * 12 MiB of 0x11, a zero cluster at 13 MiB, 0x12 at 20 MiB; mid over it:
 * 0x22 over 2-3 MiB, a zero cluster over base's data at 4 MiB, 0x23 at
 * 16 MiB (where base has nothing); top over mid: 0x33 at 2 MiB (over
 * mid's), 0x34 at 5 MiB (over base's), a zero cluster over mid's 0x23.
 * Clusters of 64 KiB; mid grows to GROWN bytes if non-zero. */
static void
make_chain (struct fixture *fx, uint64_t grown)
{
  test_require_qemu ();
  test_sh ("cd '%s' && qemu-img create -q -f qcow2 -o cluster_size=65536 "
           "base.qcow2 24M && qemu-io -f qcow2 -c 'write -P 0x11 0 12M' "
           "-c 'write -z 13M 64k' -c 'write -P 0x12 20M 1M' base.qcow2 "
           ">/dev/null", fx->dir);
  test_sh ("cd '%s' && qemu-img create -q -f qcow2 -o cluster_size=65536 "
           "-b base.qcow2 -F qcow2 mid.qcow2 %s && qemu-io -f qcow2 "
           "-c 'write -P 0x22 2M 1M' -c 'write -z 4M 64k' "
           "-c 'write -P 0x23 16M 128k' mid.qcow2 >/dev/null", fx->dir,
           grown ? "32M" : "24M");
  test_sh ("cd '%s' && qemu-img create -q -f qcow2 -o cluster_size=65536 "
           "-b mid.qcow2 -F qcow2 top.qcow2 && qemu-io -f qcow2 "
           "-c 'write -P 0x34 5M 64k' -c 'write -P 0x33 2M 256k' "
           "-c 'write -z 16M 64k' top.qcow2 >/dev/null", fx->dir);
  upload (fx, "base.qcow2");
  upload (fx, "mid.qcow2");
  upload (fx, "top.qcow2");
}

/* The backing name qemu-img info finds in NAME ("" for none). */
static void
assert_backing (struct fixture *fx, const char *name, const char *backing)
{
  test_sh ("cd '%s' && b=$(qemu-img info --output=json '%s' | python3 -c "
           "'import json,sys; print(json.load(sys.stdin).get("
           "\"backing-filename\", \"\"))') && [ \"$b\" = '%s' ] || "
           "{ echo \"backing file '$b', not '%s'\"; false; }", fx->dir,
           name, backing, backing);
}

/* The own layer of NAME (its backing file not opened) for qemu-img. */
#define LAYER_ONLY "'json:{\"driver\":\"qcow2\",\"backing\":null," \
  "\"file\":{\"driver\":\"file\",\"filename\":\"%s\"}}'"

/* Removing an incremental from the middle: top over mid, backed by
 * base, in top's place.  It reads as top read, and its own layer is what
 * qemu-img commit makes of top into (a copy of) mid. */
static void
test_merge_into_child (void **state)
{
  struct fixture *fx = *state;
  make_chain (fx, 0);
  if (layer_merge_object (fx->st, "d/mid.qcow2", "d/top.qcow2",
                          "d/top.qcow2-new", "base.qcow2", "qcow2") < 0)
    fail_msg ("%s", error_get_message ());
  download (fx, "top.qcow2-new", "merged.qcow2");
  test_sh ("cd '%s' && qemu-img check -q merged.qcow2", fx->dir);
  assert_backing (fx, "merged.qcow2", "base.qcow2");
  test_sh ("cd '%s' && qemu-img compare -q top.qcow2 merged.qcow2",
           fx->dir);
  /* The oracle: qemu-img commit moves top's clusters into mid's, over
   * its own, and mid stays backed by base.  Their own layers read the
   * same and hold data and zero clusters at the same places. */
  test_sh ("cd '%s' && cp mid.qcow2 oracle.qcow2 && cp top.qcow2 t.qcow2 "
           "&& qemu-img rebase -u -b oracle.qcow2 -F qcow2 t.qcow2 && "
           "qemu-img commit -q t.qcow2", fx->dir);
  test_sh ("cd '%s' && qemu-img compare -q " LAYER_ONLY " " LAYER_ONLY,
           fx->dir, "merged.qcow2", "oracle.qcow2");
  test_sh ("cd '%s' && qemu-img map --output=json " LAYER_ONLY " >a.json "
           "&& qemu-img map --output=json " LAYER_ONLY " >b.json && "
           "python3 -c 'import json; f=lambda n: [(e[\"start\"], "
           "e[\"length\"], e[\"zero\"]) for e in json.load(open(n)) if "
           "e[\"data\"] or e[\"zero\"]]; a, b = f(\"a.json\"), "
           "f(\"b.json\"); assert a == b, (a, b)'",
           fx->dir, "merged.qcow2", "oracle.qcow2");
  assert_int_equal (uploads_in_progress (fx), 0);
}

/* Removing the full at the bottom: mid over base, no backing file, in
 * mid's place; it reads as mid read.  A disk that grew keeps its size. */
static void
merge_full (struct fixture *fx, uint64_t grown)
{
  make_chain (fx, grown);
  if (layer_merge_object (fx->st, "d/base.qcow2", "d/mid.qcow2",
                          "d/mid.qcow2-new", NULL, NULL) < 0)
    fail_msg ("%s", error_get_message ());
  download (fx, "mid.qcow2-new", "merged.qcow2");
  test_sh ("cd '%s' && qemu-img check -q merged.qcow2", fx->dir);
  assert_backing (fx, "merged.qcow2", "");
  /* Strict (allocation too) unless mid grew: past base's end QEMU
   * calls mid's clusters zero, the merged file's unallocated. */
  test_sh ("cd '%s' && qemu-img compare -q %s mid.qcow2 merged.qcow2",
           fx->dir, grown ? "" : "-s");
  /* And top reads the same through it in mid's place. */
  test_sh ("cd '%s' && qemu-img convert -O raw top.qcow2 top.raw && "
           "cp merged.qcow2 mid.qcow2 && qemu-img compare -q -f qcow2 "
           "-F raw top.qcow2 top.raw", fx->dir);
  assert_int_equal (uploads_in_progress (fx), 0);
}

static void
test_merge_full (void **state)
{
  merge_full (*state, 0);
}

static void
test_merge_full_grown (void **state)
{
  struct fixture *fx = *state;
  merge_full (fx, 32 * MiB);
  test_sh ("cd '%s' && qemu-img info merged.qcow2 | grep -q "
           "'virtual size: 32 MiB'", fx->dir);
}

/* Refused merges leave nothing: clusters of other sizes (before any
 * request), and a gateway that fails every part upload of the merged
 * object (the upload is aborted). */
static void
test_merge_failures (void **state)
{
  struct fixture *fx = *state;
  uint64_t size;
  make_chain (fx, 0);
  test_sh ("cd '%s' && qemu-img create -q -f qcow2 -o cluster_size=131072 "
           "other.qcow2 24M", fx->dir);
  upload (fx, "other.qcow2");
  assert_int_equal (layer_merge_object (fx->st, "d/other.qcow2",
                                        "d/mid.qcow2", "d/mid.qcow2-new",
                                        NULL, NULL), -1);
  assert_int_equal (error_get_status (), STATUS_INVALID);
  assert_int_equal (storage_size (fx->st, "d/mid.qcow2-new", &size), 0);

  struct proxy p = { 0 };
  proxy_start (&p);
  proxy_rules (&p, "[{\"fault\": \"500\", \"match\": "
               "\"^PUT .*mid.qcow2-new.*partNumber=\"}]");
  struct storage *st = storage_open (fx->url, false, NULL);
  assert_non_null (st);
  assert_int_equal (layer_merge_object (st, "d/base.qcow2", "d/mid.qcow2",
                                        "d/mid.qcow2-new", NULL, NULL), -1);
  assert_true (strstr (error_get_message (), "mid.qcow2-new") != NULL);
  storage_close (st);
  assert_true (proxy_count (&p, "fault 500") > 0);
  proxy_stop (&p);
  assert_int_equal (storage_size (fx->st, "d/mid.qcow2-new", &size), 0);
  assert_int_equal (uploads_in_progress (fx), 0);
}

/* The header reader prune asks for backing names, through the storage. */
static void
test_object_header (void **state)
{
  struct fixture *fx = *state;
  struct qcow2_header h;
  make_chain (fx, 0);
  assert_int_equal (layer_object_header (fx->st, "d/top.qcow2", &h), 0);
  assert_string_equal (h.backing_name, "mid.qcow2");
  assert_int_equal (h.size, 24 * MiB);
  qcow2_header_free (&h);
  assert_int_equal (layer_object_header (fx->st, "d/base.qcow2", &h), 0);
  assert_null (h.backing_name);
  qcow2_header_free (&h);
  assert_int_equal (layer_object_header (fx->st, "d/gone.qcow2", &h), -1);
  assert_int_equal (error_get_errno (), ENOENT);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_merge_into_child, setup, teardown),
    cmocka_unit_test_setup_teardown (test_merge_full, setup, teardown),
    cmocka_unit_test_setup_teardown (test_merge_full_grown, setup, teardown),
    cmocka_unit_test_setup_teardown (test_merge_failures, setup, teardown),
    cmocka_unit_test_setup_teardown (test_object_header, setup, teardown),
  };
  return cmocka_run_group_tests (tests, group_setup, group_teardown);
}
