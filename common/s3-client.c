/* The S3 primitives on top of s3_send (s3-client.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/s3-client.h"
#include "common/s3-curl.h"
#include "common/s3-request.h"
#include "common/s3-xml.h"

/* A listing page or an upload list is far below this. */
#define MAX_XML (16u << 20)

static bool
ok (const struct s3_response *r)
{
  return r->status >= 200 && r->status < 300;
}

/* Percent-encode S for a query value (everything but A-Za-z0-9-._~, as
 * SigV4's canonical form wants), malloc'ed. */
static char *
escape (struct s3_client *c, const char *s)
{
  const struct s3_curl *curl = s3_curl ();
  char *e = curl->easy_escape (c->curl, s, 0);
  char *copy = e ? strdup (e) : NULL;
  curl->free (e);
  if (!copy)
    set_nomem ();
  return copy;
}

int
s3_check_bucket (struct s3_client *c)
{
  struct s3_request req = { .method = "GET", .query = "list-type=2&max-keys=1",
                            .max_body = MAX_XML };
  struct s3_response resp;
  int r = s3_send (c, &req, &resp);
  if (r == 0 && !ok (&resp)) {
    s3_response_error (c, &resp, NULL, "opening the repository");
    /* Whatever the service said, the bucket cannot be used as given. */
    if (error_get_status () == STATUS_INVALID)
      qbak_internal_error_errno_only (STATUS_USAGE, error_get_errno (), "%s",
                                      error_get_message ());
    r = -1;
  }
  s3_response_free (&resp);
  return r;
}

/* One PUT; IF_MATCH is sent as it is given. */
static int
put_once (struct s3_client *c, const char *key, const void *buf, size_t len,
          bool if_none_match, const char *if_match, char *etag)
{
  char match_hdr[S3_ETAG_MAX + 16];
  struct s3_request req = { .method = "PUT", .key = key, .body = buf,
                            .body_len = len };
  size_t h = 0;
  if (if_none_match)
    req.headers[h++] = "If-None-Match: *";
  if (if_match) {
    snprintf (match_hdr, sizeof match_hdr, "If-Match: %s", if_match);
    req.headers[h++] = match_hdr;
  }
  struct s3_response resp;
  int r = s3_send (c, &req, &resp);
  if (r == 0 && resp.status == 412) {
    char name[1200];
    s3_object_name (c, key, name, sizeof name);
    if (if_none_match)
      set_exists_error ("%s: exists already and is never replaced", name);
    else
      qbak_internal_error_errno_only (STATUS_BUSY, ESTALE,
                                      "%s: changed meanwhile", name);
    r = -1;
  }
  else if (r == 0 && !ok (&resp)) {
    s3_response_error (c, &resp, key, "writing");
    r = -1;
  }
  else if (r == 0 && etag)
    snprintf (etag, S3_ETAG_MAX, "%s", resp.etag);
  s3_response_free (&resp);
  return r;
}

/* TAG without its quotes, in BUF. */
static const char *
unquoted (const char *tag, char *buf)
{
  size_t n = strlen (tag);
  if (n >= 2 && tag[0] == '"' && tag[n - 1] == '"')
    snprintf (buf, S3_ETAG_MAX, "%.*s", (int) (n - 2), tag + 1);
  else
    snprintf (buf, S3_ETAG_MAX, "%s", tag);
  return buf;
}

int
s3_put (struct s3_client *c, const char *key, const void *buf, size_t len,
        bool if_none_match, const char *if_match, char *etag)
{
  if (!if_match)
    return put_once (c, key, buf, len, if_none_match, NULL, etag);
  /* Services differ on If-Match in a PUT: radosgw compares the bare
   * value, AWS the quoted entity tag.  The bare one first; if it is
   * refused while the object still has that ETag, the quoted one. */
  char bare[S3_ETAG_MAX], now[S3_ETAG_MAX], quoted[S3_ETAG_MAX + 2];
  unquoted (if_match, bare);
  if (put_once (c, key, buf, len, if_none_match, bare, etag) == 0)
    return 0;
  if (error_get_errno () != ESTALE)
    return -1;
  struct s3_object_info info;
  if (s3_head (c, key, &info) != 1 ||
      strcmp (unquoted (info.etag, now), bare) != 0) {
    char name[1200];
    qbak_internal_error_errno_only (STATUS_BUSY, ESTALE,
                                    "%s: changed meanwhile",
                                    s3_object_name (c, key, name,
                                                    sizeof name));
    return -1;
  }
  snprintf (quoted, sizeof quoted, "\"%s\"", bare);
  return put_once (c, key, buf, len, if_none_match, quoted, etag);
}

