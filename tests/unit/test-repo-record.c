/* The repository's records (lib/repo-record.c): a point survives an
 * encode and decode whole, point ids sort as the points were taken, and
 * every record that is not exactly what qbak writes is refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/error.h"
#include "lib/repo-record.h"

static struct repo_disk_record disks[2] = {
  { .name = "vda", .level = REPO_LEVEL_INCREMENTAL,
    .reason = "changes since point 20261201T170000Z",
    .file = "disks/vda/20261201T180000Z.qcow2",
    .parent = "20261201T170000Z", .format = "qcow2",
    .virtual_size = 1ull << 40, .cluster_size = 65536,
    .bytes_copied = 65536000, .seconds = 0.25 },
  { .name = "data-1", .level = REPO_LEVEL_FULL,
    .reason = "first backup of this disk in this repository",
    .file = "disks/data-1/20261201T180000Z.qcow2", .parent = NULL,
    .format = "raw", .virtual_size = 8 << 20, .cluster_size = 65536,
    .bytes_copied = 0, .seconds = 0 },
};

static char *
encode_sample (void)
{
  struct repo_point p = {
    .id = "20261201T180000Z", .time = (char *) "2026-12-01T18:00:00Z",
    .unix_time = 1796148000, .qbak_version = (char *) "0.1.0",
    .disks = disks, .n_disks = 2,
  };
  char *text = repo_point_encode (&p);
  assert_non_null (text);
  return text;
}

static void
test_round_trip (void **state)
{
  (void) state;
  char *text = encode_sample ();
  struct repo_point p;
  assert_int_equal (repo_point_decode ("t", text, strlen (text), &p), 0);
  assert_string_equal (p.id, "20261201T180000Z");
  assert_int_equal (p.unix_time, 1796148000);
  assert_int_equal (p.n_disks, 2);
  for (size_t i = 0; i < 2; i++) {
    assert_string_equal (p.disks[i].name, disks[i].name);
    assert_int_equal (p.disks[i].level, disks[i].level);
    assert_string_equal (p.disks[i].file, disks[i].file);
    assert_string_equal (p.disks[i].format, disks[i].format);
    assert_int_equal (p.disks[i].virtual_size, disks[i].virtual_size);
    assert_int_equal (p.disks[i].bytes_copied, disks[i].bytes_copied);
  }
  assert_string_equal (p.disks[0].parent, "20261201T170000Z");
  assert_null (p.disks[1].parent);
  assert_non_null (repo_point_disk (&p, "data-1"));
  assert_null (repo_point_disk (&p, "data"));
  repo_point_free (&p);
  free (text);
}

/* Replace the first FROM in TEXT by TO (a new string). */
static char *
edit (const char *text, const char *from, const char *to)
{
  const char *at = strstr (text, from);
  assert_non_null (at);
  size_t n = strlen (text) - strlen (from) + strlen (to) + 1;
  char *out = malloc (n);
  assert_non_null (out);
  snprintf (out, n, "%.*s%s%s", (int) (at - text), text, to,
            at + strlen (from));
  return out;
}

