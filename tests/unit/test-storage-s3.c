/* The repository storage on S3 (common/storage-s3.c, common/s3-*.c),
 * against the Ceph RADOS Gateway the s3 test fixture starts
 * (tests/s3/rgw.sh; its endpoint and keys are read from
 * $QBAK_RGW_DIR/env).  The same contract as test-storage-folder.c:
 * put-once never replaces, replace is whole, listings are in byte order
 * (past S3's 1000-key pages), rename, delete, the lock excludes a second
 * holder and is taken over by its stale rule; plus what only S3 has:
 * credentials refused with a clear message that never shows the secret,
 * a missing bucket, and multipart uploads (part 1 given last, read back
 * with ranged GETs; an abandoned upload leaves nothing), and faults
 * (tests/s3/fault-proxy.py between client and gateway: 503s retried,
 * answers lost after the work was done recognised, cut connections an
 * I/O error).  Each run uses a bucket of its own, each test a prefix of
 * its own. */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/error.h"
#include "common/s3-client.h"
#include "common/s3-config.h"
#include "common/s3-upload.h"
#include "common/storage.h"
#include "helpers.h"
#include "s3-fixture.h"

static char bucket[64];
static unsigned test_number;

struct fixture {
  char url[256];        /* s3://BUCKET/tN */
  char prefix[32];      /* tN */
  struct storage *st;
};


static int
group_setup (void **state)
{
  (void) state;
  gateway_bucket (bucket, sizeof bucket, "unit");
  return 0;
}

static int
setup (void **state)
{
  struct fixture *fx = calloc (1, sizeof *fx);
  assert_non_null (fx);
  snprintf (fx->prefix, sizeof fx->prefix, "t%u", ++test_number);
  snprintf (fx->url, sizeof fx->url, "s3://%s/%s", bucket, fx->prefix);
  bool created = false;
  fx->st = storage_open (fx->url, true, &created);
  if (!fx->st)
    fail_msg ("%s: %s", fx->url, error_get_message ());
  assert_true (created);
  assert_string_equal (fx->st->ops->name, "s3");
  *state = fx;
  return 0;
}

static int
teardown (void **state)
{
  struct fixture *fx = *state;
  storage_close (fx->st);
  free (fx);
  return 0;
}

static int
collect (const struct storage_entry *e, void *opaque)
{
  char *out = opaque;
  char line[1200];
  snprintf (line, sizeof line, "%s:%llu;", e->key,
            (unsigned long long) e->size);
  strcat (out, line);
  return 0;
}

static void
test_open (void **state)
{
  struct fixture *fx = *state;
  /* A prefix with no object is no repository unless created. */
  char url[300];
  snprintf (url, sizeof url, "s3://%s/none", bucket);
  assert_null (storage_open (url, false, NULL));
  assert_int_equal (error_get_status (), STATUS_USAGE);
  assert_non_null (strstr (error_get_message (), "no such repository"));
  /* Once it holds an object it exists, and is not "created" again. */
  assert_int_equal (storage_put_once (fx->st, "config", "{}", 2), 0);
  bool created = true;
  struct storage *again = storage_open (fx->url, true, &created);
  assert_non_null (again);
  assert_false (created);
  assert_string_equal (again->location, fx->url);
  storage_close (again);
  /* A missing bucket is named, and never made. */
  assert_null (storage_open ("s3://qbak-no-such-bucket/r", true, &created));
  assert_int_equal (error_get_status (), STATUS_USAGE);
  const char *m = error_get_message ();
  assert_non_null (strstr (m, "qbak-no-such-bucket"));
  assert_non_null (strstr (m, "NoSuchBucket"));
  assert_non_null (strstr (m, "does not create buckets"));
  /* Objects have no path. */
  assert_null (storage_local_path (fx->st, "config"));
  assert_int_equal (error_get_status (), STATUS_USAGE);
  assert_int_equal (storage_prepare (fx->st, "disks/vda/1.qcow2"), 0);
}