int
s3_get (struct s3_client *c, const char *key, size_t max, void **buf,
        size_t *len)
{
  struct s3_request req = { .method = "GET", .key = key, .max_body = max };
  struct s3_response resp;
  int r = s3_send (c, &req, &resp);
  if (r == 0 && !ok (&resp)) {
    s3_response_error (c, &resp, key, "reading");
    r = -1;
  }
  else if (r == 0) {
    if (!resp.body && !(resp.body = calloc (1, 1))) {
      set_nomem ();
      r = -1;
    }
    else {
      *buf = resp.body;
      *len = resp.len;
      resp.body = NULL;
    }
  }
  s3_response_free (&resp);
  return r;
}

ssize_t
s3_get_range (struct s3_client *c, const char *key, uint64_t offset,
              size_t len, void *buf)
{
  if (len == 0)
    return 0;
  char range[80];
  snprintf (range, sizeof range, "Range: bytes=%" PRIu64 "-%" PRIu64,
            offset, offset + len - 1);
  struct s3_request req = { .method = "GET", .key = key,
                            .headers = { range }, .sink = buf,
                            .sink_len = len };
  struct s3_response resp;
  ssize_t r = s3_send (c, &req, &resp);
  if (r == 0 && resp.status == 416)
    r = 0;                      /* at or past the end */
  else if (r == 0 && resp.status == 200 && offset != 0) {
    char name[1200];
    set_invalid ("%s: the service ignored a byte range",
                 s3_object_name (c, key, name, sizeof name));
    r = -1;
  }
  else if (r == 0 && !ok (&resp)) {
    s3_response_error (c, &resp, key, "reading");
    r = -1;
  }
  else if (r == 0)
    r = (ssize_t) resp.len;
  s3_response_free (&resp);
  return r;
}

int
s3_head (struct s3_client *c, const char *key, struct s3_object_info *info)
{
  struct s3_request req = { .method = "HEAD", .key = key };
  struct s3_response resp;
  int r = s3_send (c, &req, &resp);
  if (r == 0 && resp.status == 404)
    r = 0;
  else if (r == 0 && !ok (&resp)) {
    s3_response_error (c, &resp, key, "looking up");
    r = -1;
  }
  else if (r == 0) {
    info->size = resp.content_length;
    snprintf (info->etag, sizeof info->etag, "%s", resp.etag);
    info->last_modified = resp.last_modified;
    info->now = resp.date;
    r = 1;
  }
  s3_response_free (&resp);
  return r;
}

int
s3_delete (struct s3_client *c, const char *key)
{
  struct s3_request req = { .method = "DELETE", .key = key };
  struct s3_response resp;
  int r = s3_send (c, &req, &resp);
  if (r == 0 && !ok (&resp) && resp.status != 404) {
    s3_response_error (c, &resp, key, "deleting");
    r = -1;
  }
  s3_response_free (&resp);
  return r;
}

/* A copy's answer is 200 with an <Error> body when it fails late. */
struct copy_result {
  bool error;
  bool done;
};

static int
on_copy_xml (const char *name, const char *text, void *opaque)
{
  (void) text;
  struct copy_result *cr = opaque;
  if (strcmp (name, "Error") == 0)
    cr->error = true;
  else if (strcmp (name, "CopyObjectResult") == 0)
    cr->done = true;
  return 0;
}

