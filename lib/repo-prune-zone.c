/* Time zones for retention periods (prune-policy.h): a small reader of
 * the system's TZif files (RFC 8536) and of the POSIX TZ rule at their
 * end, which covers times past the last transition.
 *
 * Why not localtime_r with TZ set for the call: changing TZ means setenv,
 * which races with every getenv, localtime and strftime that another
 * thread of the program runs, and no lock of ours covers their calls. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/error.h"
#include "lib/prune-policy.h"

#define ZONE_FILE_MAX (1 << 20)

/* A POSIX TZ rule's change date: month, week (5: last), weekday. */
struct rule_date {
  int month, week, wday;
  int32_t time;          /* seconds after local midnight */
};

struct prune_zone {
  int64_t *times;        /* transitions, ascending */
  int32_t *offsets;      /* offset from each transition on */
  size_t n;
  int32_t first;         /* before the first transition */
  /* The rule after the last transition. */
  bool has_rule, rule_dst;
  int32_t std_off, dst_off;
  struct rule_date start, end;
};

static uint32_t
be32 (const unsigned char *p)
{
  return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 |
         (uint32_t) p[2] << 8 | p[3];
}

static int64_t
be64 (const unsigned char *p)
{
  return (int64_t) ((uint64_t) be32 (p) << 32 | be32 (p + 4));
}

/* ---- the POSIX TZ rule ("CET-1CEST,M3.5.0,M10.5.0/3") ---------------- */

static const char *
rule_name (const char *p)
{
  if (*p == '<') {
    const char *e = strchr (p, '>');
    return e ? e + 1 : NULL;
  }
  const char *s = p;
  while ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z'))
    p++;
  return p - s >= 3 ? p : NULL;
}

/* [+-]hh[:mm[:ss]] into *SECS. */
static const char *
rule_hms (const char *p, int32_t *secs)
{
  int sign = 1;
  if (*p == '+' || *p == '-')
    sign = *p++ == '-' ? -1 : 1;
  if (*p < '0' || *p > '9')
    return NULL;
  long v[3] = { 0, 0, 0 };
  for (int i = 0; i < 3; i++) {
    while (*p >= '0' && *p <= '9')
      v[i] = v[i] * 10 + (*p++ - '0');
    if (v[i] > 200)
      return NULL;
    if (i < 2 && *p == ':' && p[1] >= '0' && p[1] <= '9')
      p++;
    else
      break;
  }
  *secs = (int32_t) (sign * (v[0] * 3600 + v[1] * 60 + v[2]));
  return p;
}

static const char *
rule_date (const char *p, struct rule_date *d)
{
  /* Only the Mm.w.d form: every zone of the tz database uses it. */
  if (*p++ != 'M')
    return NULL;
  int v[3];
  for (int i = 0; i < 3; i++) {
    if (*p < '0' || *p > '9')
      return NULL;
    v[i] = (int) strtol (p, (char **) &p, 10);
    if (i < 2 && *p++ != '.')
      return NULL;
  }
  if (v[0] < 1 || v[0] > 12 || v[1] < 1 || v[1] > 5 || v[2] < 0 || v[2] > 6)
    return NULL;
  d->month = v[0], d->week = v[1], d->wday = v[2];
  d->time = 7200;
  if (*p == '/')
    p = rule_hms (p + 1, &d->time);
  return p;
}

static bool
parse_rule (struct prune_zone *z, const char *s)
{
  const char *p = rule_name (s);
  int32_t off;
  if (!p || !(p = rule_hms (p, &off)))
    return false;
  z->std_off = -off;
  if (*p == '\0') {
    z->has_rule = true;
    return true;
  }
  if (!(p = rule_name (p)))
    return false;
  z->dst_off = z->std_off + 3600;
  if (*p != ',' && *p) {
    if (!(p = rule_hms (p, &off)))
      return false;
    z->dst_off = -off;
  }
  if (*p++ != ',' || !(p = rule_date (p, &z->start)) || *p++ != ',' ||
      !(p = rule_date (p, &z->end)) || *p)
    return false;
  z->has_rule = z->rule_dst = true;
  return true;
}

static int64_t
days_of (int64_t y, int m, int d)
{
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  int64_t yoe = y - era * 400;
  int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  return era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
}

