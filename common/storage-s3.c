/* A repository on S3-compatible object storage (see storage.h), at
 * s3://BUCKET/PREFIX: every key K is the object PREFIX/K.
 *
 * put-once is a PUT with "If-None-Match: *", which the service refuses
 * (412) when the object exists, so two writers cannot both create a key;
 * if the PUT had to be retried and is refused, the object is read back
 * and the put counts as done when it holds exactly these bytes (the first
 * attempt succeeded and only its answer was lost).  replace is a plain
 * PUT: S3 replaces an object whole, so a reader sees the old object or
 * the new one.  Objects are durable when the PUT is answered.
 *
 * rename is a copy on the service followed by a delete of the source:
 * it is NOT atomic on S3.  Between the two, and for ever if the process
 * dies between them, a reader finds both keys, TO already holding FROM's
 * object (whole: a copy replaces TO in one step, like a PUT); it never
 * finds neither, nor a mix.  Prune's renames put an object that is
 * equivalent to what TO held in its place, so the leftover FROM is an
 * extra object, not a damaged one.
 *
 * The lock is the object PREFIX/NAME, created with "If-None-Match: *"
 * and holding the holder's text, host name, pid and the pid's start time.
 * The holder rewrites it every 60 s (a conditional PUT on its ETag) while
 * it holds it.  A lock is stale, and is taken over, when
 *
 *   (a) its holder ran on this host (the same host name: hosts sharing a
 *       repository must have names of their own) and that process is
 *       gone (no such pid, or a pid that started at another time); or
 *   (b) it was last rewritten more than 10 minutes ago, both times taken
 *       from the storage service's own clock (the object's Last-Modified
 *       against the Date of the same answer, so clocks of hosts do not
 *       matter), and its holder is not a running process on this host.
 *
 * A take-over is a PUT with "If-Match: ETAG" of the stale lock that was
 * judged, so of two processes taking over the same lock only one wins;
 * the other sees a lock that changed and judges it again.  Unlocking
 * deletes the lock object if it is still the one this process wrote.
 * A holder that cannot rewrite its lock for 10 minutes (the service is
 * unreachable) may lose it to another process; it does not find out
 * until it unlocks, and its unlock then leaves the new holder's lock be.
 * In test builds QBAK_S3_LOCK_STALE_S replaces the 10 minutes, and the
 * rewrite interval becomes a tenth of it (at least a second).
 *
 * Objects have no local path; prepare has nothing to do.  qbak never
 * creates a bucket: a missing bucket is reported; a prefix with no
 * objects in an existing bucket is a new repository.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "common/error.h"
#include "common/s3-client.h"
#include "common/s3-config.h"
#include "common/s3-request.h"
#include "common/storage-s3.h"
#include "common/storage-s3-objects.h"
#include "common/storage.h"

#define MAX_GET (64u << 20)
#define LOCK_STALE_S 600
#define LOCK_MAX_TEXT 4096

struct s3_storage {
  struct storage st;
  struct s3_client *c;
  struct s3_config *cfg;
  char *base;           /* "PREFIX/" or "" */
};

static struct s3_storage *
to_s3 (struct storage *st)
{
  return (struct s3_storage *) st;
}

/* The object name of KEY (malloc'ed), or NULL with the error set. */
static char *
object_key (struct s3_storage *s, const char *key)
{
  char *k;
  if (asprintf (&k, "%s%s", s->base, key) < 0) {
    set_nomem ();
    return NULL;
  }
  return k;
}

static int
s3st_put (struct storage *st, const char *key, const void *buf, size_t len,
          bool once)
{
  struct s3_storage *s = to_s3 (st);
  char *k = object_key (s, key);
  if (!k)
    return -1;
  int r = s3_put (s->c, k, buf, len, once, NULL, NULL);
  if (r < 0 && once && error_get_errno () == EEXIST &&
      s3_client_retried (s->c)) {
    /* A lost answer to a put that succeeded, or someone else's object? */
    void *got;
    size_t got_len;
    if (s3_get (s->c, k, MAX_GET, &got, &got_len) == 0) {
      bool ours = got_len == len && memcmp (got, buf, len) == 0;
      free (got);
      if (ours)
        r = 0;
      else
        set_exists_error ("%s/%s: exists already and is never replaced",
                          st->location, key);
    }
  }
  free (k);
  return r;
}

