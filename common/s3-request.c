/* Signed S3 requests over one curl handle, with retries (s3-request.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "common/error.h"
#include "common/s3-curl.h"
#include "common/s3-request.h"
#include "common/s3-xml.h"

#define MAX_ATTEMPTS 8
#define MAX_WAIT_MS (120 * 1000)
#define DEFAULT_BASE_MS 200
#define MAX_CAP_MS (20 * 1000)
#define CONNECT_TIMEOUT_S 10
#define LOW_SPEED_TIME_S 60
/* An error answer's body (S3's XML) is kept up to this size. */
#define MAX_ERROR_BODY (64 << 10)

static uint64_t
next_random (struct s3_client *c)
{
  /* xorshift64*: jitter only needs to differ between clients. */
  c->rng ^= c->rng >> 12;
  c->rng ^= c->rng << 25;
  c->rng ^= c->rng >> 27;
  return c->rng * 2685821657736338717ull;
}

struct s3_client *
s3_client_new (const struct s3_config *cfg)
{
  /* The first client loads libcurl, before any request is made. */
  char where[1200];
  snprintf (where, sizeof where, "s3://%s%s%s", cfg->bucket,
            cfg->prefix && cfg->prefix[0] ? "/" : "",
            cfg->prefix ? cfg->prefix : "");
  const struct s3_curl *curl = s3_curl_load (where);
  if (!curl)
    return NULL;
  struct s3_client *c = calloc (1, sizeof *c);
  if (!c) {
    set_nomem ();
    return NULL;
  }
  c->cfg = s3_config_dup (cfg);
  if (!c->cfg) {
    free (c);
    return NULL;
  }
  c->curl = curl->easy_init ();
  if (!c->curl || asprintf (&c->sigv4, "aws:amz:%s:s3", cfg->region) < 0) {
    c->sigv4 = NULL;
    s3_client_free (c);
    set_nomem ();
    return NULL;
  }
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  c->rng = ((uint64_t) ts.tv_nsec << 20) ^ (uint64_t) getpid () ^
    (uint64_t) (uintptr_t) c ^ 0x9e3779b97f4a7c15ull;
  return c;
}

void
s3_client_free (struct s3_client *c)
{
  if (!c)
    return;
  /* A handle means that libcurl was loaded. */
  if (c->curl)
    s3_curl ()->easy_cleanup (c->curl);
  free (c->sigv4);
  s3_config_free (c->cfg);
  free (c);
}

const struct s3_config *
s3_client_config (const struct s3_client *c)
{
  return c->cfg;
}

bool
s3_client_retried (const struct s3_client *c)
{
  return c->last_attempts > 1;
}

const char *
s3_object_name (struct s3_client *c, const char *key, char *buf, size_t size)
{
  snprintf (buf, size, "s3://%s/%s", c->cfg->bucket, key ? key : "");
  return buf;
}

/* ---- one attempt ------------------------------------------------------ */

struct transfer {
  const struct s3_request *req;
  struct s3_response *resp;
  CURL *curl;
  size_t sent;
  size_t cap;
  bool too_big;
};

static bool
is_success (long status)
{
  return status >= 200 && status < 300;
}

static size_t
on_body (char *data, size_t size, size_t nmemb, void *opaque)
{
  struct transfer *t = opaque;
  struct s3_response *r = t->resp;
  size_t n = size * nmemb;
  long status = 0;
  s3_curl ()->easy_getinfo (t->curl, CURLINFO_RESPONSE_CODE, &status);
  if (is_success (status) && t->req->sink) {
    size_t room = t->req->sink_len - r->len;
    if (n > room) {
      t->too_big = true;
      return 0;
    }
    memcpy ((char *) t->req->sink + r->len, data, n);
    r->len += n;
    return n;
  }
  /* A success whose body is of no use (a PUT's, a DELETE's): dropped. */
  if (is_success (status) && t->req->max_body == 0)
    return n;
  size_t max = is_success (status) ? t->req->max_body : MAX_ERROR_BODY;
  if (n > max - r->len) {
    if (!is_success (status))
      return n;         /* an error's text beyond the limit: dropped */
    t->too_big = true;
    return 0;
  }
  if (r->len + n + 1 > t->cap) {
    size_t cap = t->cap ? t->cap : 4096;
    while (cap < r->len + n + 1)
      cap *= 2;
    char *b = realloc (r->body, cap);
    if (!b)
      return 0;
    r->body = b;
    t->cap = cap;
  }
  memcpy (r->body + r->len, data, n);
  r->len += n;
  r->body[r->len] = '\0';
  return n;
}

static size_t
on_read (char *dest, size_t size, size_t nmemb, void *opaque)
{
  struct transfer *t = opaque;
  size_t n = size * nmemb, left = t->req->body_len - t->sent;
  if (n > left)
    n = left;
  if (n == 0)
    return 0;
  memcpy (dest, (const char *) t->req->body + t->sent, n);
  t->sent += n;
  return n;
}