static void
test_wrong_secret (void **state)
{
  (void) state;
  char *secret = strdup (getenv ("AWS_SECRET_ACCESS_KEY"));
  assert_non_null (secret);
  const char *wrong = "wrongsecretwrongsecretwrongsecret0123456";
  setenv ("AWS_SECRET_ACCESS_KEY", wrong, 1);
  char url[300];
  snprintf (url, sizeof url, "s3://%s/t1", bucket);
  struct storage *st = storage_open (url, true, NULL);
  setenv ("AWS_SECRET_ACCESS_KEY", secret, 1);
  assert_null (st);
  assert_int_equal (error_get_status (), STATUS_USAGE);
  assert_int_equal (error_get_errno (), EACCES);
  const char *m = error_get_message ();
  assert_non_null (strstr (m, "403"));
  assert_non_null (strstr (m, "SignatureDoesNotMatch"));
  assert_non_null (strstr (m, bucket));
  assert_null (strstr (m, wrong));
  assert_null (strstr (m, secret));
  free (secret);
  /* No credentials at all: said where they were looked for. */
  char *key = strdup (getenv ("AWS_ACCESS_KEY_ID"));
  unsetenv ("AWS_ACCESS_KEY_ID");
  setenv ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials", 1);
  setenv ("AWS_CONFIG_FILE", "/nonexistent/config", 1);
  st = storage_open (url, true, NULL);
  setenv ("AWS_ACCESS_KEY_ID", key, 1);
  unsetenv ("AWS_SHARED_CREDENTIALS_FILE");
  unsetenv ("AWS_CONFIG_FILE");
  free (key);
  assert_null (st);
  assert_int_equal (error_get_status (), STATUS_USAGE);
  assert_non_null (strstr (error_get_message (), "no S3 credentials"));
}

static void
test_put_once_get (void **state)
{
  struct fixture *fx = *state;
  const char rec[] = "{\"id\": 1}";
  assert_int_equal (storage_put_once (fx->st, "points/a.json", rec,
                                      sizeof rec - 1), 0);
  void *buf;
  size_t len;
  assert_int_equal (storage_get (fx->st, "points/a.json", &buf, &len), 0);
  assert_int_equal (len, sizeof rec - 1);
  assert_memory_equal (buf, rec, len);
  assert_int_equal (((char *) buf)[len], '\0');
  free (buf);

  /* Never replaced. */
  assert_int_equal (storage_put_once (fx->st, "points/a.json", "x", 1), -1);
  assert_int_equal (error_get_errno (), EEXIST);
  assert_int_equal (error_get_status (), STATUS_USAGE);
  assert_int_equal (storage_get (fx->st, "points/a.json", &buf, &len), 0);
  assert_memory_equal (buf, rec, sizeof rec - 1);
  free (buf);

  /* Missing: ENOENT recorded; size says 0. */
  assert_int_equal (storage_get (fx->st, "points/b.json", &buf, &len), -1);
  assert_int_equal (error_get_errno (), ENOENT);
  assert_int_equal (error_get_status (), STATUS_INVALID);
  assert_non_null (strstr (error_get_message (), "points/b.json"));
  uint64_t size = 99;
  assert_int_equal (storage_size (fx->st, "points/b.json", &size), 0);
  assert_int_equal (storage_size (fx->st, "points/a.json", &size), 1);
  assert_int_equal (size, sizeof rec - 1);

  /* An empty object is an object. */
  assert_int_equal (storage_put_once (fx->st, "empty", "", 0), 0);
  assert_int_equal (storage_size (fx->st, "empty", &size), 1);
  assert_int_equal (size, 0);
  assert_int_equal (storage_get (fx->st, "empty", &buf, &len), 0);
  assert_int_equal (len, 0);
  free (buf);

  /* Bad keys never reach the service. */
  assert_int_equal (storage_put_once (fx->st, "../x", "x", 1), -1);
  assert_int_equal (error_get_status (), STATUS_USAGE);
}