static int
s3st_put_once (struct storage *st, const char *key, const void *buf,
               size_t len)
{
  return s3st_put (st, key, buf, len, true);
}

static int
s3st_replace (struct storage *st, const char *key, const void *buf,
              size_t len)
{
  return s3st_put (st, key, buf, len, false);
}

static int
s3st_get (struct storage *st, const char *key, void **buf, size_t *len)
{
  struct s3_storage *s = to_s3 (st);
  char *k = object_key (s, key);
  if (!k)
    return -1;
  int r = s3_get (s->c, k, MAX_GET, buf, len);
  if (r < 0 && error_get_errno () == EFBIG)
    set_invalid ("%s/%s: more than %u bytes, too large for a record",
                 st->location, key, MAX_GET);
  free (k);
  return r;
}

static int
s3st_size (struct storage *st, const char *key, uint64_t *size)
{
  struct s3_storage *s = to_s3 (st);
  char *k = object_key (s, key);
  if (!k)
    return -1;
  struct s3_object_info info;
  int r = s3_head (s->c, k, &info);
  if (r == 1)
    *size = info.size;
  free (k);
  return r;
}

struct list_ctx {
  struct s3_storage *s;
  storage_list_cb cb;
  void *opaque;
};

static int
on_object (const char *okey, uint64_t size, void *opaque)
{
  struct list_ctx *l = opaque;
  size_t blen = strlen (l->s->base);
  const char *key = okey + blen;
  if (strncmp (okey, l->s->base, blen) != 0 || !storage_key_valid (key)) {
    set_invalid ("%s/%s: a name qbak never makes; a repository holds only "
                 "objects qbak made", l->s->st.location, key);
    return -1;
  }
  struct storage_entry e = { .key = key, .size = size };
  return l->cb (&e, l->opaque);
}

static int
s3st_list (struct storage *st, const char *prefix, storage_list_cb cb,
           void *opaque)
{
  struct s3_storage *s = to_s3 (st);
  char *k = object_key (s, prefix);
  if (!k)
    return -1;
  struct list_ctx l = { .s = s, .cb = cb, .opaque = opaque };
  /* S3 lists keys in byte order of their UTF-8, which for repository
   * keys ([A-Za-z0-9._-/]) is the byte order storage.h promises. */
  int r = s3_list (s->c, k, on_object, &l);
  free (k);
  return r;
}

static int
s3st_remove (struct storage *st, const char *key)
{
  struct s3_storage *s = to_s3 (st);
  char *k = object_key (s, key);
  if (!k)
    return -1;
  int r = s3_delete (s->c, k);
  free (k);
  return r;
}

static int
s3st_rename (struct storage *st, const char *from, const char *to)
{
  struct s3_storage *s = to_s3 (st);
  char *f = object_key (s, from), *t = object_key (s, to);
  int r = -1;
  if (f && t)
    r = s3_copy (s->c, f, t) < 0 || s3_delete (s->c, f) < 0 ? -1 : 0;
  free (f);
  free (t);
  return r;
}

/* ---- the lock --------------------------------------------------------- */

struct s3_lock {
  struct s3_storage *s;
  struct s3_client *c;          /* the refresher's own */
  char *key;
  char *text;
  size_t text_len;
  char etag[S3_ETAG_MAX];
  pthread_t refresher;
  bool running;
  bool stop;
  bool lost;
  pthread_mutex_t mu;
  pthread_cond_t cv;
};

static long
lock_stale_s (void)
{
  long n = s3_test_knob ("QBAK_S3_LOCK_STALE_S", LOCK_STALE_S);
  return n > 0 ? n : LOCK_STALE_S;
}

/* When PID started (clock ticks after boot, /proc/PID/stat's 22nd
 * field), or 0 if there is no such process. */
static unsigned long long
process_start (long pid)
{
  char path[64], buf[1024];
  snprintf (path, sizeof path, "/proc/%ld/stat", pid);
  FILE *f = fopen (path, "re");
  if (!f)
    return 0;
  size_t n = fread (buf, 1, sizeof buf - 1, f);
  fclose (f);
  buf[n] = '\0';
  char *p = strrchr (buf, ')');
  if (!p)
    return 0;
  /* After ")": state is field 3; the start time is field 22. */
  unsigned long long start = 0;
  int field = 2;
  char *save;
  for (char *tok = strtok_r (p + 1, " ", &save); tok;
       tok = strtok_r (NULL, " ", &save))
    if (++field == 22) {
      start = strtoull (tok, NULL, 10);
      break;
    }
  return start;
}

