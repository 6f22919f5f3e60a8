/* The retention policy engine (lib/prune-policy.c) and its zone reader
 * (lib/repo-prune-zone.c): restic's keep rules on a zone's calendar,
 * checked against decisions worked out by hand (tests/cli/prune-policy.bats
 * checks them against restic itself). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/error.h"
#include "lib/prune-policy.h"
#include "lib/repo-record.h"

#define FAR_FUTURE ((int64_t) 1 << 40)

/* Seconds since the epoch of a UTC wall clock. */
static int64_t
utc (int y, int mo, int d, int h, int mi)
{
  int64_t yy = y - (mo <= 2);
  int64_t era = (yy >= 0 ? yy : yy - 399) / 400;
  int64_t yoe = yy - era * 400;
  int64_t doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  int64_t days = era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy -
                 719468;
  return days * 86400 + h * 3600 + mi * 60;
}

static struct prune_zone *
zone (const char *name)
{
  struct prune_zone *z = prune_zone_load (name);
  if (!z)
    fail_msg ("%s: %s", name, error_get_message ());
  return z;
}

/* Apply P to the N times (oldest first) in Z; REASONS gets the result. */
static void
apply (const struct prune_policy *p, const struct prune_zone *z,
       const int64_t *times, const bool *prot, size_t n, unsigned *reasons)
{
  struct prune_point pts[64];
  assert_true (n <= 64);
  for (size_t i = 0; i < n; i++)
    pts[i] = (struct prune_point) { times[i], prot ? prot[i] : false };
  assert_int_equal (prune_policy_apply (p, z, pts, n, FAR_FUTURE, reasons),
                    0);
}

static void
test_durations (void **state)
{
  (void) state;
  struct prune_duration d;
  char text[64];
  assert_int_equal (prune_duration_parse ("1y2m3d4h", &d), 0);
  assert_int_equal (d.years, 1);
  assert_int_equal (d.months, 2);
  assert_int_equal (d.days, 3);
  assert_int_equal (d.hours, 4);
  prune_duration_format (&d, text);
  assert_string_equal (text, "1y2m3d4h");
  assert_int_equal (prune_duration_parse ("36h", &d), 0);
  assert_int_equal (d.hours, 36);
  assert_int_equal (d.days, 0);
  static const char *const bad[] = { "", "y", "1", "2w", "1d1y", "1y1y",
                                     "-1d", "1 d", "1d ", "99999999d" };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    assert_int_equal (prune_duration_parse (bad[i], &d), -1);
    assert_int_equal (error_get_status (), STATUS_USAGE);
  }
}

static void
test_empty_policy_refused (void **state)
{
  (void) state;
  struct prune_zone *z = zone ("UTC");
  struct prune_policy p = { 0 };
  struct prune_point pt = { 1700000000, true };
  unsigned r;
  assert_true (prune_policy_empty (&p));
  assert_int_equal (prune_policy_apply (&p, z, &pt, 1, FAR_FUTURE, &r), -1);
  assert_int_equal (error_get_status (), STATUS_USAGE);
  prune_zone_free (z);
}

static void
test_zone_offsets (void **state)
{
  (void) state;
  struct prune_zone *b = zone ("Europe/Berlin");
  struct prune_zone *ny = zone ("America/New_York");
  /* Spring forward in Berlin at 01:00 UTC on 2026-03-29. */
  assert_int_equal (prune_zone_offset (b, utc (2026, 3, 29, 0, 59)), 3600);
  assert_int_equal (prune_zone_offset (b, utc (2026, 3, 29, 1, 0)), 7200);
  /* Fall back at 01:00 UTC on 2026-10-25. */
  assert_int_equal (prune_zone_offset (b, utc (2026, 10, 25, 0, 59)), 7200);
  assert_int_equal (prune_zone_offset (b, utc (2026, 10, 25, 1, 0)), 3600);
  /* New York: 2026-03-08 07:00 UTC and 2026-11-01 06:00 UTC. */
  assert_int_equal (prune_zone_offset (ny, utc (2026, 3, 8, 6, 59)), -18000);
  assert_int_equal (prune_zone_offset (ny, utc (2026, 3, 8, 7, 0)), -14400);
  assert_int_equal (prune_zone_offset (ny, utc (2026, 11, 1, 5, 59)), -14400);
  assert_int_equal (prune_zone_offset (ny, utc (2026, 11, 1, 6, 0)), -18000);
  /* Past the file's transitions: the rule at its end. */
  assert_int_equal (prune_zone_offset (b, utc (2040, 7, 1, 0, 0)), 7200);
  assert_int_equal (prune_zone_offset (b, utc (2040, 1, 1, 0, 0)), 3600);
  assert_int_equal (prune_zone_offset (b, utc (2040, 3, 25, 0, 59)), 3600);
  assert_int_equal (prune_zone_offset (b, utc (2040, 3, 25, 1, 0)), 7200);
  assert_int_equal (prune_zone_offset (ny, utc (2045, 8, 1, 0, 0)), -14400);
  assert_int_equal (prune_zone_offset (ny, utc (2045, 12, 1, 0, 0)), -18000);
  prune_zone_free (b);
  prune_zone_free (ny);

  struct prune_zone *u = zone ("UTC");
  assert_int_equal (prune_zone_offset (u, 1700000000), 0);
  prune_zone_free (u);
  assert_null (prune_zone_load ("../etc/passwd"));
  assert_int_equal (error_get_status (), STATUS_USAGE);
  assert_null (prune_zone_load ("Mars/Olympus"));
  assert_int_equal (error_get_status (), STATUS_USAGE);
}