static void
test_replace_delete_rename (void **state)
{
  struct fixture *fx = *state;
  void *buf;
  size_t len;
  assert_int_equal (storage_replace (fx->st, "state/a.json", "one", 3), 0);
  assert_int_equal (storage_replace (fx->st, "state/a.json", "second", 6), 0);
  assert_int_equal (storage_get (fx->st, "state/a.json", &buf, &len), 0);
  assert_int_equal (len, 6);
  assert_string_equal (buf, "second");
  free (buf);

  /* Rename replaces the target, and the source is gone. */
  assert_int_equal (storage_put_once (fx->st, "m/new", "merged", 6), 0);
  assert_int_equal (storage_put_once (fx->st, "m/old", "o", 1), 0);
  assert_int_equal (storage_rename (fx->st, "m/new", "m/old"), 0);
  char out[1024] = "";
  assert_int_equal (storage_list (fx->st, "m/", collect, out), 0);
  assert_string_equal (out, "m/old:6;");
  assert_int_equal (storage_get (fx->st, "m/old", &buf, &len), 0);
  assert_string_equal (buf, "merged");
  free (buf);
  assert_int_equal (storage_rename (fx->st, "m/none", "m/x"), -1);
  assert_int_equal (error_get_errno (), ENOENT);

  /* Delete: gone; deleting again (or a key never made) is no error. */
  assert_int_equal (storage_delete (fx->st, "m/old"), 0);
  uint64_t size;
  assert_int_equal (storage_size (fx->st, "m/old", &size), 0);
  assert_int_equal (storage_delete (fx->st, "m/old"), 0);
}

static void
test_list (void **state)
{
  struct fixture *fx = *state;
  assert_int_equal (storage_put_once (fx->st, "points/2", "bb", 2), 0);
  assert_int_equal (storage_put_once (fx->st, "points/1", "a", 1), 0);
  assert_int_equal (storage_put_once (fx->st, "disks/vda/1.qcow2", "ccc", 3),
                    0);
  assert_int_equal (storage_put_once (fx->st, "config", "{}", 2), 0);
  assert_int_equal (storage_put_once (fx->st, "B-upper", "", 0), 0);
  char out[4096] = "";
  assert_int_equal (storage_list (fx->st, "points/", collect, out), 0);
  assert_string_equal (out, "points/1:1;points/2:2;");
  out[0] = '\0';
  /* Byte order: upper case before lower case. */
  assert_int_equal (storage_list (fx->st, "", collect, out), 0);
  assert_string_equal (out, "B-upper:0;config:2;disks/vda/1.qcow2:3;"
                       "points/1:1;points/2:2;");
  out[0] = '\0';
  assert_int_equal (storage_list (fx->st, "disks/vda/1", collect, out), 0);
  assert_string_equal (out, "disks/vda/1.qcow2:3;");
  out[0] = '\0';
  assert_int_equal (storage_list (fx->st, "nothing/", collect, out), 0);
  assert_string_equal (out, "");

  /* A foreign object under the prefix is refused, not skipped. */
  struct s3_config *cfg = s3_config_load (fx->url);
  assert_non_null (cfg);
  struct s3_client *c = s3_client_new (cfg);
  assert_non_null (c);
  char key[128];
  snprintf (key, sizeof key, "%s/points/my notes", fx->prefix);
  /* (curl would send the space raw; the client takes repository keys
   * only, so the test stores "my%20notes" as S3 decodes it.) */
  snprintf (key, sizeof key, "%s/points/my%%20notes", fx->prefix);
  assert_int_equal (s3_put (c, key, "x", 1, false, NULL, NULL), 0);
  assert_int_equal (storage_list (fx->st, "points/", collect, out), -1);
  assert_int_equal (error_get_status (), STATUS_INVALID);
  assert_non_null (strstr (error_get_message (), "my notes"));
  s3_client_free (c);
  s3_config_free (cfg);
}

struct counter {
  unsigned n;
  char last[64];
  bool ordered;
};

static int
count (const struct storage_entry *e, void *opaque)
{
  struct counter *k = opaque;
  if (k->n > 0 && strcmp (k->last, e->key) >= 0)
    k->ordered = false;
  snprintf (k->last, sizeof k->last, "%s", e->key);
  k->n++;
  return 0;
}