/* The instant in year Y of change D, the wall clock being OFF east. */
static int64_t
rule_instant (int64_t y, const struct rule_date *d, int32_t off)
{
  static const int mdays[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30,
                               31 };
  int64_t first = days_of (y, d->month, 1);
  int wday1 = (int) (((first + 4) % 7 + 7) % 7);     /* 1970-01-01: Thu */
  int day = 1 + (d->wday - wday1 + 7) % 7 + (d->week - 1) * 7;
  int len = mdays[d->month - 1] +
            (d->month == 2 && y % 4 == 0 && (y % 100 != 0 || y % 400 == 0));
  while (day > len)
    day -= 7;
  return (first + day - 1) * 86400 + d->time - off;
}

static int32_t
rule_offset (const struct prune_zone *z, int64_t t)
{
  if (!z->rule_dst)
    return z->std_off;
  int64_t days = (t + z->std_off) / 86400 - ((t + z->std_off) % 86400 < 0);
  /* The year of the local standard date, from a near guess. */
  int64_t y = 1970 + days / 366;
  while (days_of (y + 1, 1, 1) <= days)
    y++;
  while (days_of (y, 1, 1) > days)
    y--;
  int64_t start = rule_instant (y, &z->start, z->std_off);
  int64_t end = rule_instant (y, &z->end, z->dst_off);
  bool dst = start < end ? t >= start && t < end : !(t >= end && t < start);
  return dst ? z->dst_off : z->std_off;
}

/* ---- TZif ------------------------------------------------------------- */

int32_t
prune_zone_offset (const struct prune_zone *z, int64_t t)
{
  if (z->n == 0 || t < z->times[0])
    return z->n == 0 && z->has_rule ? rule_offset (z, t) : z->first;
  if (t >= z->times[z->n - 1] && z->has_rule)
    return rule_offset (z, t);
  size_t lo = 0, hi = z->n;     /* times[lo] <= t < times[hi] */
  while (hi - lo > 1) {
    size_t mid = lo + (hi - lo) / 2;
    if (z->times[mid] <= t)
      lo = mid;
    else
      hi = mid;
  }
  return z->offsets[lo];
}

static bool
valid_name (const char *name)
{
  if (!name[0] || name[0] == '/' || strlen (name) > 200)
    return false;
  for (const char *p = name; *p; p++)
    if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
          (*p >= '0' && *p <= '9') || strchr ("/_+-", *p)))
      return false;
  return !strstr (name, "//") && name[strlen (name) - 1] != '/';
}

static bool
decode (struct prune_zone *z, const unsigned char *b, size_t len)
{
  if (len < 44 || memcmp (b, "TZif", 4) != 0)
    return false;
  bool v2 = b[4] >= '2';
  size_t pos = 0;
  for (int pass = 0; pass < (v2 ? 2 : 1); pass++) {
    if (len - pos < 44 || memcmp (b + pos, "TZif", 4) != 0)
      return false;
    uint32_t isut = be32 (b + pos + 20), isstd = be32 (b + pos + 24),
      leap = be32 (b + pos + 28), timecnt = be32 (b + pos + 32),
      typecnt = be32 (b + pos + 36), charcnt = be32 (b + pos + 40);
    size_t tsize = pass ? 8 : 4;
    if (timecnt > 100000 || typecnt == 0 || typecnt > 256 ||
        charcnt > 100000 || leap > 100000 || isut > 256 || isstd > 256)
      return false;
    size_t data = timecnt * tsize + timecnt + typecnt * 6 + charcnt +
                  leap * (tsize + 4) + isstd + isut;
    pos += 44;
    if (len - pos < data)
      return false;
    if (pass + 1 < (v2 ? 2 : 1)) {
      pos += data;
      continue;
    }
    const unsigned char *tp = b + pos, *ip = tp + timecnt * tsize,
      *ty = ip + timecnt;
    z->times = malloc ((timecnt + 1) * sizeof *z->times);
    z->offsets = malloc ((timecnt + 1) * sizeof *z->offsets);
    if (!z->times || !z->offsets)
      return false;
    for (uint32_t i = 0; i < timecnt; i++) {
      if (ip[i] >= typecnt)
        return false;
      z->times[i] = pass ? be64 (tp + 8 * i) : (int32_t) be32 (tp + 4 * i);
      z->offsets[i] = (int32_t) be32 (ty + 6 * ip[i]);
      if (i && z->times[i] <= z->times[i - 1])
        return false;
    }
    z->n = timecnt;
    z->first = (int32_t) be32 (ty);
    pos += data;
  }
  /* The footer: "\nRULE\n" (version 2 on). */
  if (v2 && pos < len && b[pos] == '\n') {
    const char *s = (const char *) b + pos + 1;
    const char *e = memchr (s, '\n', len - pos - 1);
    if (e && e > s) {
      char rule[256];
      size_t rl = (size_t) (e - s);
      if (rl >= sizeof rule)
        return false;
      memcpy (rule, s, rl);
      rule[rl] = '\0';
      /* A rule this reader does not know leaves the last transition's
       * offset in force: right until the tz database changes it. */
      if (!parse_rule (z, rule))
        z->has_rule = z->rule_dst = false;
    }
  }
  return true;
}