static void
test_keep_last_and_ties (void **state)
{
  (void) state;
  struct prune_zone *z = zone ("UTC");
  int64_t t[] = { 100, 200, 200, 300 };
  unsigned r[4];
  struct prune_policy p = { .last = 2 };
  apply (&p, z, t, NULL, 4, r);
  /* Equal times: the later listed is the newer. */
  assert_int_equal (r[0], 0);
  assert_int_equal (r[1], 0);
  assert_int_equal (r[2], PRUNE_KEEP_LAST);
  assert_int_equal (r[3], PRUNE_KEEP_LAST);
  prune_zone_free (z);
}

static void
test_iso_weeks (void **state)
{
  (void) state;
  struct prune_zone *z = zone ("UTC");
  /* 2020 has a week 53: Monday Dec 28 to Sunday Jan 3.  Dec 30 2024 is
   * Monday of 2025-W01. */
  int64_t t[] = {
    utc (2020, 12, 27, 12, 0),    /* 2020-W52 */
    utc (2020, 12, 28, 9, 0),     /* 2020-W53 */
    utc (2021, 1, 3, 23, 0),      /* 2020-W53 */
    utc (2021, 1, 4, 0, 30),      /* 2021-W01 */
    utc (2024, 12, 29, 23, 30),   /* 2024-W52 */
    utc (2024, 12, 30, 0, 30),    /* 2025-W01 */
    utc (2025, 1, 5, 23, 0),      /* 2025-W01 */
    utc (2025, 1, 6, 1, 0),       /* 2025-W02 */
  };
  unsigned r[8];
  struct prune_policy p = { .weekly = 100 };
  apply (&p, z, t, NULL, 8, r);
  unsigned want[] = { PRUNE_KEEP_WEEKLY, 0, PRUNE_KEEP_WEEKLY,
                      PRUNE_KEEP_WEEKLY, PRUNE_KEEP_WEEKLY, 0,
                      PRUNE_KEEP_WEEKLY, PRUNE_KEEP_WEEKLY };
  for (size_t i = 0; i < 8; i++)
    assert_int_equal (r[i], want[i]);
  /* Only weeks that hold a point count: 3 weeks reach back to 2024-W52. */
  p.weekly = 3;
  apply (&p, z, t, NULL, 8, r);
  assert_int_equal (r[3], 0);
  assert_int_equal (r[4], PRUNE_KEEP_WEEKLY);
  assert_int_equal (r[6], PRUNE_KEEP_WEEKLY);
  prune_zone_free (z);
}

static void
test_days_follow_the_zone (void **state)
{
  (void) state;
  struct prune_zone *b = zone ("Europe/Berlin");
  /* 23:30 UTC on Mar 28 is Mar 29 00:30 in Berlin: the same Berlin day
   * as 22:00 UTC on Mar 29 (00:00 of Mar 30 is 22:00 UTC, after the
   * spring change). */
  int64_t t[] = { utc (2026, 3, 28, 22, 30), utc (2026, 3, 28, 23, 30),
                  utc (2026, 3, 29, 21, 59), utc (2026, 3, 29, 22, 0) };
  unsigned r[4];
  struct prune_policy p = { .daily = 10, .hourly = 1 };
  apply (&p, b, t, NULL, 4, r);
  assert_int_equal (r[0], PRUNE_KEEP_DAILY);
  assert_int_equal (r[1], 0);
  assert_int_equal (r[2], PRUNE_KEEP_DAILY);
  assert_int_equal (r[3], PRUNE_KEEP_DAILY | PRUNE_KEEP_HOURLY);
  prune_zone_free (b);
}

