/* lib/ internal: verifying one backup file of a repository by itself,
 * without the source: its structure (what qemu-img check checks), its
 * link to its parent (what the record says the chain is), and, when it
 * has a manifest, its data cluster by cluster.
 *
 * What is wrong with the file is not an error of the call: each problem
 * goes to the sink, and the call returns 0.  Only what stops the
 * verification itself (no memory, a cancel) returns -1.
 */
#ifndef QBAK_LIB_VERIFY_FILE_H
#define QBAK_LIB_VERIFY_FILE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/storage.h"
#include "formats/image.h"

/* What the record says the file is. */
struct verify_file_expect {
  const char *key;              /* the file's key in the repository */
  const char *parent;           /* its parent point's id, or NULL (a full) */
  uint64_t virtual_size;
  uint64_t cluster_size;
  const char *manifest;         /* the manifest's key, or NULL */
  const char *manifest_digest;
  unsigned sample_percent;      /* 1..99: that share of data clusters;
                                   0: every one */
};

/* Where the findings go.  PROBLEM: the file is not what the record says
 * (at guest offset OFFSET when HAS_OFFSET).  NOTE: something a reader
 * should know that is no problem ("no manifest").  PROGRESS: bytes of the
 * file read since the last call. */
struct verify_sink {
  void (*problem) (void *opaque, bool has_offset, uint64_t offset,
                   const char *what);
  void (*note) (void *opaque, const char *what);
  void (*progress) (void *opaque, uint64_t bytes);
  void *opaque;
  volatile int *cancel;
};

/* At most this many problems of one file are told with their offset; the
 * rest are counted in one last problem. */
#define VERIFY_PROBLEMS_MAX 10

struct verify_file_result {
  bool failed;
  bool data_checked;            /* a manifest was there and was compared */
  uint64_t clusters_checked;
};

int verify_file (struct storage *st, const struct verify_file_expect *e,
                 const struct verify_sink *sink,
                 struct verify_file_result *res);

/* verify-data.c: compare the layer IMG (the file itself, opened without
 * its backing file) with the manifest in MANIFEST (the storage's object,
 * owned from now on and closed).  Problems go to
 * SINK; RES->clusters_checked counts the data clusters read.  -1 only for
 * what stops the verification (no memory, a cancel). */
int verify_file_data (struct image *img, const struct verify_file_expect *e,
                      struct qbak_file *manifest,
                      const struct verify_sink *sink,
                      struct verify_file_result *res);

/* A problem with a formatted text; marks RES failed. */
void verify_problem (const struct verify_sink *sink,
                     struct verify_file_result *res, bool has_offset,
                     uint64_t offset, const char *fmt, ...)
  __attribute__ ((format (printf, 5, 6)));

/* Whether the verification was asked to stop; sets STATUS_CANCELLED. */
bool verify_cancelled (const struct verify_sink *sink, const char *what);

#endif