/* More keys than one page of a listing (S3 returns 1000 at most). */
static void
test_list_pages (void **state)
{
  struct fixture *fx = *state;
  for (unsigned i = 0; i < 1100; i++) {
    char key[32];
    snprintf (key, sizeof key, "many/%04u", (i * 7919) % 1100);
    assert_int_equal (storage_replace (fx->st, key, "", 0), 0);
  }
  assert_int_equal (storage_put_once (fx->st, "other", "x", 1), 0);
  struct counter k = { .ordered = true };
  assert_int_equal (storage_list (fx->st, "many/", count, &k), 0);
  assert_int_equal (k.n, 1100);
  assert_true (k.ordered);
  assert_string_equal (k.last, "many/1099");
}

/* A child takes the lock and reports it through a pipe, then waits to be
 * killed. */
static pid_t
lock_in_child (struct fixture *fx)
{
  int p[2];
  assert_int_equal (pipe (p), 0);
  fflush (NULL);
  pid_t pid = fork ();
  assert_true (pid >= 0);
  if (pid == 0) {
    close (p[0]);
    struct storage *st = storage_open (fx->url, false, NULL);
    struct storage_lock *lk = st ? storage_lock (st, "lock",
                                                 "host h, pid child") : NULL;
    char c = lk ? 'y' : 'n';
    if (write (p[1], &c, 1) != 1)
      _exit (2);
    pause ();
    _exit (0);
  }
  close (p[1]);
  char c = 0;
  assert_int_equal (read (p[0], &c, 1), 1);
  close (p[0]);
  assert_int_equal (c, 'y');
  return pid;
}

static void
test_lock (void **state)
{
  struct fixture *fx = *state;
  assert_int_equal (storage_put_once (fx->st, "config", "{}", 2), 0);
  pid_t child = lock_in_child (fx);

  /* Busy while the child lives, naming it. */
  assert_null (storage_lock (fx->st, "lock", "host h, pid parent"));
  assert_int_equal (error_get_status (), STATUS_BUSY);
  assert_non_null (strstr (error_get_message (), "host h, pid child"));

  /* Killed on this host: its lock is taken over at once, and names the
   * new holder. */
  kill (child, SIGKILL);
  waitpid (child, NULL, 0);
  struct storage_lock *lk = storage_lock (fx->st, "lock",
                                          "host h, pid parent");
  assert_non_null (lk);
  void *buf;
  size_t len;
  assert_int_equal (storage_get (fx->st, "lock", &buf, &len), 0);
  assert_int_equal (strncmp (buf, "host h, pid parent\n", 19), 0);
  free (buf);
  /* Not by this process again either: it holds it. */
  assert_null (storage_lock (fx->st, "lock", "second"));
  assert_int_equal (error_get_status (), STATUS_BUSY);
  storage_unlock (lk);

  /* Released: the object is gone and the next taker gets it at once. */
  uint64_t size;
  assert_int_equal (storage_size (fx->st, "lock", &size), 0);
  lk = storage_lock (fx->st, "lock", "again");
  assert_non_null (lk);
  storage_unlock (lk);
}

/* A holder on another host is waited for until its lock is older than
 * the stale age by the service's clock (shortened here). */
static void
test_lock_stale_elsewhere (void **state)
{
  struct fixture *fx = *state;
  const char other[] = "host far, pid 1\nhost=far-away-host\npid=1\n"
    "start=1\n";
  assert_int_equal (storage_put_once (fx->st, "lock", other,
                                      sizeof other - 1), 0);
  setenv ("QBAK_S3_LOCK_STALE_S", "2", 1);
  assert_null (storage_lock (fx->st, "lock", "host h, pid parent"));
  assert_int_equal (error_get_status (), STATUS_BUSY);
  assert_non_null (strstr (error_get_message (), "host far, pid 1"));
  sleep (3);
  struct storage_lock *lk = storage_lock (fx->st, "lock",
                                          "host h, pid parent");
  if (!lk)
    fail_msg ("stale lock not taken over: %s", error_get_message ());
  /* The holder rewrites it (every second here), so while it is held it
   * never grows stale to the others. */
  sleep (3);
  pid_t pid = fork ();
  assert_true (pid >= 0);
  if (pid == 0) {
    struct storage *st = storage_open (fx->url, false, NULL);
    struct storage_lock *l2 = st ? storage_lock (st, "lock", "thief") : NULL;
    if (!l2 && error_get_status () != STATUS_BUSY)
      fprintf (stderr, "child: %s\n", error_get_message ());
    _exit (l2 ? 1 : error_get_status () == STATUS_BUSY ? 0 : 2);
  }
  int status;
  waitpid (pid, &status, 0);
  unsetenv ("QBAK_S3_LOCK_STALE_S");
  storage_unlock (lk);
  assert_true (WIFEXITED (status));
  assert_int_equal (WEXITSTATUS (status), 0);
}