int
s3_copy (struct s3_client *c, const char *from, const char *to)
{
  char source[1400];
  snprintf (source, sizeof source, "x-amz-copy-source: /%s/%s",
            c->cfg->bucket, from);
  struct s3_request req = { .method = "PUT", .key = to,
                            .headers = { source }, .max_body = MAX_XML };
  struct s3_response resp;
  int r = s3_send (c, &req, &resp);
  struct copy_result cr = { 0 };
  if (r == 0 && ok (&resp) && resp.body)
    s3_xml_parse (resp.body, resp.len, on_copy_xml, &cr);
  if (r == 0 && (!ok (&resp) || cr.error || !cr.done)) {
    if (ok (&resp)) {
      /* It failed after its 200 was sent: the service's failure. */
      resp.status = 500;
      s3_response_parse_error (&resp);
    }
    char what[1300];
    snprintf (what, sizeof what, "copying to %s", to);
    /* A missing source is the usual 404; the target is only written. */
    s3_response_error (c, &resp, from, what);
    r = -1;
  }
  s3_response_free (&resp);
  return r;
}

/* ---- listing ---------------------------------------------------------- */

struct list_page {
  s3_list_cb cb;
  void *opaque;
  int stop;
  char key[1200];
  uint64_t size;
  bool truncated;
  char *next_token;
  bool bad;
};

static int
on_list_xml (const char *name, const char *text, void *opaque)
{
  struct list_page *p = opaque;
  if (strcmp (name, "Key") == 0)
    snprintf (p->key, sizeof p->key, "%s", text);
  else if (strcmp (name, "Size") == 0) {
    char *end;
    p->size = strtoull (text, &end, 10);
    if (*end)
      p->bad = true;
  }
  else if (strcmp (name, "Contents") == 0) {
    int r = p->cb (p->key, p->size, p->opaque);
    p->key[0] = '\0';
    p->size = 0;
    if (r != 0) {
      p->stop = r;
      return r;
    }
  }
  else if (strcmp (name, "IsTruncated") == 0)
    p->truncated = strcmp (text, "true") == 0;
  else if (strcmp (name, "NextContinuationToken") == 0) {
    free (p->next_token);
    p->next_token = strdup (text);
  }
  return 0;
}

int
s3_list (struct s3_client *c, const char *prefix, s3_list_cb cb,
         void *opaque)
{
  char *eprefix = escape (c, prefix);
  if (!eprefix)
    return -1;
  char *token = NULL;
  int r = 0;
  for (;;) {
    char *query, *etoken = token ? escape (c, token) : NULL;
    if (token && !etoken) {
      r = -1;
      break;
    }
    /* Parameters in byte order of their names, as the signature's
     * canonical request has them. */
    int n = etoken
      ? asprintf (&query, "continuation-token=%s&list-type=2&prefix=%s",
                  etoken, eprefix)
      : asprintf (&query, "list-type=2&prefix=%s", eprefix);
    free (etoken);
    if (n < 0) {
      set_nomem ();
      r = -1;
      break;
    }
    struct s3_request req = { .method = "GET", .query = query,
                              .max_body = MAX_XML };
    struct s3_response resp;
    r = s3_send (c, &req, &resp);
    free (query);
    struct list_page page = { .cb = cb, .opaque = opaque };
    char what[1300];
    snprintf (what, sizeof what, "listing '%s'", prefix);
    if (r == 0 && !ok (&resp)) {
      s3_response_error (c, &resp, NULL, what);
      r = -1;
    }
    else if (r == 0) {
      int x = resp.body ? s3_xml_parse (resp.body, resp.len, on_list_xml,
                                        &page) : -1;
      if (page.stop)
        r = page.stop;
      else if (x != 0 || page.bad ||
               (page.truncated && !page.next_token)) {
        char name[1200];
        set_invalid ("%s: %s: the service's answer is not a listing",
                     s3_object_name (c, NULL, name, sizeof name), what);
        r = -1;
      }
    }
    s3_response_free (&resp);
    free (token);
    token = page.next_token;
    if (r != 0 || !page.truncated)
      break;
  }
  free (token);
  free (eprefix);
  return r;
}

/* ---- multipart uploads ------------------------------------------------ */

struct text_of {
  const char *element;
  char *value;
};

static int
on_text_of (const char *name, const char *text, void *opaque)
{
  struct text_of *t = opaque;
  if (!t->value && strcmp (name, t->element) == 0)
    t->value = strdup (text);
  return 0;
}

