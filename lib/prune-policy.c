/* The retention policy engine (prune-policy.h): restic's keep rules on
 * the local calendar of a zone. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "lib/prune-policy.h"

/* ---- civil calendar (proleptic Gregorian, days since 1970-01-01) ----- */

static int64_t
floor_div (int64_t a, int64_t b)
{
  return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

static int64_t
days_from_civil (int64_t y, int64_t m, int64_t d)
{
  y -= m <= 2;
  int64_t era = floor_div (y, 400);
  int64_t yoe = y - era * 400;
  int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

static void
civil_from_days (int64_t z, int64_t *y, int *m, int *d)
{
  z += 719468;
  int64_t era = floor_div (z, 146097);
  int64_t doe = z - era * 146097;
  int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  int64_t mp = (5 * doy + 2) / 153;
  *d = (int) (doy - (153 * mp + 2) / 5 + 1);
  *m = (int) (mp < 10 ? mp + 3 : mp - 9);
  *y = yoe + era * 400 + (*m <= 2);
}

/* The local wall clock of an instant. */
struct civil {
  int64_t year;
  int month, day, hour;
  int64_t days;         /* days since the epoch of the local date */
  int64_t sec_of_day;
};

static struct civil
to_civil (const struct prune_zone *z, int64_t t)
{
  struct civil c;
  int64_t local = t + prune_zone_offset (z, t);
  c.days = floor_div (local, 86400);
  c.sec_of_day = local - c.days * 86400;
  c.hour = (int) (c.sec_of_day / 3600);
  civil_from_days (c.days, &c.year, &c.month, &c.day);
  return c;
}

/* ISO 8601 week: the week (from Monday) belongs to the year of its
 * Thursday. */
static int64_t
iso_week_key (const struct civil *c)
{
  int64_t wday = floor_div (c->days + 3, 7) * 7;     /* Monday of the week */
  int64_t thursday = wday + 3;
  int64_t y;
  int m, d;
  civil_from_days (thursday, &y, &m, &d);
  int64_t week = (thursday - days_from_civil (y, 1, 1)) / 7 + 1;
  return y * 100 + week;
}

/* The instant of local wall clock LOCAL (seconds since the epoch as if
 * UTC) in zone Z; for a wall clock that a change skips or repeats, the
 * offset in force at the first guess, as Go's time.Date (which restic
 * uses) picks it. */
static int64_t
from_local (const struct prune_zone *z, int64_t local)
{
  int32_t off = prune_zone_offset (z, local);
  int32_t off2 = prune_zone_offset (z, local - off);
  if (off2 != off)
    off = off2;
  return local - off;
}

/* The cut of keep-within: NEWEST minus D, years, months and days on its
 * local calendar (an overflowing day rolls over, Jan 31 minus 2 months
 * is Dec 1), hours as elapsed time: what Go's AddDate and Add give. */
static int64_t
within_cut (const struct prune_zone *z, int64_t newest,
            const struct prune_duration *d)
{
  struct civil c = to_civil (z, newest);
  int64_t months = c.year * 12 + (c.month - 1) - (int64_t) d->years * 12 -
                   d->months;
  int64_t y = floor_div (months, 12);
  int m = (int) (months - y * 12) + 1;
  int64_t days = days_from_civil (y, m, 1) + c.day - 1 - d->days;
  return from_local (z, days * 86400 + c.sec_of_day) -
         (int64_t) d->hours * 3600;
}

/* ---- durations -------------------------------------------------------- */

int
prune_duration_parse (const char *s, struct prune_duration *d)
{
  static const char units[] = "ymdh";
  int *fields[] = { &d->years, &d->months, &d->days, &d->hours };
  memset (d, 0, sizeof *d);
  const char *p = s;
  size_t next = 0;
  bool any = false;
  while (*p) {
    if (*p < '0' || *p > '9')
      goto bad;
    long v = 0;
    while (*p >= '0' && *p <= '9') {
      v = v * 10 + (*p++ - '0');
      if (v > 1000000)
        goto bad;
    }
    const char *u = *p ? strchr (units, *p) : NULL;
    if (!u || (size_t) (u - units) < next)
      goto bad;
    next = (size_t) (u - units) + 1;
    *fields[u - units] = (int) v;
    any = true;
    p++;
  }
  if (any)
    return 0;
 bad:
  set_usage_error ("'%s' is not a duration (such as 1y2m3d4h: years, "
                   "months, days, hours)", s);
  return -1;
}

void
prune_duration_format (const struct prune_duration *d, char *out)
{
  size_t n = 0;
  out[0] = '\0';
  if (d->years)
    n += (size_t) snprintf (out + n, 64 - n, "%dy", d->years);
  if (d->months)
    n += (size_t) snprintf (out + n, 64 - n, "%dm", d->months);
  if (d->days)
    n += (size_t) snprintf (out + n, 64 - n, "%dd", d->days);
  if (d->hours || n == 0)
    snprintf (out + n, 64 - n, "%dh", d->hours);
}

/* ---- the rules -------------------------------------------------------- */

bool
prune_policy_empty (const struct prune_policy *p)
{
  return !p->last && !p->hourly && !p->daily && !p->weekly && !p->monthly &&
         !p->yearly && !p->has_within;
}

int
prune_policy_apply (const struct prune_policy *p, const struct prune_zone *z,
                    const struct prune_point *points, size_t n,
                    int64_t now, unsigned *reasons)
{
  if (prune_policy_empty (p)) {
    set_usage_error ("an empty retention policy keeps every point: give at "
                     "least one rule");
    return -1;
  }
  struct bucket {
    unsigned count;
    int64_t last;
    unsigned reason;
  } b[6] = {
    { p->last, INT64_MIN, PRUNE_KEEP_LAST },
    { p->hourly, INT64_MIN, PRUNE_KEEP_HOURLY },
    { p->daily, INT64_MIN, PRUNE_KEEP_DAILY },
    { p->weekly, INT64_MIN, PRUNE_KEEP_WEEKLY },
    { p->monthly, INT64_MIN, PRUNE_KEEP_MONTHLY },
    { p->yearly, INT64_MIN, PRUNE_KEEP_YEARLY },
  };
  if (n == 0)
    return 0;
  /* The newest point before now. */
  bool found = false;
  int64_t newest = 0;
  for (size_t i = 0; i < n; i++)
    if (points[i].unix_time < now && (!found || points[i].unix_time > newest))
      newest = points[i].unix_time, found = true;
  int64_t cut = INT64_MIN;
  if (p->has_within && found)
    cut = within_cut (z, newest, &p->within);

  /* Newest first, ties in reverse listing order (a stable sort). */
  size_t *order = malloc (n * sizeof *order);
  if (!order) {
    set_nomem ();
    return -1;
  }
  for (size_t i = 0; i < n; i++)
    order[i] = n - 1 - i;
  for (size_t i = 1; i < n; i++) {
    size_t v = order[i], j = i;
    while (j > 0 && points[order[j - 1]].unix_time < points[v].unix_time) {
      order[j] = order[j - 1];
      j--;
    }
    order[j] = v;
  }

  for (size_t k = 0; k < n; k++) {
    size_t i = order[k];
    unsigned why = 0;
    if (points[i].protected)
      why |= PRUNE_KEEP_PROTECTED;
    if (p->has_within && points[i].unix_time > cut)
      why |= PRUNE_KEEP_WITHIN;
    struct civil c = to_civil (z, points[i].unix_time);
    int64_t key[6] = {
      (int64_t) k,
      ((c.year * 100 + c.month) * 100 + c.day) * 100 + c.hour,
      (c.year * 100 + c.month) * 100 + c.day,
      iso_week_key (&c),
      c.year * 100 + c.month,
      c.year,
    };
    for (size_t r = 0; r < 6; r++)
      if (b[r].count > 0 && key[r] != b[r].last) {
        b[r].last = key[r];
        b[r].count--;
        why |= b[r].reason;
      }
    reasons[i] = why;
  }
  free (order);
  return 0;
}