static void
fill (uint8_t *buf, size_t len, unsigned seed)
{
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
  for (size_t i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    buf[i] = (uint8_t) x;
  }
}

struct upload_seen {
  const char *key;
  unsigned n;
};

static int
seen_upload (const char *key, const char *id, void *opaque)
{
  (void) id;
  struct upload_seen *s = opaque;
  if (strcmp (key, s->key) == 0)
    s->n++;
  return 0;
}

/* Three parts, part 1 (the qcow2 header's) given last, read back byte
 * for byte with ranged reads across the parts' edges. */
static void
test_multipart (void **state)
{
  struct fixture *fx = *state;
  struct s3_config *cfg = s3_config_load (fx->url);
  assert_non_null (cfg);
  const size_t p1 = S3_MIN_PART, p2 = S3_MIN_PART + 4096, p3 = 123457;
  size_t total = p1 + p2 + p3;
  uint8_t *data = malloc (total);
  assert_non_null (data);
  fill (data, total, 7);
  char key[128];
  snprintf (key, sizeof key, "%s/disks/vda/0001.qcow2", fx->prefix);

  struct s3_upload *u = s3_upload_start (cfg, key, 2);
  assert_non_null (u);
  assert_int_equal (s3_upload_part (u, 2, data + p1, p2), 0);
  assert_int_equal (s3_upload_part (u, 3, data + p1 + p2, p3), 0);
  /* Nothing is visible until the upload completes. */
  uint64_t size;
  assert_int_equal (storage_size (fx->st, "disks/vda/0001.qcow2", &size), 0);
  assert_int_equal (s3_upload_part (u, 2, data, p1), -1);
  assert_int_equal (error_get_status (), STATUS_USAGE);
  assert_int_equal (s3_upload_part (u, 1, data, p1), 0);
  if (s3_upload_finish (u) < 0)
    fail_msg ("%s", error_get_message ());

  assert_int_equal (storage_size (fx->st, "disks/vda/0001.qcow2", &size), 1);
  assert_int_equal (size, total);
  struct s3_client *c = s3_client_new (cfg);
  assert_non_null (c);
  static const struct { uint64_t off; size_t len; } ranges[] = {
    { 0, 512 }, { S3_MIN_PART - 100, 200 }, { S3_MIN_PART * 2 + 4000, 300 },
    { 0, S3_MIN_PART * 2 + 4096 + 123457 },
    { S3_MIN_PART * 2 + 4096 + 123457 - 1000, 4096 },
  };
  uint8_t *buf = malloc (total);
  assert_non_null (buf);
  for (size_t i = 0; i < sizeof ranges / sizeof *ranges; i++) {
    ssize_t n = s3_get_range (c, key, ranges[i].off, ranges[i].len, buf);
    size_t want = ranges[i].off + ranges[i].len <= total ? ranges[i].len
      : total - ranges[i].off;
    assert_int_equal (n, (ssize_t) want);
    assert_memory_equal (buf, data + ranges[i].off, want);
  }
  /* Past the end: nothing. */
  assert_int_equal (s3_get_range (c, key, total, 10, buf), 0);
  struct upload_seen seen = { .key = key };
  assert_int_equal (s3_mpu_list (c, fx->prefix, seen_upload, &seen), 0);
  assert_int_equal (seen.n, 0);

  /* A part smaller than S3 allows before the last: refused at finish,
   * and the upload abandoned. */
  snprintf (key, sizeof key, "%s/disks/vda/0002.qcow2", fx->prefix);
  u = s3_upload_start (cfg, key, 1);
  assert_non_null (u);
  assert_int_equal (s3_upload_part (u, 1, data, 1000), 0);
  assert_int_equal (s3_upload_part (u, 2, data, 1000), 0);
  assert_int_equal (s3_upload_finish (u), -1);
  assert_int_equal (error_get_status (), STATUS_USAGE);
  assert_non_null (strstr (error_get_message (), "part 1"));
  seen = (struct upload_seen) { .key = key };
  assert_int_equal (s3_mpu_list (c, fx->prefix, seen_upload, &seen), 0);
  assert_int_equal (seen.n, 0);

  free (buf);
  free (data);
  s3_client_free (c);
  s3_config_free (cfg);
}