static void
test_keep_within (void **state)
{
  (void) state;
  struct prune_zone *z = zone ("UTC");
  /* Nov 30 minus 1y9m is "Feb 30 2025", which rolls over to Mar 2. */
  int64_t t[] = { utc (2025, 2, 28, 18, 0), utc (2025, 3, 2, 17, 59),
                  utc (2025, 3, 2, 18, 0), utc (2025, 3, 2, 18, 1),
                  utc (2026, 11, 30, 18, 0) };
  unsigned r[5];
  struct prune_policy p = { .has_within = true,
                            .within = { .years = 1, .months = 9 } };
  apply (&p, z, t, NULL, 5, r);
  assert_int_equal (r[0], 0);
  assert_int_equal (r[1], 0);
  assert_int_equal (r[2], 0);           /* newer than the cut, not equal */
  assert_int_equal (r[3], PRUNE_KEEP_WITHIN);
  assert_int_equal (r[4], PRUNE_KEEP_WITHIN);

  /* A point in the future does not move the cut; with every point in
   * the future, every point is within. */
  struct prune_point pts[3] = { { 1000, false }, { 90000, false },
                                { 900000, false } };
  struct prune_policy d1 = { .has_within = true, .within = { .days = 1 } };
  assert_int_equal (prune_policy_apply (&d1, z, pts, 3, 100000, r), 0);
  assert_int_equal (r[0], 0);
  assert_int_equal (r[1], PRUNE_KEEP_WITHIN);
  assert_int_equal (r[2], PRUNE_KEEP_WITHIN);
  assert_int_equal (prune_policy_apply (&d1, z, pts, 3, 10, r), 0);
  assert_int_equal (r[0], PRUNE_KEEP_WITHIN);
  prune_zone_free (z);
}

static void
test_protected_points_still_count (void **state)
{
  (void) state;
  struct prune_zone *z = zone ("UTC");
  int64_t t[] = { utc (2026, 1, 1, 10, 0), utc (2026, 1, 2, 10, 0),
                  utc (2026, 1, 3, 10, 0), utc (2026, 1, 3, 11, 0) };
  bool prot[] = { true, false, true, false };
  unsigned r[4];
  struct prune_policy p = { .daily = 1 };
  apply (&p, z, t, prot, 4, r);
  assert_int_equal (r[0], PRUNE_KEEP_PROTECTED);
  assert_int_equal (r[1], 0);
  assert_int_equal (r[2], PRUNE_KEEP_PROTECTED);
  assert_int_equal (r[3], PRUNE_KEEP_DAILY);
  /* The newest point protected: it still takes keep-daily's one day. */
  bool prot2[] = { false, false, false, true };
  apply (&p, z, t, prot2, 4, r);
  assert_int_equal (r[3], PRUNE_KEEP_PROTECTED | PRUNE_KEEP_DAILY);
  assert_int_equal (r[1], 0);
  prune_zone_free (z);
}

static void
test_config_zone (void **state)
{
  (void) state;
  struct repo_config c = { .id = "0123456789abcdef0123456789abcdef",
                           .created = (char *) "2026-12-01T18:00:00Z",
                           .timezone = (char *) "Europe/Berlin" };
  char *text = repo_config_encode (&c);
  assert_non_null (text);
  struct repo_config d;
  assert_int_equal (repo_config_decode ("t", text, strlen (text), &d), 0);
  assert_string_equal (d.timezone, "Europe/Berlin");
  repo_config_free (&d);
  free (text);
  /* Made before the zone was kept: UTC. */
  static const char old[] =
    "{ \"format\": \"qbak-repository\", \"version\": 1, \"id\": "
    "\"0123456789abcdef0123456789abcdef\", \"created\": "
    "\"2026-12-01T18:00:00Z\" }\n";
  assert_int_equal (repo_config_decode ("t", old, strlen (old), &d), 0);
  assert_string_equal (d.timezone, "UTC");
  repo_config_free (&d);
  static const char bad[] =
    "{ \"format\": \"qbak-repository\", \"version\": 1, \"id\": "
    "\"0123456789abcdef0123456789abcdef\", \"created\": "
    "\"2026-12-01T18:00:00Z\", \"timezone\": 1 }\n";
  assert_int_equal (repo_config_decode ("t", bad, strlen (bad), &d), -1);
  assert_int_equal (error_get_status (), STATUS_INVALID);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_durations),
    cmocka_unit_test (test_empty_policy_refused),
    cmocka_unit_test (test_zone_offsets),
    cmocka_unit_test (test_keep_last_and_ties),
    cmocka_unit_test (test_iso_weeks),
    cmocka_unit_test (test_days_follow_the_zone),
    cmocka_unit_test (test_keep_within),
    cmocka_unit_test (test_protected_points_still_count),
    cmocka_unit_test (test_config_zone),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