static void
host_name (char *buf, size_t size)
{
  if (gethostname (buf, size) < 0)
    snprintf (buf, size, "unknown");
  buf[size - 1] = '\0';
}

/* The lock's text: the holder's words on the first line, then what the
 * stale rule reads. */
static char *
lock_text (const char *holder, size_t *len)
{
  char host[256];
  host_name (host, sizeof host);
  char *t;
  long pid = (long) getpid ();
  int n = asprintf (&t, "%s\nhost=%s\npid=%ld\nstart=%llu\n", holder, host,
                    pid, process_start (pid));
  if (n < 0) {
    set_nomem ();
    return NULL;
  }
  *len = (size_t) n;
  return t;
}

static const char *
field (const char *text, const char *name, char *out, size_t size)
{
  size_t nl = strlen (name);
  for (const char *p = text; p && *p; p = strchr (p, '\n') ? strchr (p, '\n')
         + 1 : NULL)
    if (strncmp (p, name, nl) == 0 && p[nl] == '=') {
      size_t n = strcspn (p + nl + 1, "\n");
      if (n >= size)
        n = size - 1;
      memcpy (out, p + nl + 1, n);
      out[n] = '\0';
      return out;
    }
  return NULL;
}

/* Is the holder of TEXT a running process on this host?  Or gone from
 * this host (*GONE)? */
static bool
holder_alive_here (const char *text, bool *gone)
{
  char host[256], lhost[256], spid[32], sstart[32];
  *gone = false;
  host_name (host, sizeof host);
  if (!field (text, "host", lhost, sizeof lhost) || strcmp (host, lhost) != 0
      || !field (text, "pid", spid, sizeof spid))
    return false;
  long pid = strtol (spid, NULL, 10);
  unsigned long long start = process_start (pid);
  bool alive = pid > 0 && start != 0 &&
    (!field (text, "start", sstart, sizeof sstart) ||
     strtoull (sstart, NULL, 10) == start);
  *gone = !alive;
  return alive;
}

static void *
refresh_lock (void *opaque)
{
  struct s3_lock *lk = opaque;
  long interval = lock_stale_s () / 10;
  if (interval < 1)
    interval = 1;
  pthread_mutex_lock (&lk->mu);
  while (!lk->stop && !lk->lost) {
    struct timespec until;
    clock_gettime (CLOCK_REALTIME, &until);
    until.tv_sec += interval;
    while (!lk->stop &&
           pthread_cond_timedwait (&lk->cv, &lk->mu, &until) != ETIMEDOUT)
      ;
    if (lk->stop)
      break;
    char etag[S3_ETAG_MAX];
    snprintf (etag, sizeof etag, "%s", lk->etag);
    pthread_mutex_unlock (&lk->mu);
    char fresh[S3_ETAG_MAX];
    int r = s3_put (lk->c, lk->key, lk->text, lk->text_len, false, etag,
                    fresh);
    bool changed = r < 0 && error_get_errno () == ESTALE;
    pthread_mutex_lock (&lk->mu);
    if (r == 0)
      snprintf (lk->etag, sizeof lk->etag, "%s", fresh);
    else if (changed)
      lk->lost = true;  /* taken over: the holder's unlock leaves it be */
    /* Other failures: tried again at the next interval; ten in a row
     * let another process take the lock over. */
  }
  pthread_mutex_unlock (&lk->mu);
  return NULL;
}

static void
free_lock (struct s3_lock *lk)
{
  if (!lk)
    return;
  s3_client_free (lk->c);
  free (lk->key);
  free (lk->text);
  pthread_mutex_destroy (&lk->mu);
  pthread_cond_destroy (&lk->cv);
  free (lk);
}

static void
set_busy_text (struct storage *st, const char *text)
{
  size_t n = strcspn (text, "\n");
  set_busy (0, "%s: in use by another qbak (%.*s)", st->location,
            (int) (n > 400 ? 400 : n), n ? text : "holder unknown");
}

/* Try once to take the existing lock K: 1 taken (LK->etag set), 0 held
 * by another (busy error set), -1 error, 2 changed meanwhile (try
 * again). */