/* A cancelled upload leaves no object and no upload in progress. */
static void
test_multipart_cancel (void **state)
{
  struct fixture *fx = *state;
  struct s3_config *cfg = s3_config_load (fx->url);
  assert_non_null (cfg);
  uint8_t *data = malloc (S3_MIN_PART);
  assert_non_null (data);
  fill (data, S3_MIN_PART, 3);
  char key[128];
  snprintf (key, sizeof key, "%s/disks/vda/0003.qcow2", fx->prefix);
  struct s3_upload *u = s3_upload_start (cfg, key, 4);
  assert_non_null (u);
  assert_int_equal (s3_upload_part (u, 2, data, S3_MIN_PART), 0);
  assert_int_equal (s3_upload_part (u, 3, data, 100), 0);
  struct s3_client *c = s3_client_new (cfg);
  assert_non_null (c);
  struct upload_seen seen = { .key = key };
  assert_int_equal (s3_mpu_list (c, fx->prefix, seen_upload, &seen), 0);
  assert_int_equal (seen.n, 1);
  s3_upload_cancel (u);
  seen.n = 0;
  assert_int_equal (s3_mpu_list (c, fx->prefix, seen_upload, &seen), 0);
  assert_int_equal (seen.n, 0);
  uint64_t size;
  assert_int_equal (storage_size (fx->st, "disks/vda/0003.qcow2", &size), 0);
  char out[256] = "";
  assert_int_equal (storage_list (fx->st, "", collect, out), 0);
  assert_string_equal (out, "");
  free (data);
  s3_client_free (c);
  s3_config_free (cfg);
}

/* A listening socket on 127.0.0.1 that cuts every connection as soon as
 * it is made (a thread accepts and closes). */
struct cutter {
  int fd;
  unsigned short port;
  pthread_t thread;
  unsigned cuts;
};

