/* Parallel multipart uploads (s3-upload.h). */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/s3-client.h"
#include "common/s3-upload.h"

#define MAX_PARALLEL 16

struct pending {
  unsigned number;
  void *buf;
  size_t len;
};

struct done_part {
  struct s3_part part;
  size_t len;
};

struct s3_upload {
  struct s3_client *c;          /* the caller's thread's */
  char *key;
  char *upload_id;
  unsigned parallel;
  pthread_t workers[MAX_PARALLEL];
  unsigned started;

  pthread_mutex_t mu;
  pthread_cond_t work;          /* a part is queued, or stop */
  pthread_cond_t room;          /* a part finished */
  struct pending *queue;        /* PARALLEL slots */
  unsigned queued;
  unsigned held;                /* queued or being sent */
  bool stop;
  bool drop;                    /* abandoning: queued parts are not sent */
  struct done_part *done;
  size_t ndone, cap;
  unsigned char *given;         /* which numbers were handed over */
  /* The first failure, kept for the caller's thread. */
  bool failed;
  char *err_msg;
  enum status err_status;
  int err_errno;
};

static void
record_failure (struct s3_upload *u)
{
  if (u->failed)
    return;
  u->failed = true;
  u->err_msg = strdup (error_get_message ());
  u->err_status = error_get_status ();
  u->err_errno = error_get_errno ();
}

/* Make the recorded failure the caller's current error. */
static void
report_failure (struct s3_upload *u)
{
  qbak_internal_error_errno_only (u->err_status, u->err_errno, "%s",
                                  u->err_msg ? u->err_msg
                                  : "uploading failed");
}

static void *
worker (void *opaque)
{
  struct s3_upload *u = opaque;
  struct s3_client *c = s3_client_new (s3_client_config (u->c));
  pthread_mutex_lock (&u->mu);
  if (!c)
    record_failure (u);
  for (;;) {
    while (!u->stop && u->queued == 0)
      pthread_cond_wait (&u->work, &u->mu);
    if (u->queued == 0)
      break;
    struct pending p = u->queue[--u->queued];
    bool skip = u->failed || u->drop;
    pthread_mutex_unlock (&u->mu);
    struct done_part d = { .part.number = p.number, .len = p.len };
    int r = skip ? -1 : s3_mpu_upload_part (c, u->key, u->upload_id,
                                            p.number, p.buf, p.len,
                                            d.part.etag);
    free (p.buf);
    pthread_mutex_lock (&u->mu);
    if (r < 0 && !skip)
      record_failure (u);
    else if (r == 0) {
      if (u->ndone == u->cap) {
        size_t cap = u->cap ? u->cap * 2 : 64;
        struct done_part *v = realloc (u->done, cap * sizeof *v);
        if (!v) {
          set_nomem ();
          record_failure (u);
        }
        else {
          u->done = v;
          u->cap = cap;
        }
      }
      if (u->ndone < u->cap)
        u->done[u->ndone++] = d;
    }
    u->held--;
    pthread_cond_broadcast (&u->room);
  }
  pthread_mutex_unlock (&u->mu);
  s3_client_free (c);
  return NULL;
}

static void
stop_workers (struct s3_upload *u)
{
  pthread_mutex_lock (&u->mu);
  u->stop = true;
  pthread_cond_broadcast (&u->work);
  pthread_mutex_unlock (&u->mu);
  for (unsigned i = 0; i < u->started; i++)
    pthread_join (u->workers[i], NULL);
  u->started = 0;
}

static void
free_upload (struct s3_upload *u)
{
  for (unsigned i = 0; i < u->queued; i++)
    free (u->queue[i].buf);
  s3_client_free (u->c);
  free (u->key);
  free (u->upload_id);
  free (u->queue);
  free (u->done);
  free (u->given);
  free (u->err_msg);
  pthread_mutex_destroy (&u->mu);
  pthread_cond_destroy (&u->work);
  pthread_cond_destroy (&u->room);
  free (u);
}

/* Stop, abandon the upload, free: the current error is kept. */
static void
abandon (struct s3_upload *u)
{
  pthread_mutex_lock (&u->mu);
  u->drop = true;
  pthread_mutex_unlock (&u->mu);
  stop_workers (u);
  if (u->upload_id) {
    struct qbak_saved_error saved;
    qbak_error_save (&saved);
    s3_mpu_abort (u->c, u->key, u->upload_id);
    qbak_error_put_back (&saved, NULL);
  }
  free_upload (u);
}