/* "Name: value" with NAME matched case-insensitively: the value, trimmed
 * into OUT, or false. */
static bool
header_value (const char *line, size_t len, const char *name, char *out,
              size_t size)
{
  size_t nl = strlen (name);
  if (len <= nl || strncasecmp (line, name, nl) != 0 || line[nl] != ':')
    return false;
  const char *v = line + nl + 1, *end = line + len;
  while (v < end && (*v == ' ' || *v == '\t'))
    v++;
  while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
    end--;
  size_t n = (size_t) (end - v);
  if (n >= size)
    n = size - 1;
  memcpy (out, v, n);
  out[n] = '\0';
  return true;
}

static size_t
on_header (char *data, size_t size, size_t nmemb, void *opaque)
{
  struct transfer *t = opaque;
  struct s3_response *r = t->resp;
  size_t n = size * nmemb;
  char v[256];
  if (n >= 5 && strncmp (data, "HTTP/", 5) == 0) {
    /* A new answer (after "100 Continue"): its headers only. */
    r->etag[0] = '\0';
    r->last_modified = r->date = -1;
  }
  else if (header_value (data, n, "ETag", r->etag, sizeof r->etag))
    ;
  else if (header_value (data, n, "Last-Modified", v, sizeof v))
    r->last_modified = s3_curl ()->getdate (v, NULL);
  else if (header_value (data, n, "Date", v, sizeof v))
    r->date = s3_curl ()->getdate (v, NULL);
  return n;
}

long
s3_test_knob (const char *name, long dflt)
{
#ifndef QBAK_FAILPOINTS
  /* Outside test builds the knobs do not exist. */
  (void) name;
  return dflt;
#endif
  const char *v = getenv (name);
  if (!v || !*v)
    return dflt;
  char *end;
  long n = strtol (v, &end, 10);
  return *end || n < 0 ? dflt : n;
}

static char *
request_url (struct s3_client *c, const struct s3_request *req)
{
  const struct s3_config *cfg = c->cfg;
  char *url;
  int n = asprintf (&url, "%s/%s%s%s%s%s", cfg->endpoint,
                    cfg->path_style ? cfg->bucket : "",
                    cfg->path_style && req->key ? "/" : "",
                    req->key ? req->key : "",
                    req->query ? "?" : "", req->query ? req->query : "");
  return n < 0 ? NULL : url;
}

/* One attempt: the curl result (the HTTP status in RESP). */
static CURLcode
attempt (struct s3_client *c, const struct s3_request *req,
         struct s3_response *resp, const char *url, char *errbuf)
{
  const struct s3_curl *curl = s3_curl ();
  CURL *h = c->curl;
  const struct s3_config *cfg = c->cfg;
  struct transfer t = { .req = req, .resp = resp, .curl = h };
  struct curl_slist *hdrs = NULL, *tmp;
  char *token_hdr = NULL;
  CURLcode rc = CURLE_OUT_OF_MEMORY;

  free (resp->body);
  resp->body = NULL;
  resp->len = 0;
  resp->status = 0;
  resp->etag[0] = '\0';
  resp->content_length = 0;
  resp->last_modified = resp->date = -1;

  /* Back to defaults, keeping the connection and its caches. */
  curl->easy_reset (h);
  /* radosgw refuses a request without it; the body is not hashed. */
  if (!(tmp = curl->slist_append (hdrs, "x-amz-content-sha256: "
                                  "UNSIGNED-PAYLOAD")))
    goto out;
  hdrs = tmp;
  if (cfg->session_token) {
    if (asprintf (&token_hdr, "x-amz-security-token: %s",
                  cfg->session_token) < 0) {
      token_hdr = NULL;
      goto out;
    }
    if (!(tmp = curl->slist_append (hdrs, token_hdr)))
      goto out;
    hdrs = tmp;
  }
  for (size_t i = 0; i < sizeof req->headers / sizeof *req->headers &&
         req->headers[i]; i++) {
    if (!(tmp = curl->slist_append (hdrs, req->headers[i])))
      goto out;
    hdrs = tmp;
  }
  if (strcmp (req->method, "POST") == 0) {
    if (!(tmp = curl->slist_append (hdrs, "Content-Type: application/xml")))
      goto out;
    hdrs = tmp;
  }

