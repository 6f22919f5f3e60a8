/* lib/ internal: the target of a backup job.  Each target format has one
 * writer behind struct target_ops (target-qcow2.c, target-raw.c), chosen
 * once from the job's target format; the job then never asks which format
 * it writes.  target.c holds what every format shares: the file (made
 * anonymous where the file system allows, so that a crash leaves nothing
 * behind), its second descriptor, and dropping it. */
#ifndef QBAK_LIB_TARGET_H
#define QBAK_LIB_TARGET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qbak.h"
#include "common/fileio.h"

/* The id of a job that marks its partial target: the length of the mark
 * the qcow2 writer stores (formats/qcow2.h, QCOW2_PARTIAL_ID_BYTES; an
 * on-disk format, so it never changes). */
#define TARGET_PARTIAL_ID_BYTES 16

/* What a target was made for. */
struct target_shape {
  uint64_t size;                /* virtual size */
  uint32_t cluster_size;
  const char *backing_name;     /* stored as given, or NULL */
  const char *backing_format;   /* or NULL */
};

/* A format's writer, W being its own state. */
struct target_ops {
  /* Whether a failed job can keep the target as a partial and continue
   * it later: the format can carry the job's mark and be reopened. */
  bool resumable;
  /* A writer for FILE, a new empty file (owned from here on, closed on
   * error too).  NULL with the error set. */
  void *(*create) (struct qbak_file *file, const struct target_shape *shape);
  /* The writer of the partial target at PATH, and what it was made for
   * (strings are W's): resumable formats only. */
  void *(*reopen) (const char *path);
  void (*get_shape) (const void *w, struct target_shape *shape);
  int (*fd) (const void *w);
  /* Guest data, then known zeroes, in increasing offset order (see the
   * writers in formats/); on error nothing changed. */
  int (*write) (void *w, uint64_t off, const void *buf, size_t len);
  int (*zero) (void *w, uint64_t off, uint64_t len);
  /* Mark the target, from the next finish on, as the partial of the job
   * ID, or clear the mark (ID NULL); read it back (false: none).  NULL
   * for formats that are not resumable. */
  void (*set_partial_id) (void *w, const uint8_t *id);
  bool (*get_partial_id) (const void *w, uint8_t *id);
  /* Make the target durable.  Once. */
  int (*finish) (void *w);
  /* Make what was written so far durable and valid, and go on writing
   * (resumable formats only). */
  int (*checkpoint) (void *w);
  /* Free W and close its file, finished or not. */
  void (*close) (void *w);
};

extern const struct target_ops target_qcow2_ops;
extern const struct target_ops target_raw_ops;

struct target {
  const struct target_ops *ops;
  void *w;               /* the writer, or NULL (not made, or closed) */
  const char *name;      /* the final name, for messages */
  const char *part_path; /* TARGET.part */
  bool has_backing;
  bool reopened;         /* a partial continued (resume) */
  int fd;                /* a second descriptor of the target file, so it
                            outlives its writer until it is linked into
                            place (-1: none) */
  bool anonymous;        /* the file has no name yet (O_TMPFILE) */
  bool named_by_us;      /* TARGET.part is the file this job created */
  bool in_place;         /* written at its own name from the start (never
                            anonymous), for jobs that checkpoint */
  bool explicit_zeroes;  /* every zero cluster is stored, so that what
                            the target holds tells what was copied */
  /* A storage object (common/storage.h), written in one pass: committed
   * by target_finish, aborted by target_drop.  OBJECT is the writer's
   * file (valid while W is). */
  struct storage *object_st;
  struct qbak_file *object;
  bool object_committed;
};

/* T, empty, for a target in FORMAT named NAME, written as PART_PATH
 * (both borrowed for T's life). */
void target_init (struct target *t, enum qbak_target_format format,
                  const char *name, const char *part_path);
/* Make a new target file and its writer. */
int target_create (struct target *t, const struct target_shape *shape);
/* Make a new target on FILE, a new object of ST from
 * storage_create_object (owned from here on): no name, no descriptor,
 * no checkpoints; it becomes the object when finished. */
struct storage;
int target_create_object (struct target *t, struct storage *st,
                          struct qbak_file *file,
                          const struct target_shape *shape);
/* Open the existing partial target PART_PATH to continue it (resumable
 * formats only). */
int target_reopen (struct target *t);
void target_get_shape (const struct target *t, struct target_shape *shape);
bool target_get_partial_id (const struct target *t, uint8_t *id);
void target_set_partial_id (struct target *t, const uint8_t *id);
int target_write (struct target *t, uint64_t off, const void *buf,
                  size_t len);
int target_zero (struct target *t, uint64_t off, uint64_t len);
int target_finish (struct target *t);
/* Make the target durable as it stands (with its partial mark) and keep
 * writing. */
int target_checkpoint (struct target *t);
/* Free the writer (the second descriptor stays). */
void target_close (struct target *t);
/* Forget the target file: an anonymous one disappears with its last
 * descriptor; a named one is removed only if this job created it. */
void target_drop (struct target *t);

#endif
