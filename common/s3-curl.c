/* libcurl loaded on first use (s3-curl.h). */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/s3-curl.h"

/* libcurl's ABI has been soname version 4 since 2006, and Debian ships
 * it in flavours that differ only in their TLS library, each a package
 * and a soname of its own: libcurl4 (OpenSSL, libcurl.so.4, what the
 * headers we build with come from and what other systems call
 * libcurl.so.4 too), libcurl3-gnutls (libcurl-gnutls.so.4, often the
 * one already installed, for git and apt's tools) and, on older
 * releases, libcurl3-nss (libcurl-nss.so.4).  Any of them will do. */
static const char *const default_names = "libcurl.so.4:libcurl-gnutls.so.4:"
  "libcurl-nss.so.4";

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static struct s3_curl table;
static bool loaded;
/* Why the load failed: dlerror's text for the first name tried (the one
 * to install), or what curl_global_init said. */
static char why[512];
static CURLcode init_result = CURLE_OK;

static const char *
names_to_try (void)
{
#ifdef QBAK_FAILPOINTS
  const char *v = getenv ("QBAK_S3_LIBCURL");
  if (v && *v)
    return v;
#endif
  return default_names;
}

/* The handle of the first of NAMES (':'-separated) that dlopen loads, or
 * NULL with WHY set from the first failure. */
static void *
open_first (const char *names)
{
  const char *p = names;
  why[0] = '\0';
  while (*p) {
    size_t n = strcspn (p, ":");
    char name[256];
    if (n > 0 && n < sizeof name) {
      memcpy (name, p, n);
      name[n] = '\0';
      /* RTLD_NOW: a libcurl lacking a function fails here, not in the
       * middle of a backup; RTLD_LOCAL: its names stay out of the
       * program's. */
      void *h = dlopen (name, RTLD_NOW | RTLD_LOCAL);
      if (h)
        return h;
      if (!why[0])
        snprintf (why, sizeof why, "%s", dlerror ());
    }
    p += n;
    if (*p == ':')
      p++;
  }
  if (!why[0])
    snprintf (why, sizeof why, "no library name to try");
  return NULL;
}

/* Point *SLOT at the function NAME of H; false with WHY set if H lacks it. */
static bool
resolve (void *h, const char *name, void *slot)
{
  dlerror ();
  void *f = dlsym (h, name);
  if (!f) {
    const char *e = dlerror ();
    snprintf (why, sizeof why, "%s", e ? e : name);
    return false;
  }
  /* POSIX guarantees that a function's address survives the trip
   * through void * (dlsym could not work otherwise). */
  memcpy (slot, &f, sizeof f);
  return true;
}

static void
load (void)
{
  void *h = open_first (names_to_try ());
  if (!h)
    return;
  struct s3_curl t;
#define RESOLVE(member) resolve (h, "curl_" #member, &t.member)
  if (!(RESOLVE (global_init) && RESOLVE (easy_init) &&
        RESOLVE (easy_setopt) && RESOLVE (easy_getinfo) &&
        RESOLVE (easy_perform) && RESOLVE (easy_reset) &&
        RESOLVE (easy_cleanup) && RESOLVE (easy_strerror) &&
        RESOLVE (easy_escape) && RESOLVE (free) && RESOLVE (getdate) &&
        RESOLVE (slist_append) && RESOLVE (slist_free_all))) {
    dlclose (h);
    return;
  }
#undef RESOLVE
  /* Once per process, before any handle (libcurl asks for that), and
   * never undone: the library stays loaded until the process ends, as
   * a linked one would, since a TLS library's cleanup while another
   * thread or library still uses it is worse than none. */
  init_result = t.global_init (CURL_GLOBAL_DEFAULT);
  if (init_result != CURLE_OK) {
    snprintf (why, sizeof why, "%s", t.easy_strerror (init_result));
    return;
  }
  table = t;
  loaded = true;
}

const struct s3_curl *
s3_curl_load (const char *location)
{
  pthread_once (&load_once, load);
  if (loaded)
    return &table;
  if (init_result != CURLE_OK)
    qbak_internal_error (STATUS_IO, 0, "%s: cannot start libcurl: %s",
                         location, why);
  else
    /* The system's fault, not the command line's: the errno keeps the
     * program from pointing at --help, as for missing credentials. */
    qbak_internal_error_errno_only (STATUS_USAGE, ELIBACC,
                                    "%s: S3 repositories need libcurl, "
                                    "which could not be loaded (%s); "
                                    "install libcurl4", location, why);
  return NULL;
}

const struct s3_curl *
s3_curl (void)
{
  return &table;
}