static int
take_existing (struct s3_storage *s, struct s3_lock *lk)
{
  struct s3_object_info info;
  int h = s3_head (s->c, lk->key, &info);
  if (h <= 0)
    return h < 0 ? -1 : 2;      /* gone: create it again */
  void *buf;
  size_t len;
  if (s3_get (s->c, lk->key, LOCK_MAX_TEXT, &buf, &len) < 0)
    return error_get_errno () == ENOENT ? 2 : -1;
  char *text = buf;
  /* Our own put, whose answer was lost? */
  if (len == lk->text_len && memcmp (text, lk->text, len) == 0) {
    free (text);
    snprintf (lk->etag, sizeof lk->etag, "%s", info.etag);
    return 1;
  }
  bool gone;
  bool alive = holder_alive_here (text, &gone);
  bool old = info.last_modified != (time_t) -1 && info.now != (time_t) -1 &&
    info.now - info.last_modified > lock_stale_s ();
  if (alive || (!gone && !old)) {
    set_busy_text (&s->st, text);
    free (text);
    return 0;
  }
  free (text);
  char fresh[S3_ETAG_MAX];
  if (s3_put (s->c, lk->key, lk->text, lk->text_len, false, info.etag,
              fresh) < 0)
    return error_get_errno () == ESTALE ? 2 : -1;
  snprintf (lk->etag, sizeof lk->etag, "%s", fresh);
  return 1;
}

static struct storage_lock *
s3st_lock (struct storage *st, const char *name, const char *holder)
{
  struct s3_storage *s = to_s3 (st);
  struct s3_lock *lk = calloc (1, sizeof *lk);
  struct storage_lock *out = calloc (1, sizeof *out);
  if (!lk || !out) {
    free (lk);
    free (out);
    set_nomem ();
    return NULL;
  }
  pthread_mutex_init (&lk->mu, NULL);
  pthread_cond_init (&lk->cv, NULL);
  lk->s = s;
  if (!(lk->key = object_key (s, name)) ||
      !(lk->text = lock_text (holder, &lk->text_len)) ||
      !(lk->c = s3_client_new (s->cfg)))
    goto fail;
  int got = 2;
  for (int attempt = 0; attempt < 10 && got == 2; attempt++) {
    if (s3_put (s->c, lk->key, lk->text, lk->text_len, true, NULL,
                lk->etag) == 0)
      got = 1;
    else if (error_get_errno () != EEXIST)
      goto fail;
    else
      got = take_existing (s, lk);
    if (got < 0 || got == 0)
      goto fail;
  }
  if (got != 1) {
    set_busy (0, "%s: the lock keeps changing hands", st->location);
    goto fail;
  }
  int e = pthread_create (&lk->refresher, NULL, refresh_lock, lk);
  if (e != 0) {
    s3_delete (s->c, lk->key);
    set_io_error (e, "%s: starting the lock's refresher", st->location);
    goto fail;
  }
  lk->running = true;
  out->st = st;
  out->impl = lk;
  return out;
 fail:
  free_lock (lk);
  free (out);
  return NULL;
}

static void
s3st_unlock (struct storage_lock *l)
{
  struct s3_lock *lk = l->impl;
  pthread_mutex_lock (&lk->mu);
  lk->stop = true;
  pthread_cond_signal (&lk->cv);
  pthread_mutex_unlock (&lk->mu);
  if (lk->running)
    pthread_join (lk->refresher, NULL);
  /* Deleted only if it is still ours: a lock taken over after this
   * process stalled is the new holder's.  Errors are not reported (an
   * unlock cannot fail); a lock left behind is stale once this process
   * is gone. */
  struct s3_object_info info;
  struct qbak_saved_error saved;
  qbak_error_save (&saved);
  if (!lk->lost && s3_head (lk->s->c, lk->key, &info) == 1 &&
      strcmp (info.etag, lk->etag) == 0)
    s3_delete (lk->s->c, lk->key);
  qbak_error_put_back (&saved, NULL);
  free_lock (lk);
  free (l);
}

/* The lock object's text is the same at every refresh, and so is its
 * ETag (the digest of a single-part object): a different ETag is another
 * holder's text. */