struct s3_upload *
s3_upload_start (const struct s3_config *cfg, const char *key,
                 unsigned parallel)
{
  if (parallel < 1 || parallel > MAX_PARALLEL) {
    set_usage_error ("s3://%s/%s: %u parts in flight (1 to %d)",
                     cfg->bucket, key, parallel, MAX_PARALLEL);
    return NULL;
  }
  struct s3_upload *u = calloc (1, sizeof *u);
  if (!u) {
    set_nomem ();
    return NULL;
  }
  pthread_mutex_init (&u->mu, NULL);
  pthread_cond_init (&u->work, NULL);
  pthread_cond_init (&u->room, NULL);
  u->parallel = parallel;
  if (!(u->key = strdup (key)) ||
      !(u->queue = calloc (parallel, sizeof *u->queue)) ||
      !(u->given = calloc (S3_MAX_PARTS + 1, 1))) {
    set_nomem ();
    free_upload (u);
    return NULL;
  }
  if (!(u->c = s3_client_new (cfg)) ||
      s3_mpu_create (u->c, key, &u->upload_id) < 0) {
    free_upload (u);
    return NULL;
  }
  for (unsigned i = 0; i < parallel; i++) {
    int e = pthread_create (&u->workers[i], NULL, worker, u);
    if (e != 0) {
      set_io_error (e, "s3://%s/%s: starting an upload thread", cfg->bucket,
                    key);
      abandon (u);
      return NULL;
    }
    u->started++;
  }
  return u;
}

int
s3_upload_part (struct s3_upload *u, unsigned number, const void *buf,
                size_t len)
{
  const struct s3_config *cfg = s3_client_config (u->c);
  if (number < 1 || number > S3_MAX_PARTS || u->given[number]) {
    set_usage_error ("s3://%s/%s: part %u is out of range or was given "
                     "already", cfg->bucket, u->key, number);
    return -1;
  }
  void *copy = malloc (len ? len : 1);
  if (!copy) {
    set_nomem ();
    return -1;
  }
  memcpy (copy, buf, len);
  pthread_mutex_lock (&u->mu);
  while (!u->failed && u->held >= u->parallel)
    pthread_cond_wait (&u->room, &u->mu);
  if (u->failed) {
    report_failure (u);
    pthread_mutex_unlock (&u->mu);
    free (copy);
    return -1;
  }
  u->given[number] = 1;
  u->queue[u->queued++] = (struct pending) { .number = number, .buf = copy,
                                             .len = len };
  u->held++;
  pthread_cond_signal (&u->work);
  pthread_mutex_unlock (&u->mu);
  return 0;
}

static int
by_number (const void *a, const void *b)
{
  unsigned x = ((const struct done_part *) a)->part.number;
  unsigned y = ((const struct done_part *) b)->part.number;
  return (x > y) - (x < y);
}

int
s3_upload_finish (struct s3_upload *u)
{
  stop_workers (u);
  const struct s3_config *cfg = s3_client_config (u->c);
  if (u->failed) {
    report_failure (u);
    abandon (u);
    return -1;
  }
  qsort (u->done, u->ndone, sizeof *u->done, by_number);
  if (u->ndone == 0) {
    set_usage_error ("s3://%s/%s: an upload of no parts", cfg->bucket,
                     u->key);
    abandon (u);
    return -1;
  }
  for (size_t i = 0; i < u->ndone; i++) {
    if (u->done[i].part.number != i + 1) {
      set_usage_error ("s3://%s/%s: part %zu is missing", cfg->bucket,
                       u->key, i + 1);
      abandon (u);
      return -1;
    }
    if (i + 1 < u->ndone && u->done[i].len < S3_MIN_PART) {
      set_usage_error ("s3://%s/%s: part %u holds %zu bytes; every part "
                       "but the last needs %zu", cfg->bucket, u->key,
                       u->done[i].part.number, u->done[i].len, S3_MIN_PART);
      abandon (u);
      return -1;
    }
  }
  struct s3_part *parts = malloc (u->ndone * sizeof *parts);
  if (!parts) {
    set_nomem ();
    abandon (u);
    return -1;
  }
  for (size_t i = 0; i < u->ndone; i++)
    parts[i] = u->done[i].part;
  int r = s3_mpu_complete (u->c, u->key, u->upload_id, parts, u->ndone);
  free (parts);
  if (r < 0 && error_get_errno () == ENOENT && s3_client_retried (u->c)) {
    /* The completion's answer was lost and its retry found the upload
     * gone: done, if the object is there with every part's bytes. */
    uint64_t total = 0;
    for (size_t i = 0; i < u->ndone; i++)
      total += u->done[i].len;
    struct s3_object_info info;
    struct qbak_saved_error saved;
    qbak_error_save (&saved);
    bool there = s3_head (u->c, u->key, &info) == 1 && info.size == total;
    qbak_error_put_back (&saved, NULL);
    if (there)
      r = 0;
  }
  if (r < 0) {
    abandon (u);
    return -1;
  }
  free_upload (u);
  return 0;
}

void
s3_upload_cancel (struct s3_upload *u)
{
  if (u)
    abandon (u);
}
