/* lib/ internal: the context of errors, the public call that failed.
 *
 * Every public function that can fail starts with
 *
 *   api_enter (__func__);
 *
 * and every error set on this thread until it returns, on any path,
 * carries its name (qbak_get_error_context).  A public call made by
 * another (qbak_image_open by qbak_copy) leaves the outer name in place:
 * the context is the call the program made.  The name is kept beside the
 * message, never in it, so messages read the same whoever called. */
#ifndef QBAK_LIB_API_H
#define QBAK_LIB_API_H

#include <stddef.h>

#include "common/error.h"

static inline void
api_leave (const char **outer)
{
  error_leave (*outer);
}

/* A declaration: once per function, before anything that can fail.  The
 * cleanup runs when the function returns, whichever return it is. */
#define api_enter(name)                                                 \
  const char *api_outer_ __attribute__ ((cleanup (api_leave), unused)) \
    = error_enter (name)

/* Can the library honour SIZE, the sizeof a caller gave for the structure
 * WHAT that it knows as KNOWN bytes (include/qbak.h: Growth)?  0, or -1
 * with a usage error. */
static inline int
api_check_size (size_t size, size_t known, const char *what)
{
  if (size < sizeof (size_t) || size > known) {
    set_usage_error ("struct %s: size %zu is not one this library knows "
                     "(%zu at most; set it with %s_init)", what, size, known,
                     what);
    return -1;
  }
  return 0;
}

#endif
