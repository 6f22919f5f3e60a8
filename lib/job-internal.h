/* lib/ internal: the state of one backup job, shared by the files that
 * make up the job (job.c: the stages; job-args.c: the argument rules;
 * job-companion.c: the companion bitmaps; copy-loop.c: the copy).  The
 * group sees only job.h. */
#ifndef QBAK_LIB_JOB_INTERNAL_H
#define QBAK_LIB_JOB_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include "lib/job.h"
#include "lib/target.h"

/* The largest request the copy loop reads and writes at once. */
#define COPY_REQUEST_BYTES (8u << 20)

/* A companion of the job's bitmap: a disabled bitmap that records what an
 * interrupted bitmap-mode 'always' job had to copy, while its partial
 * target holds part of it and the job's bitmap holds only the rest. */
struct companion {
  const char *name;      /* owned by the image's bitmap list */
  struct qcow2_bitmap *b;
};

struct copy_job {
  const struct qbak_copy_opts *o;
  struct qbak_copy_result *res;
  enum qbak_bitmap_mode mode;
  struct qbak_image *src;
  struct image *img;
  const struct qcow2_bitmap *bitmap;
  struct dirty_bitmap *sync_set;
  struct dirty_bitmap *copy_set;
  struct dirty_bitmap *successor;
  struct target tgt;
  char *part_path;
  int spare_fd;          /* room kept for finishing a partial target */
  struct companion *companions;
  size_t n_companions;
  uint8_t job_id[TARGET_PARTIAL_ID_BYTES];  /* this job's partial mark */
  uint32_t cs;
  uint8_t *buf;
  double t0;
  struct job_in_place *place;   /* or NULL */
  const struct job_source *source;      /* or NULL: o->source by path */
  double last_checkpoint;       /* when the in-place target was last made
                                   durable (or the copy began) */
  double checkpoint_cost;       /* how long that took */
  bool checkpointed;            /* the in-place target is a valid image */
  struct manifest_writer *manifest;  /* the target's, or NULL */
  uint64_t *hashes;             /* COPY_REQUEST_BYTES / cs: a request's
                                   cluster hashes (checksum mode) */
  struct qbak_image *ref;       /* sync checksums: the backing file's chain,
                                   read to compare with */
  uint8_t *ref_buf;             /* a request of it */
  uint64_t *put_hashes;         /* with a manifest: a request's cluster
                                   hashes (COPY_REQUEST_BYTES / cs) */
};

/* copy-loop.c: put [POS, +LEN) of BUF (or zeroes if BUF is NULL) into the
 * target and its manifest.  The caller updates the copy set. */
int job_put (struct copy_job *j, uint64_t pos, const uint8_t *buf,
             uint64_t len, const uint64_t *hashes);

/* copy-checksums.c: copy [OFF, +LEN) of the copy set, writing only the
 * clusters that differ from the reference view. */
int job_copy_range_checksums (struct copy_job *j, uint64_t off,
                              uint64_t len);

/* job-args.c: QEMU's rules for the options, checked before anything is
 * opened; sets *MODE to the bitmap mode the job runs with. */
int job_check_args (const struct qbak_copy_opts *o,
                    enum qbak_bitmap_mode *mode);
/* The rules that need the source opened first (its refusals say more). */
int job_check_chain_args (const struct qbak_copy_opts *o);
/* Whether the file ST is the source or any file its chain reads. */
bool job_is_source_file (const struct copy_job *j, const struct stat *st);
/* The previous backup named as the target's backing file; sets *FORMAT
 * to the format to record in the target. */
int job_check_backing (struct copy_job *j, const char **format);

/* job-companion.c */
/* Find the companions of the job's bitmap in the source. */
int job_find_companions (struct copy_job *j);
/* The name of the companion of bitmap BITMAP for the job ID. */
void job_companion_name (const char *bitmap, const uint8_t *id, char *buf,
                         size_t size);

#endif