static void *
cut_connections (void *opaque)
{
  struct cutter *k = opaque;
  for (;;) {
    int c = accept (k->fd, NULL, NULL);
    if (c < 0)
      return NULL;
    struct linger l = { .l_onoff = 1, .l_linger = 0 };
    setsockopt (c, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    close (c);
    __atomic_add_fetch (&k->cuts, 1, __ATOMIC_SEQ_CST);
  }
}

static unsigned short
listen_local (int fd)
{
  struct sockaddr_in a = { .sin_family = AF_INET,
                           .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  socklen_t len = sizeof a;
  assert_int_equal (bind (fd, (struct sockaddr *) &a, sizeof a), 0);
  assert_int_equal (listen (fd, 16), 0);
  assert_int_equal (getsockname (fd, (struct sockaddr *) &a, &len), 0);
  return ntohs (a.sin_port);
}

/* A service that cannot be reached, or cuts every connection, fails the
 * operation with an I/O error after the bounded retries, quickly with
 * the test's short backoff, naming the object and the attempts. */
static void
test_connection_faults (void **state)
{
  (void) state;
  char *endpoint = strdup (getenv ("AWS_ENDPOINT_URL"));
  assert_non_null (endpoint);
  char url[300], ep[64];
  snprintf (url, sizeof url, "s3://%s/t1", bucket);

  /* Nothing listens: connection refused. */
  int fd = socket (AF_INET, SOCK_STREAM, 0);
  assert_true (fd >= 0);
  struct sockaddr_in a = { .sin_family = AF_INET,
                           .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  socklen_t len = sizeof a;
  assert_int_equal (bind (fd, (struct sockaddr *) &a, sizeof a), 0);
  assert_int_equal (getsockname (fd, (struct sockaddr *) &a, &len), 0);
  snprintf (ep, sizeof ep, "http://127.0.0.1:%u", ntohs (a.sin_port));
  close (fd);
  setenv ("AWS_ENDPOINT_URL", ep, 1);
  assert_null (storage_open (url, true, NULL));
  assert_int_equal (error_get_status (), STATUS_IO);
  assert_int_equal (error_get_errno (), ECONNREFUSED);
  assert_non_null (strstr (error_get_message (), "8 attempts"));
  assert_non_null (strstr (error_get_message (), bucket));

  /* Every connection cut: each of the 8 attempts was made. */
  struct cutter k = { .fd = socket (AF_INET, SOCK_STREAM, 0) };
  assert_true (k.fd >= 0);
  k.port = listen_local (k.fd);
  assert_int_equal (pthread_create (&k.thread, NULL, cut_connections, &k),
                    0);
  snprintf (ep, sizeof ep, "http://127.0.0.1:%u", k.port);
  setenv ("AWS_ENDPOINT_URL", ep, 1);
  assert_null (storage_open (url, true, NULL));
  assert_int_equal (error_get_status (), STATUS_IO);
  assert_non_null (strstr (error_get_message (), "8 attempts"));
  shutdown (k.fd, SHUT_RDWR);
  close (k.fd);
  pthread_join (k.thread, NULL);
  assert_int_equal (k.cuts, 8);

  setenv ("AWS_ENDPOINT_URL", endpoint, 1);
  free (endpoint);
}

/* ---- through tests/s3/fault-proxy.py -------------------------------- */


/* One request in ten answered 503 SlowDown: every operation still
 * succeeds, through the retries. */
static void
test_faults_retried (void **state)
{
  (void) state;
  struct proxy p;
  proxy_start (&p);
  proxy_rules (&p, "[{\"fault\": \"503\", \"rate\": 0.1}]");
  char url[300];
  snprintf (url, sizeof url, "s3://%s/faults", bucket);
  struct storage *st = storage_open (url, true, NULL);
  if (!st)
    fail_msg ("%s", error_get_message ());
  char key[64], text[64];
  for (int i = 0; i < 24; i++) {
    snprintf (key, sizeof key, "points/%02d.json", i);
    snprintf (text, sizeof text, "{\"point\": %d}", i);
    if (storage_put_once (st, key, text, strlen (text)) < 0)
      fail_msg ("%s", error_get_message ());
  }
  struct counter k = { .ordered = true };
  assert_int_equal (storage_list (st, "points/", count, &k), 0);
  assert_int_equal (k.n, 24);
  for (int i = 0; i < 24; i++) {
    void *buf;
    size_t len;
    snprintf (key, sizeof key, "points/%02d.json", i);
    snprintf (text, sizeof text, "{\"point\": %d}", i);
    assert_int_equal (storage_get (st, key, &buf, &len), 0);
    assert_string_equal (buf, text);
    free (buf);
  }
  assert_int_equal (storage_rename (st, "points/00.json", "renamed"), 0);
  for (int i = 1; i < 24; i++) {
    snprintf (key, sizeof key, "points/%02d.json", i);
    assert_int_equal (storage_delete (st, key), 0);
  }
  struct storage_lock *lk = storage_lock (st, "lock", "host h, pid 1");
  assert_non_null (lk);
  storage_unlock (lk);

  /* A multipart upload, part 1 last, through the same faults. */
  const size_t p1 = S3_MIN_PART, p2 = 200000;
  uint8_t *data = malloc (p1 + p2), *back = malloc (p1 + p2);
  assert_true (data && back);
  fill (data, p1 + p2, 11);
  struct s3_config *cfg = s3_config_load (url);
  assert_non_null (cfg);
  struct s3_upload *u = s3_upload_start (cfg, "faults/big", 2);
  assert_non_null (u);
  assert_int_equal (s3_upload_part (u, 2, data + p1, p2), 0);
  assert_int_equal (s3_upload_part (u, 1, data, p1), 0);
  if (s3_upload_finish (u) < 0)
    fail_msg ("%s", error_get_message ());
  struct s3_client *c = s3_client_new (cfg);
  assert_non_null (c);
  assert_int_equal (s3_get_range (c, "faults/big", 0, p1 + p2, back),
                    (ssize_t) (p1 + p2));
  assert_memory_equal (back, data, p1 + p2);

  /* The faults were there. */
  int faults = proxy_count (&p, "fault 503");
  if (faults < 3)
    fail_msg ("only %d requests failed on purpose", faults);

  /* Answers lost after the service did the work: a put-once and a
   * lock's creation find their own object, a completed upload its
   * object, and none of them fails. */
  proxy_rules (&p, "[{\"fault\": \"drop-response\", "
               "\"match\": \"^PUT .*/(lost|lock)$\", \"count\": 2},"
               "{\"fault\": \"drop-response\", "
               "\"match\": \"^POST .*uploadId=\", \"count\": 1}]");
  if (storage_put_once (st, "lost", "mine", 4) < 0)
    fail_msg ("%s", error_get_message ());
  lk = storage_lock (st, "lock", "host h, pid 2");
  if (!lk)
    fail_msg ("%s", error_get_message ());
  storage_unlock (lk);
  u = s3_upload_start (cfg, "faults/big2", 2);
  assert_non_null (u);
  assert_int_equal (s3_upload_part (u, 1, data, p2), 0);
  if (s3_upload_finish (u) < 0)
    fail_msg ("%s", error_get_message ());
  assert_int_equal (proxy_count (&p, "drop-response"), 3);
  /* Someone else's object is still refused. */
  assert_int_equal (storage_put_once (st, "lost", "theirs", 6), -1);
  assert_int_equal (error_get_errno (), EEXIST);

  /* A request that stalls is cut by the low-speed limit (a second here)
   * and sent again. */
  setenv ("QBAK_S3_LOW_SPEED_TIME", "1", 1);
  proxy_rules (&p, "[{\"fault\": \"hang\", \"seconds\": 30, "
               "\"match\": \"^GET .*/lost$\", \"count\": 1}]");
  void *buf;
  size_t len;
  time_t t0 = time (NULL);
  if (storage_get (st, "lost", &buf, &len) < 0)
    fail_msg ("%s", error_get_message ());
  assert_string_equal (buf, "mine");
  free (buf);
  assert_true (time (NULL) - t0 < 10);
  assert_int_equal (proxy_count (&p, "hang"), 1);
  unsetenv ("QBAK_S3_LOW_SPEED_TIME");

  /* Every connection cut: a clean I/O error after the attempts. */
  proxy_rules (&p, "[{\"fault\": \"cut\"}]");
  assert_int_equal (storage_get (st, "lost", &buf, &len), -1);
  assert_int_equal (error_get_status (), STATUS_IO);
  assert_non_null (strstr (error_get_message (), "8 attempts"));

  storage_close (st);
  s3_client_free (c);
  s3_config_free (cfg);
  free (data);
  free (back);
  proxy_stop (&p);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown (test_open, setup, teardown),
    cmocka_unit_test (test_wrong_secret),
    cmocka_unit_test (test_connection_faults),
    cmocka_unit_test_setup_teardown (test_put_once_get, setup, teardown),
    cmocka_unit_test_setup_teardown (test_replace_delete_rename, setup,
                                     teardown),
    cmocka_unit_test_setup_teardown (test_list, setup, teardown),
    cmocka_unit_test_setup_teardown (test_list_pages, setup, teardown),
    cmocka_unit_test_setup_teardown (test_lock, setup, teardown),
    cmocka_unit_test_setup_teardown (test_lock_stale_elsewhere, setup,
                                     teardown),
    cmocka_unit_test_setup_teardown (test_multipart, setup, teardown),
    cmocka_unit_test_setup_teardown (test_multipart_cancel, setup,
                                     teardown),
    cmocka_unit_test (test_faults_retried),
  };
  return cmocka_run_group_tests (tests, group_setup, NULL);
}