int
s3_mpu_create (struct s3_client *c, const char *key, char **upload_id)
{
  struct s3_request req = { .method = "POST", .key = key,
                            .query = "uploads=", .max_body = MAX_XML };
  struct s3_response resp;
  int r = s3_send (c, &req, &resp);
  if (r == 0 && !ok (&resp)) {
    s3_response_error (c, &resp, key, "starting an upload");
    r = -1;
  }
  else if (r == 0) {
    struct text_of t = { .element = "UploadId" };
    if (!resp.body || s3_xml_parse (resp.body, resp.len, on_text_of, &t) != 0
        || !t.value || !t.value[0]) {
      free (t.value);
      char name[1200];
      set_invalid ("%s: the service's answer to starting an upload has no "
                   "upload id", s3_object_name (c, key, name, sizeof name));
      r = -1;
    }
    else
      *upload_id = t.value;
  }
  s3_response_free (&resp);
  return r;
}

static char *
part_query (struct s3_client *c, unsigned number, const char *upload_id)
{
  char *eid = escape (c, upload_id), *q = NULL;
  if (!eid)
    return NULL;
  int n = number
    ? asprintf (&q, "partNumber=%u&uploadId=%s", number, eid)
    : asprintf (&q, "uploadId=%s", eid);
  free (eid);
  if (n < 0) {
    set_nomem ();
    return NULL;
  }
  return q;
}

int
s3_mpu_upload_part (struct s3_client *c, const char *key,
                    const char *upload_id, unsigned number, const void *buf,
                    size_t len, char *etag)
{
  char *query = part_query (c, number, upload_id);
  if (!query)
    return -1;
  struct s3_request req = { .method = "PUT", .key = key, .query = query,
                            .body = buf, .body_len = len };
  struct s3_response resp;
  int r = s3_send (c, &req, &resp);
  free (query);
  char what[64];
  snprintf (what, sizeof what, "uploading part %u", number);
  if (r == 0 && !ok (&resp)) {
    s3_response_error (c, &resp, key, what);
    r = -1;
  }
  else if (r == 0 && !resp.etag[0]) {
    char name[1200];
    set_invalid ("%s: %s: the service's answer has no ETag",
                 s3_object_name (c, key, name, sizeof name), what);
    r = -1;
  }
  else if (r == 0)
    snprintf (etag, S3_ETAG_MAX, "%s", resp.etag);
  s3_response_free (&resp);
  return r;
}

/* An ETag as XML text: S3's are hex digits in quotes, but an escape
 * costs nothing. */
static int
append_escaped (char **p, size_t *room, const char *s)
{
  for (; *s; s++) {
    const char *e = *s == '&' ? "&amp;" : *s == '<' ? "&lt;"
      : *s == '>' ? "&gt;" : *s == '"' ? "&quot;" : NULL;
    size_t n = e ? strlen (e) : 1;
    if (n >= *room)
      return -1;
    memcpy (*p, e ? e : s, n);
    *p += n;
    *room -= n;
  }
  **p = '\0';
  return 0;
}

int
s3_mpu_complete (struct s3_client *c, const char *key,
                 const char *upload_id, const struct s3_part *parts,
                 size_t n)
{
  size_t size = 128 + n * (64 + 6 * S3_ETAG_MAX);
  char *xml = malloc (size), *p = xml;
  char *query = part_query (c, 0, upload_id);
  if (!xml || !query) {
    free (xml);
    free (query);
    if (!xml)
      set_nomem ();
    return -1;
  }
  size_t room = size;
  p += snprintf (p, room, "<CompleteMultipartUpload>");
  room = size - (size_t) (p - xml);
  for (size_t i = 0; i < n; i++) {
    int k = snprintf (p, room, "<Part><PartNumber>%u</PartNumber><ETag>",
                      parts[i].number);
    p += k;
    room -= (size_t) k;
    append_escaped (&p, &room, parts[i].etag);
    k = snprintf (p, room, "</ETag></Part>");
    p += k;
    room -= (size_t) k;
  }
  snprintf (p, room, "</CompleteMultipartUpload>");
  struct s3_request req = { .method = "POST", .key = key, .query = query,
                            .body = xml, .body_len = strlen (xml),
                            .max_body = MAX_XML };
  struct s3_response resp;
  int r = s3_send (c, &req, &resp);
  struct copy_result cr = { 0 };
  /* Like a copy, a completion can fail after its 200 has started. */
  if (r == 0 && ok (&resp) && resp.body)
    s3_xml_parse (resp.body, resp.len, on_copy_xml, &cr);
  if (r == 0 && (!ok (&resp) || cr.error)) {
    if (ok (&resp)) {
      resp.status = 500;
      s3_response_parse_error (&resp);
    }
    s3_response_error (c, &resp, key, "completing an upload");
    r = -1;
  }
  s3_response_free (&resp);
  free (query);
  free (xml);
  return r;
}

