/* Which point --at names (restore, verify): an id, a time or "latest". */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/error.h"
#include "lib/repo.h"

/* "YYYY-MM-DD[(T| )HH:MM[:SS]][Z|(+|-)HH:MM]" into seconds since the
 * epoch; without a zone, local time (as an admin reads a clock).  0 or
 * -1. */
static int
parse_time (const char *s, int64_t *out)
{
  struct tm tm = { 0 };
  int n = 0, hh = 0, mm = 0, ss = 0;
  if (sscanf (s, "%4d-%2d-%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
              &n) != 3)
    return -1;
  const char *p = s + n;
  if (*p == 'T' || *p == ' ') {
    int m = 0;
    if (sscanf (p + 1, "%2d:%2d%n", &hh, &mm, &m) != 2)
      return -1;
    p += 1 + m;
    if (*p == ':') {
      if (sscanf (p + 1, "%2d%n", &ss, &m) != 1)
        return -1;
      p += 1 + m;
    }
  }
  if (tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 ||
      tm.tm_mday > 31 || hh > 23 || mm > 59 || ss > 60)
    return -1;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  tm.tm_hour = hh;
  tm.tm_min = mm;
  tm.tm_sec = ss;
  int64_t t;
  if (*p == '\0') {
    tm.tm_isdst = -1;
    t = (int64_t) mktime (&tm);
  }
  else {
    t = (int64_t) timegm (&tm);
    if (*p == 'Z' && p[1] == '\0')
      ;
    else if ((*p == '+' || *p == '-') && strlen (p) == 6 && p[3] == ':') {
      int zh, zm;
      if (sscanf (p + 1, "%2d:%2d", &zh, &zm) != 2 || zh > 23 || zm > 59)
        return -1;
      int64_t off = (int64_t) zh * 3600 + zm * 60;
      t += *p == '+' ? -off : off;
    }
    else
      return -1;
  }
  *out = t;
  return 0;
}

/* The point AT names (id, time: the newest at or before it, "latest" or
 * NULL: the newest), among those holding DISK if given. */
const struct repo_point *
repo_choose_point (const struct repo *r, const char *at, const char *disk)
{
  const char *where = r->st->location;
  if (r->n_points == 0) {
    set_invalid ("%s: the repository holds no point", where);
    return NULL;
  }
  if (at && strcmp (at, "latest") != 0 && repo_point_id_valid (at)) {
    const struct repo_point *p = repo_find_point (r, at);
    if (!p)
      set_usage_error ("%s: no point %s", where, at);
    else if (disk && !repo_point_disk (p, disk)) {
      set_usage_error ("%s: point %s holds no disk '%s'", where, at, disk);
      p = NULL;
    }
    return p;
  }
  int64_t limit = INT64_MAX;
  if (at && strcmp (at, "latest") != 0 && parse_time (at, &limit) < 0) {
    set_usage_error ("%s: '%s' is neither a point id, a time "
                     "(YYYY-MM-DD[THH:MM[:SS]][Z]) nor 'latest'", where, at);
    return NULL;
  }
  for (size_t i = r->n_points; i-- > 0;) {
    const struct repo_point *p = &r->points[i];
    if (p->unix_time <= limit && (!disk || repo_point_disk (p, disk)))
      return p;
  }
  if (disk)
    set_usage_error ("%s: no point of disk '%s'%s%s", where, disk,
                     at ? " at or before " : "", at ? at : "");
  else
    set_usage_error ("%s: no point at or before %s", where, at);
  return NULL;
}