static int
s3st_lock_held (struct storage_lock *l)
{
  struct s3_lock *lk = l->impl;
  pthread_mutex_lock (&lk->mu);
  bool lost = lk->lost;
  char etag[S3_ETAG_MAX];
  snprintf (etag, sizeof etag, "%s", lk->etag);
  pthread_mutex_unlock (&lk->mu);
  struct s3_object_info info;
  int h = lost ? 0 : s3_head (lk->s->c, lk->key, &info);
  if (h < 0)
    return -1;
  if (h == 1 && strcmp (info.etag, etag) == 0)
    return 0;
  void *buf = NULL;
  size_t len = 0;
  if (h == 1 && s3_get (lk->s->c, lk->key, LOCK_MAX_TEXT, &buf, &len) == 0) {
    size_t n = strcspn (buf, "\n");
    set_busy (0, "%s: this qbak lost the repository's lock while it "
              "stalled (now held by %.*s); nothing more is written",
              l->st->location, (int) (n > 400 ? 400 : n), (char *) buf);
  }
  else
    set_busy (0, "%s: this qbak lost the repository's lock while it "
              "stalled; nothing more is written", l->st->location);
  free (buf);
  return -1;
}

static int
s3st_prepare (struct storage *st, const char *key)
{
  (void) st;
  (void) key;
  return 0;
}

static char *
s3st_local_path (struct storage *st, const char *key)
{
  set_usage_error ("%s/%s: an object on S3 has no local path", st->location,
                   key);
  return NULL;
}

static void
s3st_close (struct storage *st)
{
  struct s3_storage *s = to_s3 (st);
  s3_client_free (s->c);
  s3_config_free (s->cfg);
  free (s->base);
  free (st->location);
  free (s);
}

static const struct storage_ops s3_ops;

bool
storage_is_s3 (const struct storage *st)
{
  return st->ops == &s3_ops;
}

const struct s3_config *
storage_s3_config (struct storage *st)
{
  return to_s3 (st)->cfg;
}

struct s3_client *
storage_s3_client (struct storage *st)
{
  return to_s3 (st)->c;
}

char *
storage_s3_object_key (struct storage *st, const char *key)
{
  if (storage_check_key (st->location, key) < 0)
    return NULL;
  return object_key (to_s3 (st), key);
}

static const struct storage_ops s3_ops = {
  .name = "s3",
  .put_once = s3st_put_once,
  .replace = s3st_replace,
  .get = s3st_get,
  .size = s3st_size,
  .list = s3st_list,
  .remove = s3st_remove,
  .rename = s3st_rename,
  .lock = s3st_lock,
  .unlock = s3st_unlock,
  .lock_held = s3st_lock_held,
  .prepare = s3st_prepare,
  .local_path = s3st_local_path,
  .close = s3st_close,
  .objects = &s3_object_ops,
};

static int
any_object (const char *key, uint64_t size, void *opaque)
{
  (void) key;
  (void) size;
  *(bool *) opaque = true;
  return 1;
}

struct storage *
storage_open_s3 (const char *url, bool create, bool *created)
{
  if (created)
    *created = false;
  struct s3_storage *s = calloc (1, sizeof *s);
  if (!s) {
    set_nomem ();
    return NULL;
  }
  s->st.ops = &s3_ops;
  if (!(s->cfg = s3_config_load (url)))
    goto fail;
  int n = s->cfg->prefix[0]
    ? asprintf (&s->st.location, "s3://%s/%s", s->cfg->bucket,
                s->cfg->prefix)
    : asprintf (&s->st.location, "s3://%s", s->cfg->bucket);
  if (n < 0 || asprintf (&s->base, "%s%s", s->cfg->prefix,
                         s->cfg->prefix[0] ? "/" : "") < 0) {
    set_nomem ();
    goto fail;
  }
  if (!(s->c = s3_client_new (s->cfg)))
    goto fail;
  if (s3_check_bucket (s->c) < 0) {
    if (error_get_errno () == ENOENT)
      qbak_internal_error_suffix ("; qbak does not create buckets: create "
                                  "it first");
    goto fail;
  }
  bool found = false;
  int r = s3_list (s->c, s->base, any_object, &found);
  if (r < 0)
    goto fail;
  if (!found && !create) {
    qbak_internal_error_errno_only (STATUS_USAGE, ENOENT,
                                    "%s: no such repository", url);
    goto fail;
  }
  if (!found && created)
    *created = true;
  return &s->st;
 fail:
  if (s->st.location || s->cfg)
    s3st_close (&s->st);
  else
    free (s);
  return NULL;
}
