/* lib/ internal: which points a retention policy keeps (restic's rules).
 *
 * Points are given oldest first with their time and whether they are
 * protected; the engine walks them newest first, as restic's `forget`
 * does, and ORs the rules:
 *
 *   last N      the N newest points;
 *   hourly N .. yearly N
 *               the newest point of each of the N newest periods (hour,
 *               day, ISO week from Monday with its ISO week-year, month,
 *               year) that hold a point; a period without a point does
 *               not count;
 *   within D    every point newer than the newest point minus D
 *               ("1y2m3d4h": years, months and days on the calendar of the
 *               newest point's local date, hours as elapsed time); the
 *               newest point not after now, as restic takes it, so that
 *               one point dated in the future by a wrong clock does not
 *               make every other point old (without any such point, all
 *               points are within);
 *   protected   always kept.
 *
 * Protected points are kept whatever the rules say and still take part
 * in them: a protected point that is the newest of its day uses up one of
 * keep-daily's days, as a snapshot kept by restic's --keep-tag does (its
 * tag rules are checked first, the buckets are then updated for every
 * snapshot).  Protecting a point thus never makes another point kept or
 * removed, only itself kept.
 *
 * These are the rules of restic 0.14 (Debian 12's, the oracle of
 * tests/cli/prune-policy.bats).  Later restic releases add two things
 * this engine does not: a count of -1 ("keep all" of a period), and
 * keeping the oldest snapshot while a rule has counts left.
 *
 * Periods are the local calendar of a time zone (struct prune_zone), read
 * from the zone's TZif file: the process's TZ is never changed, since the
 * library may run on threads beside code that reads it (setenv races with
 * every getenv and localtime of other threads, whatever lock we take). */
#ifndef QBAK_LIB_PRUNE_POLICY_H
#define QBAK_LIB_PRUNE_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Why a point is kept (bits; 0: removed). */
enum prune_reason {
  PRUNE_KEEP_LAST = 1u << 0,
  PRUNE_KEEP_HOURLY = 1u << 1,
  PRUNE_KEEP_DAILY = 1u << 2,
  PRUNE_KEEP_WEEKLY = 1u << 3,
  PRUNE_KEEP_MONTHLY = 1u << 4,
  PRUNE_KEEP_YEARLY = 1u << 5,
  PRUNE_KEEP_WITHIN = 1u << 6,
  PRUNE_KEEP_PROTECTED = 1u << 7,
};

struct prune_duration {
  int years, months, days, hours;
};

struct prune_policy {
  unsigned last, hourly, daily, weekly, monthly, yearly;
  bool has_within;
  struct prune_duration within;
};

struct prune_point {
  int64_t unix_time;
  bool protected;
};

/* A time zone: UTC offsets over time. */
struct prune_zone;

/* Load the zone NAME ("Europe/Berlin", "UTC") from the system's zoneinfo
 * ($TZDIR, else /usr/share/zoneinfo).  NULL with STATUS_USAGE if NAME is
 * not a zone name, STATUS_INVALID if its file is not a TZif file. */
struct prune_zone *prune_zone_load (const char *name);
void prune_zone_free (struct prune_zone *z);
/* Seconds east of UTC in zone Z at UNIX_TIME. */
int32_t prune_zone_offset (const struct prune_zone *z, int64_t unix_time);
/* The name this process's local zone has: $TZ if it names a zone file
 * (a leading ':' dropped; a POSIX rule such as "CET-1CEST" names none),
 * else what /etc/localtime links to under zoneinfo/, else the name in
 * /etc/timezone, else "UTC".  OUT holds at least 256 bytes. */
void prune_local_zone_name (char *out);

/* Parse "1y2m3d4h" (each part optional, in that order, at least one).
 * -1 with STATUS_USAGE if it is not one. */
int prune_duration_parse (const char *s, struct prune_duration *d);
/* Back to text, restic's way ("1y2m"; "0h" for nothing).  OUT: 64 bytes. */
void prune_duration_format (const struct prune_duration *d, char *out);

/* Whether P has no rule at all (refused: it would keep everything, or
 * nothing, by accident). */
bool prune_policy_empty (const struct prune_policy *p);

/* Decide for each of the N points (oldest first, as a repository lists
 * them) why it is kept, NOW being the time of the decision: REASONS[i]
 * gets the enum prune_reason bits of point i, 0 if it is removed.  Points
 * with equal times are taken as listed (the later one newer).  -1 with
 * STATUS_USAGE for an empty policy. */
int prune_policy_apply (const struct prune_policy *p,
                        const struct prune_zone *z,
                        const struct prune_point *points, size_t n,
                        int64_t now, unsigned *reasons);

#endif
