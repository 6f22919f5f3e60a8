/* libcurl, loaded at run time by the S3 client and by nothing else.
 *
 * Linking libcurl would load it, and the 30-odd libraries it needs
 * (TLS, Kerberos, LDAP, HTTP/2, ...), into every start of every program
 * on libqbak, though only S3 repositories use it: libqbak does not link
 * it, and the first S3 client loads it here (dlopen), once per process.
 * <curl/curl.h> is used for its types only; every call goes through the
 * table below, whose members are libcurl's functions without their
 * "curl_" prefix (easy_setopt is curl_easy_setopt).
 *
 * In test builds (QBAK_FAILPOINTS) QBAK_S3_LIBCURL, a ':'-separated list
 * of library names, replaces the names tried, so tests can make the load
 * fail (a name that does not exist) or fall back.
 */
#ifndef QBAK_COMMON_S3_CURL_H
#define QBAK_COMMON_S3_CURL_H

#include <curl/curl.h>
#include <time.h>

struct s3_curl {
  CURLcode (*global_init) (long flags);
  CURL *(*easy_init) (void);
  /* Variadic, as in libcurl: the value's type must be the one the
   * option wants (long, a pointer, curl_off_t), as always with curl. */
  CURLcode (*easy_setopt) (CURL *h, CURLoption opt, ...);
  CURLcode (*easy_getinfo) (CURL *h, CURLINFO info, ...);
  CURLcode (*easy_perform) (CURL *h);
  void (*easy_reset) (CURL *h);
  void (*easy_cleanup) (CURL *h);
  const char *(*easy_strerror) (CURLcode rc);
  char *(*easy_escape) (CURL *h, const char *s, int len);
  void (*free) (void *p);
  time_t (*getdate) (const char *date, const time_t *unused);
  struct curl_slist *(*slist_append) (struct curl_slist *list,
                                      const char *line);
  void (*slist_free_all) (struct curl_slist *list);
};

/* libcurl's functions, after curl_global_init: loaded on the first call
 * in the process, the same table (or the same failure) after that.  NULL
 * when it cannot be loaded, with the error set for LOCATION (the s3://
 * location that needs it): STATUS_USAGE with the errno ELIBACC, like
 * missing credentials, what the system lacks rather than what the
 * command line got wrong; or STATUS_IO when curl_global_init fails. */
const struct s3_curl *s3_curl_load (const char *location);

/* The table s3_curl_load returned, for code that runs only on a client
 * made after a successful load (never NULL there). */
const struct s3_curl *s3_curl (void);

#endif