struct prune_zone *
prune_zone_load (const char *name)
{
  struct prune_zone *z = calloc (1, sizeof *z);
  if (!z) {
    set_nomem ();
    return NULL;
  }
  if (strcmp (name, "UTC") == 0)
    return z;
  if (!valid_name (name) || strstr (name, "..")) {
    set_usage_error ("'%s' is not a time zone name (such as Europe/Berlin "
                     "or UTC)", name);
    goto fail;
  }
  const char *dir = getenv ("TZDIR");
  char path[PATH_MAX];
  snprintf (path, sizeof path, "%s/%s",
            dir && dir[0] == '/' ? dir : "/usr/share/zoneinfo", name);
  int fd = open (path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT || errno == ENOTDIR)
      set_usage_error ("'%s' is not a time zone this system knows (no %s)",
                       name, path);
    else
      set_io_error (errno, "%s", path);
    goto fail;
  }
  unsigned char *buf = malloc (ZONE_FILE_MAX);
  size_t len = 0;
  ssize_t got = 0;
  while (buf && len < ZONE_FILE_MAX &&
         (got = read (fd, buf + len, ZONE_FILE_MAX - len)) > 0)
    len += (size_t) got;
  int err = errno;
  close (fd);
  if (!buf) {
    set_nomem ();
    goto fail;
  }
  if (got < 0) {
    free (buf);
    set_io_error (err, "%s", path);
    goto fail;
  }
  bool ok = decode (z, buf, len);
  free (buf);
  if (!ok) {
    set_invalid ("%s: not a time zone file (TZif)", path);
    goto fail;
  }
  return z;
 fail:
  prune_zone_free (z);
  return NULL;
}

void
prune_zone_free (struct prune_zone *z)
{
  if (!z)
    return;
  free (z->times);
  free (z->offsets);
  free (z);
}

void
prune_local_zone_name (char *out)
{
  const char *tz = getenv ("TZ");
  if (tz && tz[0] == ':')
    tz++;
  if (tz && tz[0] && valid_name (tz) && !strstr (tz, "..")) {
    struct prune_zone *z = prune_zone_load (tz);
    if (z) {
      prune_zone_free (z);
      snprintf (out, 256, "%s", tz);
      return;
    }
    error_clear ();
  }
  char link[PATH_MAX];
  ssize_t n = readlink ("/etc/localtime", link, sizeof link - 1);
  if (n > 0) {
    link[n] = '\0';
    const char *p = strstr (link, "zoneinfo/");
    if (p && valid_name (p + 9) && strlen (p + 9) < 256) {
      snprintf (out, 256, "%s", p + 9);
      return;
    }
  }
  /* A copied /etc/localtime has no name; Debian names it here too. */
  FILE *f = fopen ("/etc/timezone", "re");
  if (f) {
    char line[256];
    bool ok = fgets (line, sizeof line, f) != NULL;
    fclose (f);
    line[ok ? strcspn (line, "\n") : 0] = '\0';
    if (ok && valid_name (line)) {
      snprintf (out, 256, "%s", line);
      return;
    }
  }
  strcpy (out, "UTC");
}