static void
test_refused (void **state)
{
  (void) state;
  static const struct { const char *from, *to, *why; } cases[] = {
    { "\"qbak-point\"", "\"qbak-pointx\"", "another format" },
    { "\"version\": 1", "\"version\": 2", "version 2" },
    { "\"disks/vda/20261201T180000Z.qcow2\"", "\"../../etc/passwd\"",
      "outside its folder" },
    { "\"disks/vda/20261201T180000Z.qcow2\"",
      "\"disks/data-1/20261201T180000Z.qcow2\"", "outside its folder" },
    { "\"disks/vda/20261201T180000Z.qcow2\"", "\"disks/vda/x/y.qcow2\"",
      "outside its folder" },
    { "\"parent\": \"20261201T170000Z\"", "\"parent\": null",
      "incremental without" },
    { "\"parent\": \"20261201T170000Z\"", "\"parent\": \"yesterday\"",
      "not a point id" },
    { "\"format\": \"raw\"", "\"format\": \"vmdk\"", "unknown disk format" },
    { "\"name\": \"data-1\"", "\"name\": \"../x\"", "not a valid name" },
    { "\"level\": \"full\"", "\"level\": \"differential\"", "unknown level" },
    { "\"virtual-size\": 8388608", "\"virtual-size\": -1", "negative" },
    { "\"virtual-size\": 8388608", "\"virtual-size\": \"8M\"", "wrong type" },
    { "\"id\": \"20261201T180000Z\"", "\"id\": \"x\"", "not a point id" },
    { "\"unix-time\"", "\"unix_time\"", "no 'unix-time'" },
  };
  char *text = encode_sample ();
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    char *bad = edit (text, cases[i].from, cases[i].to);
    struct repo_point p;
    if (repo_point_decode ("rec.json", bad, strlen (bad), &p) == 0)
      fail_msg ("case %zu (%s) was accepted", i, cases[i].why);
    assert_int_equal (error_get_status (), STATUS_INVALID);
    if (!strstr (error_get_message (), cases[i].why) ||
        strncmp (error_get_message (), "rec.json: ", 10) != 0)
      fail_msg ("case %zu: message '%s' does not say '%s'", i,
                error_get_message (), cases[i].why);
    free (bad);
  }
  /* One disk named twice (its file moved along, so only the name is
   * wrong). */
  struct repo_point p;
  char *a = edit (text, "\"name\": \"data-1\"", "\"name\": \"vda\"");
  char *b = edit (a, "disks/data-1/", "disks/vda/");
  assert_int_equal (repo_point_decode ("r", b, strlen (b), &p), -1);
  assert_non_null (strstr (error_get_message (), "named twice"));
  free (a);
  free (b);
  /* Trailing bytes, not JSON, an embedded NUL. */
  char *junk = edit (text, "\n}", "\n} x");
  assert_int_equal (repo_point_decode ("r", junk, strlen (junk), &p), -1);
  free (junk);
  assert_int_equal (repo_point_decode ("r", "[1]", 3, &p), -1);
  assert_int_equal (repo_point_decode ("r", "{\"a\0\": 1}", 9, &p), -1);
  free (text);
}

static void
test_ids (void **state)
{
  (void) state;
  char id[REPO_POINT_ID_MAX + 1];
  repo_point_id (1796148000, 1, id);
  assert_string_equal (id, "20261201T180000Z");
  repo_point_id (1796148000, 2, id);
  assert_string_equal (id, "20261201T180000Z-2");
  assert_true (repo_point_id_valid ("20261201T180000Z"));
  assert_true (repo_point_id_valid ("20261201T180000Z-10"));
  assert_false (repo_point_id_valid ("20261201T180000Z-1"));
  assert_false (repo_point_id_valid ("20261201T180000Z-02"));
  assert_false (repo_point_id_valid ("20261201T180000"));
  assert_false (repo_point_id_valid ("2026120XT180000Z"));
  assert_false (repo_point_id_valid ("20261201T180000Z-"));
  /* In the order they were taken, not in byte order. */
  assert_true (repo_point_id_compare ("20261201T180000Z",
                                      "20261201T180000Z-2") < 0);
  assert_true (repo_point_id_compare ("20261201T180000Z-9",
                                      "20261201T180000Z-10") < 0);
  assert_true (repo_point_id_compare ("20261201T180000Z-10",
                                      "20261201T180001Z") < 0);
  assert_int_equal (repo_point_id_compare ("20261201T180000Z",
                                           "20261201T180000Z"), 0);
}

static void
test_config (void **state)
{
  (void) state;
  struct repo_config c = { .id = "0123456789abcdef0123456789abcdef",
                           .created = (char *) "2026-12-01T18:00:00Z" };
  char *text = repo_config_encode (&c);
  assert_non_null (text);
  struct repo_config d;
  assert_int_equal (repo_config_decode ("c", text, strlen (text), &d), 0);
  assert_string_equal (d.id, c.id);
  assert_string_equal (d.created, c.created);
  repo_config_free (&d);
  char *bad = edit (text, "0123456789abcdef0123", "0123456789ABCDEF0123");
  assert_int_equal (repo_config_decode ("c", bad, strlen (bad), &d), -1);
  free (bad);
  free (text);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_round_trip),
    cmocka_unit_test (test_refused),
    cmocka_unit_test (test_ids),
    cmocka_unit_test (test_config),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
