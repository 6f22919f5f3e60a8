/* Reading a repository's points: qbak_repo_open and its getters. */
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "lib/api.h"
#include "lib/repo.h"
#include "lib/repo-state.h"
#include "qbak.h"

struct qbak_repo {
  struct repo *r;
};

struct qbak_repo *
qbak_repo_open (const char *location)
{
  api_enter (__func__);
  error_clear ();
  struct qbak_repo *h = calloc (1, sizeof *h);
  if (!h) {
    set_nomem ();
    return NULL;
  }
  /* Reading takes no lock: records are immutable and a point exists
   * once its record does, so a concurrent backup only adds points. */
  h->r = repo_open (location, false, NULL);
  if (!h->r || repo_load_points (h->r) < 0) {
    qbak_repo_close (h);
    return NULL;
  }
  return h;
}

void
qbak_repo_close (struct qbak_repo *h)
{
  if (!h)
    return;
  repo_close (h->r);
  free (h);
}

size_t
qbak_repo_point_count (struct qbak_repo *h)
{
  return h->r->n_points;
}

int
qbak_repo_get_point (struct qbak_repo *h, size_t i,
                     struct qbak_point_info *info)
{
  api_enter (__func__);
  struct qbak_point_info all;
  size_t size = info->size;
  if (api_check_size (size, sizeof all, "qbak_point_info") < 0)
    return -1;
  if (i >= h->r->n_points) {
    set_usage_error ("%s: no point %zu (%zu points)",
                     h->r->st->location, i, h->r->n_points);
    return -1;
  }
  const struct repo_point *p = &h->r->points[i];
  all = (struct qbak_point_info) {
    .size = size, .id = p->id, .time = p->time, .unix_time = p->unix_time,
    .qbak_version = p->qbak_version, .n_disks = p->n_disks,
  };
  memcpy (info, &all, size);
  return 0;
}

int
qbak_repo_get_point_disk (struct qbak_repo *h, size_t point, size_t disk,
                          struct qbak_point_disk_info *info)
{
  api_enter (__func__);
  struct qbak_point_disk_info all;
  size_t size = info->size;
  if (api_check_size (size, sizeof all, "qbak_point_disk_info") < 0)
    return -1;
  if (point >= h->r->n_points || disk >= h->r->points[point].n_disks) {
    set_usage_error ("%s: no disk %zu of point %zu", h->r->st->location,
                     disk, point);
    return -1;
  }
  const struct repo_disk_record *d = &h->r->points[point].disks[disk];
  all = (struct qbak_point_disk_info) {
    .size = size, .name = d->name,
    .level = d->level == REPO_LEVEL_FULL ? QBAK_LEVEL_FULL
                                         : QBAK_LEVEL_INCREMENTAL,
    .reason = d->reason, .file = d->file, .parent = d->parent,
    .format = d->format, .virtual_size = d->virtual_size,
    .cluster_size = d->cluster_size, .bytes_copied = d->bytes_copied,
    .seconds = d->seconds,
  };
  memcpy (info, &all, size);
  return 0;
}

int
qbak_repo_get_point_verify_at (struct qbak_repo *h, size_t i,
                               struct qbak_point_verify_info *info)
{
  api_enter (__func__);
  return repo_point_verify_info (h->r, i, info);
}