  curl->easy_setopt (h, CURLOPT_URL, url);
  curl->easy_setopt (h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl->easy_setopt (h, CURLOPT_NOSIGNAL, 1L);
  curl->easy_setopt (h, CURLOPT_TCP_KEEPALIVE, 1L);
  curl->easy_setopt (h, CURLOPT_CONNECTTIMEOUT, (long) CONNECT_TIMEOUT_S);
  curl->easy_setopt (h, CURLOPT_LOW_SPEED_LIMIT, 1L);
  long stall = s3_test_knob ("QBAK_S3_LOW_SPEED_TIME", LOW_SPEED_TIME_S);
  curl->easy_setopt (h, CURLOPT_LOW_SPEED_TIME, stall > 0 ? stall
                     : LOW_SPEED_TIME_S);
  curl->easy_setopt (h, CURLOPT_AWS_SIGV4, c->sigv4);
  curl->easy_setopt (h, CURLOPT_USERNAME, cfg->access_key);
  curl->easy_setopt (h, CURLOPT_PASSWORD, cfg->secret_key);
  curl->easy_setopt (h, CURLOPT_HTTPHEADER, hdrs);
  curl->easy_setopt (h, CURLOPT_ERRORBUFFER, errbuf);
  curl->easy_setopt (h, CURLOPT_WRITEFUNCTION, on_body);
  curl->easy_setopt (h, CURLOPT_WRITEDATA, &t);
  curl->easy_setopt (h, CURLOPT_HEADERFUNCTION, on_header);
  curl->easy_setopt (h, CURLOPT_HEADERDATA, &t);
  if (strcmp (req->method, "HEAD") == 0)
    curl->easy_setopt (h, CURLOPT_NOBODY, 1L);
  else if (strcmp (req->method, "PUT") == 0) {
    curl->easy_setopt (h, CURLOPT_UPLOAD, 1L);
    curl->easy_setopt (h, CURLOPT_READFUNCTION, on_read);
    curl->easy_setopt (h, CURLOPT_READDATA, &t);
    curl->easy_setopt (h, CURLOPT_INFILESIZE_LARGE,
                       (curl_off_t) req->body_len);
  }
  else if (strcmp (req->method, "POST") == 0) {
    curl->easy_setopt (h, CURLOPT_POST, 1L);
    curl->easy_setopt (h, CURLOPT_POSTFIELDS, req->body ? req->body : "");
    curl->easy_setopt (h, CURLOPT_POSTFIELDSIZE_LARGE,
                       (curl_off_t) req->body_len);
  }
  else if (strcmp (req->method, "GET") != 0)
    curl->easy_setopt (h, CURLOPT_CUSTOMREQUEST, req->method);

  errbuf[0] = '\0';
  rc = curl->easy_perform (h);
  curl->easy_getinfo (h, CURLINFO_RESPONSE_CODE, &resp->status);
  curl_off_t cl = -1;
  if (curl->easy_getinfo (h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl) ==
      CURLE_OK && cl >= 0)
    resp->content_length = (uint64_t) cl;
  if (rc == CURLE_WRITE_ERROR && t.too_big)
    resp->status = -1;          /* the caller's limit, not a fault */
 out:
  curl->easy_setopt (h, CURLOPT_HTTPHEADER, NULL);
  curl->slist_free_all (hdrs);
  if (token_hdr) {
    explicit_bzero (token_hdr, strlen (token_hdr));
    free (token_hdr);
  }
  return rc;
}

static int
on_error_xml (const char *name, const char *text, void *opaque)
{
  struct s3_response *r = opaque;
  if (strcmp (name, "Code") == 0)
    snprintf (r->code, sizeof r->code, "%s", text);
  else if (strcmp (name, "Message") == 0)
    snprintf (r->message, sizeof r->message, "%s", text);
  return 0;
}

void
s3_response_parse_error (struct s3_response *resp)
{
  if (resp->body)
    s3_xml_parse (resp->body, resp->len, on_error_xml, resp);
}

static bool
retryable_curl (CURLcode rc)
{
  switch (rc) {
  case CURLE_COULDNT_CONNECT:
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_OPERATION_TIMEDOUT:
  case CURLE_SEND_ERROR:
  case CURLE_RECV_ERROR:
  case CURLE_GOT_NOTHING:
  case CURLE_PARTIAL_FILE:
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_HTTP2:
  case CURLE_HTTP2_STREAM:
  case CURLE_WEIRD_SERVER_REPLY:        /* a garbled answer */
    return true;
  default:
    return false;
  }
}

static bool
retryable_status (const struct s3_response *r)
{
  switch (r->status) {
  case 408: case 429: case 500: case 502: case 503: case 504:
    return true;
  case 400:
    return strcmp (r->code, "RequestTimeout") == 0;
  default:
    return false;
  }
}

static int
errno_of (CURLcode rc)
{
  switch (rc) {
  case CURLE_OPERATION_TIMEDOUT:
    return ETIMEDOUT;
  case CURLE_COULDNT_CONNECT:
    return ECONNREFUSED;
  case CURLE_SEND_ERROR:
  case CURLE_RECV_ERROR:
  case CURLE_GOT_NOTHING:
  case CURLE_PARTIAL_FILE:
    return ECONNRESET;
  case CURLE_COULDNT_RESOLVE_HOST:
    return EHOSTUNREACH;
  default:
    return EIO;
  }
}

/* Sleep a random time in [0, min(cap, base * 2^n)] (full jitter); false
 * if that would pass the budget of waiting. */
static bool
backoff (struct s3_client *c, unsigned n, long *waited_ms)
{
  long base = s3_test_knob ("QBAK_S3_BACKOFF_MS", DEFAULT_BASE_MS);
  long cap = base * 100 < MAX_CAP_MS ? base * 100 : MAX_CAP_MS;
  long limit = n >= 20 ? cap : base << n;
  if (limit > cap)
    limit = cap;
  long ms = limit > 0 ? (long) (next_random (c) % (uint64_t) (limit + 1))
                      : 0;
  if (*waited_ms + ms > MAX_WAIT_MS)
    return false;
  *waited_ms += ms;
  struct timespec ts = { .tv_sec = ms / 1000,
                         .tv_nsec = (ms % 1000) * 1000000L };
  while (nanosleep (&ts, &ts) < 0 && errno == EINTR)
    ;
  return true;
}

int
s3_send (struct s3_client *c, const struct s3_request *req,
         struct s3_response *resp)
{
  memset (resp, 0, sizeof *resp);
  char *url = request_url (c, req);
  if (!url) {
    set_nomem ();
    return -1;
  }
  char errbuf[CURL_ERROR_SIZE];
  long waited = 0;
  CURLcode rc = CURLE_OK;
  int r = -1;
  for (unsigned n = 0;; n++) {
    resp->code[0] = resp->message[0] = '\0';
    rc = attempt (c, req, resp, url, errbuf);
    resp->attempts = c->last_attempts = n + 1;
    if (rc == CURLE_OK && !is_success (resp->status))
      s3_response_parse_error (resp);
    bool again = rc == CURLE_OK ? retryable_status (resp)
                                : retryable_curl (rc);
    if (!again || n + 1 >= MAX_ATTEMPTS || !backoff (c, n, &waited))
      break;
  }
  char name[1200];
  s3_object_name (c, req->key, name, sizeof name);
  if (rc == CURLE_OK)
    r = 0;
  else if (rc == CURLE_WRITE_ERROR && resp->status == -1)
    qbak_internal_error (STATUS_INVALID, EFBIG, "%s: larger than expected",
                         name);
  else if (rc == CURLE_OUT_OF_MEMORY)
    set_nomem ();
  else
    qbak_internal_error (STATUS_IO, errno_of (rc),
                         "%s: %s failed after %u attempt%s: %s", name,
                         req->method, resp->attempts,
                         resp->attempts == 1 ? "" : "s",
                         errbuf[0] ? errbuf : s3_curl ()->easy_strerror (rc));
  free (url);
  return r;
}

void
s3_response_free (struct s3_response *resp)
{
  free (resp->body);
  resp->body = NULL;
}

void
s3_response_error (struct s3_client *c, const struct s3_response *resp,
                   const char *key, const char *what)
{
  char name[1200];
  s3_object_name (c, key, name, sizeof name);
  const char *code = resp->code[0] ? resp->code : "";
  char detail[400];
  snprintf (detail, sizeof detail, "%s%s%s%s%s", code[0] ? " " : "", code,
            resp->message[0] ? " (" : "", resp->message,
            resp->message[0] ? ")" : "");
  long st = resp->status;
  if (st == 404 && strcmp (code, "NoSuchBucket") == 0)
    qbak_internal_error_errno_only (STATUS_USAGE, ENOENT,
                                    "%s: %s: the bucket '%s' does not exist "
                                    "(HTTP 404%s)", name, what,
                                    c->cfg->bucket, detail);
  else if (st == 404)
    qbak_internal_error_errno_only (STATUS_INVALID, ENOENT,
                                    "%s: no such object (%s: HTTP 404%s)",
                                    name, what, detail);
  else if (st == 401 || st == 403)
    qbak_internal_error_errno_only (STATUS_USAGE, EACCES,
                                    "%s: %s: access denied (HTTP %ld%s); "
                                    "check the credentials and the "
                                    "bucket's permissions", name, what, st,
                                    detail);
  else if (st >= 500)
    qbak_internal_error_errno_only (STATUS_IO, EIO,
                                    "%s: %s: the service failed (HTTP "
                                    "%ld%s, %u attempts)", name, what, st,
                                    detail, resp->attempts);
  else
    qbak_internal_error_errno_only (STATUS_INVALID, EINVAL,
                                    "%s: %s: refused (HTTP %ld%s)", name,
                                    what, st, detail);
}