int
s3_mpu_abort (struct s3_client *c, const char *key, const char *upload_id)
{
  char *query = part_query (c, 0, upload_id);
  if (!query)
    return -1;
  struct s3_request req = { .method = "DELETE", .key = key, .query = query };
  struct s3_response resp;
  int r = s3_send (c, &req, &resp);
  free (query);
  if (r == 0 && !ok (&resp) && resp.status != 404) {
    s3_response_error (c, &resp, key, "abandoning an upload");
    r = -1;
  }
  s3_response_free (&resp);
  return r;
}

struct upload_page {
  s3_upload_list_cb cb;
  void *opaque;
  int stop;
  char key[1200];
  char id[512];
  bool truncated;
  char *next_key, *next_id;
};

static int
on_uploads_xml (const char *name, const char *text, void *opaque)
{
  struct upload_page *p = opaque;
  if (strcmp (name, "Key") == 0)
    snprintf (p->key, sizeof p->key, "%s", text);
  else if (strcmp (name, "UploadId") == 0)
    snprintf (p->id, sizeof p->id, "%s", text);
  else if (strcmp (name, "Upload") == 0) {
    int r = p->cb (p->key, p->id, p->opaque);
    if (r != 0) {
      p->stop = r;
      return r;
    }
  }
  else if (strcmp (name, "IsTruncated") == 0)
    p->truncated = strcmp (text, "true") == 0;
  else if (strcmp (name, "NextKeyMarker") == 0) {
    free (p->next_key);
    p->next_key = strdup (text);
  }
  else if (strcmp (name, "NextUploadIdMarker") == 0) {
    free (p->next_id);
    p->next_id = strdup (text);
  }
  return 0;
}

int
s3_mpu_list (struct s3_client *c, const char *prefix, s3_upload_list_cb cb,
             void *opaque)
{
  char *eprefix = escape (c, prefix);
  if (!eprefix)
    return -1;
  char *key_marker = NULL, *id_marker = NULL;
  int r = 0;
  for (;;) {
    char *ek = key_marker ? escape (c, key_marker) : NULL;
    char *ei = id_marker ? escape (c, id_marker) : NULL;
    char *query;
    int n = ek && ei
      ? asprintf (&query, "key-marker=%s&prefix=%s&upload-id-marker=%s"
                  "&uploads=", ek, eprefix, ei)
      : asprintf (&query, "prefix=%s&uploads=", eprefix);
    free (ek);
    free (ei);
    if (n < 0) {
      set_nomem ();
      r = -1;
      break;
    }
    struct s3_request req = { .method = "GET", .query = query,
                              .max_body = MAX_XML };
    struct s3_response resp;
    r = s3_send (c, &req, &resp);
    free (query);
    struct upload_page page = { .cb = cb, .opaque = opaque };
    if (r == 0 && !ok (&resp)) {
      s3_response_error (c, &resp, NULL, "listing uploads");
      r = -1;
    }
    else if (r == 0) {
      int x = resp.body ? s3_xml_parse (resp.body, resp.len, on_uploads_xml,
                                        &page) : -1;
      if (page.stop)
        r = page.stop;
      else if (x != 0 || (page.truncated &&
                          (!page.next_key || !page.next_id))) {
        char name[1200];
        set_invalid ("%s: the service's list of uploads cannot be read",
                     s3_object_name (c, NULL, name, sizeof name));
        r = -1;
      }
    }
    s3_response_free (&resp);
    free (key_marker);
    free (id_marker);
    key_marker = page.next_key;
    id_marker = page.next_id;
    if (r != 0 || !page.truncated)
      break;
  }
  free (key_marker);
  free (id_marker);
  free (eprefix);
  return r;
}
