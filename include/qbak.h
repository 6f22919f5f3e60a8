/* libqbak: the public API of qbak.
 *
 * qbak backs up qcow2 and raw disk images offline from the persistent
 * dirty bitmaps that QEMU keeps in qcow2 metadata.  This header is the only
 * one installed.  The library never prints and never exits.
 *
 * Errors.  Every call that can fail returns -1 (or NULL) and leaves one
 * error in thread-local storage: qbak_get_error() for its message, "file:
 * what is wrong", in the library's own terms (it names no flag or command
 * of any program); qbak_get_status() for its class, which a program maps
 * to its exit code; qbak_get_error_hint() for what the caller can do
 * about it, for a program to put in its own words; qbak_get_errno() for
 * the errno behind it, if any; qbak_get_error_context() for the name of
 * the call that failed.
 *
 * Threads.  Errors are per thread: a call reports its error on the thread
 * that made it, and another thread's calls never change it.  A handle
 * (struct qbak_image) is used by one thread at a time, and so are the
 * handles of its backing chain (qbak_image_backing), which share its
 * files; the images given to qbak_bitmap_apply, its merge source
 * included, are all in use until it returns.  Calls on unrelated handles
 * may run at the same time on different threads, as may qbak_copy and
 * qbak_copy_group, which open handles of their own.  An image open twice,
 * in one process or in two, is locked twice, as by two QEMUs: a second
 * writer, or a reader of an image being written (without
 * QBAK_OPEN_FORCE_SHARE), is refused (QBAK_STATUS_BUSY).
 *
 * Lifetimes.  Each function says how long a pointer it returns or fills
 * in stays valid; the library never frees what the caller owns.
 *
 * Growth.  The structures of images, maps and bitmaps start with their
 * size, so that they can grow (fields are only ever added at the end)
 * without breaking a program built against an older header.  A structure
 * the caller fills or passes in carries the caller's sizeof: set it with
 * the qbak_..._init function (inline, so it is the caller's sizeof) or
 * with a designated initializer { .size = sizeof (struct qbak_...) }.
 * The library reads and writes no byte past the caller's size, and
 * refuses a size of 0 or one larger than it knows (QBAK_STATUS_USAGE).  A
 * structure the library passes to a callback carries the library's size:
 * fields past the size a program knows are simply ones it was built
 * without.
 *
 * The API is young (0.x): functions may still change between releases.
 */
#ifndef QBAK_H
#define QBAK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(QBAK_BUILDING_LIB)
#define QBAK_API __attribute__((visibility("default")))
#else
#define QBAK_API
#endif

/* Status classes of an error.  The values are stable across releases
 * but are not exit codes: a program maps them to its own (the qbak tool
 * does in cli/errors.c). */
enum qbak_status {
  QBAK_STATUS_OK = 0,
  QBAK_STATUS_IO = 1,          /* the operation failed: I/O error, no space */
  QBAK_STATUS_USAGE = 2,       /* bad argument */
  QBAK_STATUS_INVALID = 3,     /* unusable input: corrupt, unsupported */
  QBAK_STATUS_BUSY = 4,        /* locked by another process */
  QBAK_STATUS_MISMATCH = 5,    /* verification found a difference */
  QBAK_STATUS_CANCELLED = 6,   /* interrupted on request */
};

/* What a caller can do about the last error, for a program to turn into
 * its own words (flags, commands): the message itself says only what is
 * wrong.  Values are added at the end. */
enum qbak_hint {
  QBAK_HINT_NONE = 0,
  /* no bitmap of that name: list the image's bitmaps */
  QBAK_HINT_LIST_BITMAPS,
  /* the sync or bitmap mode needs a bitmap named */
  QBAK_HINT_NEED_BITMAP,
  /* a bitmap was named without a bitmap mode */
  QBAK_HINT_NEED_BITMAP_MODE,
  /* a backing file was both given and refused */
  QBAK_HINT_BACKING_CONFLICT,
  /* a backing format was given without a backing file */
  QBAK_HINT_BACKING_FORMAT_ALONE,
  /* an incremental needs a backing file, or no_backing */
  QBAK_HINT_NEED_BACKING,
  /* an interrupted job's partial target is there: resume it */
  QBAK_HINT_PARTIAL_EXISTS,
  /* the backing file was read as qcow2: give its format */
  QBAK_HINT_BACKING_FORMAT_GUESSED,
  /* the partial is not this job's: remove it, do not resume */
  QBAK_HINT_NOT_OUR_PARTIAL,
  /* the partial was made for other options: do not resume */
  QBAK_HINT_PARTIAL_OF_OTHER_JOB,
  /* the failed job kept its partial: resume the job to finish */
  QBAK_HINT_RESUME_TO_FINISH,
  /* the failed job changed nothing: run the same job again */
  QBAK_HINT_RUN_AGAIN,
  /* the failed resumed job changed nothing: resume it again */
  QBAK_HINT_RESUME_AGAIN,
  /* a companion bitmap is in use: remove it, back up in full */
  QBAK_HINT_REMOVE_IN_USE_COMPANION,
  /* Another process uses the image (QBAK_STATUS_BUSY): stop it, or read
   * with QBAK_OPEN_FORCE_SHARE.  LOCKED: it holds a lock byte exclusively
   * (qbak_get_errno() says how the lock was refused; the message does
   * not); PERMISSION_HELD: it holds, or does not share, a permission
   * this open needs. */
  QBAK_HINT_IMAGE_LOCKED,
  QBAK_HINT_IMAGE_PERMISSION_HELD,
  /* A bitmap is in use: the program that wrote it did not close the
   * image, so it may have missed writes.  Start a new chain: remove the
   * bitmap, add it again, back up in full.  Subjects: the image (0) and
   * the bitmap (1). */
  QBAK_HINT_BITMAP_IN_USE,
};

/* The last error of this thread: its message ("file: what is wrong"; a
 * string valid until the next error on this thread or
 * qbak_clear_error), hint, status (never QBAK_STATUS_OK after a failure)
 * and errno (0 if none). */
QBAK_API const char *qbak_get_error (void);
QBAK_API enum qbak_hint qbak_get_error_hint (void);
/* What the last error's hint is about, for advice that names it: subject
 * 0 is a file, subject 1 a bitmap (see each hint).  NULL if the hint has
 * no such subject.  Valid until the next error on this thread. */
QBAK_API const char *qbak_get_error_hint_subject (unsigned i);
/* The public call that set the last error of this thread (for instance
 * "qbak_bitmap_apply"; the outer one when a call makes another), or NULL
 * (no error, or one set outside any call).  A static string, valid for
 * the life of the library.  Kept beside the message, never in it. */
QBAK_API const char *qbak_get_error_context (void);
QBAK_API enum qbak_status qbak_get_status (void);
QBAK_API int qbak_get_errno (void);
QBAK_API void qbak_clear_error (void);
/* The library's version, "MAJOR.MINOR.PATCH": a static string. */
QBAK_API const char *qbak_version (void);

/* ---- Images ---------------------------------------------------------- */

struct qbak_image;

enum qbak_open_flags {
  QBAK_OPEN_READ = 0,
  QBAK_OPEN_WRITE = 1,        /* metadata writes (bitmaps); takes write locks */
  QBAK_OPEN_FORCE_SHARE = 2,  /* read without taking QEMU's locks (what
                                 qemu-img calls force-share): the image may
                                 change under the reader */
  QBAK_OPEN_NO_BACKING = 4,   /* open no file the image names (backing
                                 chain, external data file): metadata only */
  QBAK_OPEN_INSPECT = 8,      /* allow images marked corrupt (info, map) */
};

/* Open PATH (format probed by content: qcow2, qcow v1 or raw) with its
 * backing chain.  Returns a handle the caller owns (qbak_image_close), or
 * NULL on error.  PATH is copied. */
QBAK_API struct qbak_image *qbak_image_open (const char *path, unsigned flags)
  __attribute__((nonnull (1)));
/* The same, requiring FORMAT ("qcow2", "qcow" or "raw") of PATH instead of
 * probing (qemu-img's -f): a file that is not in that format is refused
 * (QBAK_STATUS_INVALID).  FORMAT NULL probes. */
QBAK_API struct qbak_image *qbak_image_open_format (const char *path,
                                                    const char *format,
                                                    unsigned flags)
  __attribute__((nonnull (1)));
/* Close an image and its chain: every pointer the library returned for it
 * or for a layer of its chain becomes invalid.  Accepts NULL. */
QBAK_API void qbak_image_close (struct qbak_image *img);

/* The next image of the backing chain of IMG: 1 with *BACKING set, 0 if
 * IMG has none (or was opened with QBAK_OPEN_NO_BACKING), -1 on error
 * (*BACKING is NULL then).  *BACKING is owned by IMG and valid until the
 * top image of the chain is closed; never close it. */
QBAK_API int qbak_image_backing (struct qbak_image *img,
                                 struct qbak_image **backing)
  __attribute__((nonnull (1, 2)));

/* Whether a qcow2 image's external data file is also a raw image of the
 * guest disk by itself. */
enum qbak_data_file_mode {
  QBAK_DATA_FILE_NONE = 0,      /* no external data file */
  QBAK_DATA_FILE_PLAIN,         /* guest data only through the qcow2
                                   metadata (qemu-img data_file_raw=off) */
  QBAK_DATA_FILE_RAW,           /* the data file reads as the guest disk at
                                   the same offsets (data_file_raw=on) */
};

struct qbak_image_info {
  size_t size;                   /* the caller's sizeof: qbak_image_info_init */
  const char *filename;          /* as opened */
  const char *format;            /* "qcow2", "qcow", "raw" */
  uint64_t virtual_size;
  uint64_t file_size;            /* bytes of the image file */
  uint32_t cluster_size;         /* 0 for raw */
  uint32_t qcow2_version;        /* 2 or 3 (qcow2 only, else 0) */
  uint32_t refcount_bits;
  const char *compression_type;  /* "zlib", "zstd" or NULL */
  bool extended_l2;
  bool lazy_refcounts;
  bool corrupt;                  /* incompatible bit 1: QEMU refuses to
                                    write it until repaired */
  bool dirty;                    /* incompatible bit 0: not closed cleanly,
                                    refcounts may be stale */
  bool bitmaps_consistent;       /* autoclear bit 0: false when a program
                                    without bitmap support wrote the image
                                    (its bitmaps are stale) */
  const char *backing_filename;  /* as stored in the image, or NULL */
  const char *backing_full;      /* resolved path, or NULL */
  const char *backing_format;    /* from the extension, or NULL */
  const char *data_file;         /* external data file as stored, or NULL */
  enum qbak_data_file_mode data_file_mode;
  const char *data_file_full;    /* data_file resolved as qemu-img does */
  uint64_t incompatible_features, compatible_features, autoclear_features;
};

static inline void
qbak_image_info_init (struct qbak_image_info *info)
{
  memset (info, 0, sizeof *info);
  info->size = sizeof *info;
}

/* Fill INFO (INFO->size bytes of it: qbak_image_info_init).  Its strings
 * are owned by IMG and valid until qbak_image_close of IMG's chain.
 * Returns -1 only for a bad INFO->size (QBAK_STATUS_USAGE). */
QBAK_API int qbak_image_get_info (struct qbak_image *img,
                                  struct qbak_image_info *info)
  __attribute__((nonnull (1, 2)));

/* ---- Allocation map (qemu-img map semantics) ------------------------- */

struct qbak_map_extent {
  size_t size;        /* the library's sizeof (see Growth above) */
  uint64_t start, length;
  int depth;          /* layer where the data was found (0 = top) */
  bool present;       /* allocated somewhere in the chain */
  bool zero;          /* reads as zeroes */
  bool data;          /* has data (not only zero) */
  bool offset_valid;  /* offset below is meaningful */
  uint64_t offset;    /* host offset in the layer's file (or data file) */
};

/* EXT is valid only during the call. */
typedef int (*qbak_map_cb) (const struct qbak_map_extent *ext, void *opaque);

/* Walk [start, start+length) and call CB for maximal extents with equal
 * fields (offsets contiguous).  A non-zero return from CB stops the walk
 * and is returned. */
QBAK_API int qbak_image_map (struct qbak_image *img, uint64_t start,
                             uint64_t length, qbak_map_cb cb, void *opaque);

/* Read COUNT guest bytes at OFFSET into BUF through the backing chain. */
QBAK_API int qbak_image_pread (struct qbak_image *img, void *buf,
                               uint64_t count, uint64_t offset);

/* ---- Persistent dirty bitmaps ----------------------------------------- */

struct qbak_bitmap_info {
  size_t size;        /* the caller's sizeof: qbak_bitmap_info_init */
  const char *name;
  uint64_t granularity;
  bool in_use;        /* the writer did not close the image: unusable */
  bool enabled;       /* "auto": records guest writes */
  bool dirty_known;   /* false for in_use bitmaps (data never read) */
  uint64_t dirty_bytes;
};

static inline void
qbak_bitmap_info_init (struct qbak_bitmap_info *info)
{
  memset (info, 0, sizeof *info);
  info->size = sizeof *info;
}

/* Number of bitmaps of IMG (0 for images that cannot hold any). */
QBAK_API size_t qbak_bitmap_count (struct qbak_image *img);
/* Fill INFO (INFO->size bytes of it) for bitmap I; returns -1 if I is out
 * of range or the size is bad (QBAK_STATUS_USAGE), or the bitmap's table
 * cannot be read.  INFO->name is owned by IMG and valid until
 * qbak_image_close or a qbak_bitmap_apply on IMG. */
QBAK_API int qbak_bitmap_get_info (struct qbak_image *img, size_t i,
                                   struct qbak_bitmap_info *info);

struct qbak_bitmap_extent {
  size_t size;        /* the library's sizeof (see Growth above) */
  uint64_t start, length;
  bool dirty;
};
/* EXT is valid only during the call. */
typedef int (*qbak_bitmap_extent_cb) (const struct qbak_bitmap_extent *ext,
                                      void *opaque);

/* Walk the bitmap NAME over [0, virtual size), calling CB for maximal runs
 * of equal state.  Refuses (QBAK_STATUS_INVALID) an in_use bitmap.  A
 * non-zero return from CB stops the walk and is returned. */
QBAK_API int qbak_bitmap_extents (struct qbak_image *img, const char *name,
                                  qbak_bitmap_extent_cb cb, void *opaque);

/* ---- Changing bitmaps ------------------------------------------------- */

enum qbak_bitmap_op_kind {
  QBAK_BITMAP_ADD,
  QBAK_BITMAP_REMOVE,
  QBAK_BITMAP_CLEAR,
  QBAK_BITMAP_ENABLE,
  QBAK_BITMAP_DISABLE,
  QBAK_BITMAP_MERGE,
};

struct qbak_bitmap_op {
  size_t size;                    /* the caller's sizeof: qbak_bitmap_op_init */
  enum qbak_bitmap_op_kind kind;
  const char *name;               /* the bitmap (merge: the destination) */
  uint64_t granularity;           /* add: 0 = QEMU's default */
  bool disabled;                  /* add: created without the "auto" flag,
                                     so it records no guest writes until
                                     enabled */
  const char *const *sources;     /* merge: bitmaps ORed into NAME */
  size_t n_sources;
  struct qbak_image *source_image; /* merge: where SOURCES are (NULL: the
                                      image itself) */
};

static inline void
qbak_bitmap_op_init (struct qbak_bitmap_op *op)
{
  memset (op, 0, sizeof *op);
  op->size = sizeof *op;
}

/* Apply OPS, in order, to every image of IMAGES (opened with
 * QBAK_OPEN_WRITE) as one transaction: every operation is checked on every
 * image before anything is written (QEMU's rules: names 1..1023 bytes and
 * unique, in_use bitmaps can only be removed, ...); then each image is
 * committed crash-safely; if one fails, those already committed are put
 * back.  The result is all or none.  OPS is an array of structures of
 * OPS[0].size bytes each, every one with that size.  Nothing the caller
 * passes is kept after the call; bitmap names and infos obtained from the
 * images before it are invalid after it. */
QBAK_API int qbak_bitmap_apply (struct qbak_image *const *images,
                                size_t n_images,
                                const struct qbak_bitmap_op *ops,
                                size_t n_ops);

/* ---- The backup job --------------------------------------------------- *
 *
 * The structures of this section grow at their end between releases.
 * Each starts with its own size: fill it with the _init function of its
 * type (which sets the size this program was built with, and the
 * defaults), then set fields.  The library reads and writes only the
 * fields within that size, so a program built against an older header
 * keeps working; a size of 0, or larger than the library knows, is
 * refused with QBAK_STATUS_USAGE ("unknown structure size").
 *
 * Threads: the calls may run on any thread, several at once on different
 * images; the error they leave is the calling thread's (qbak_get_error()
 * on that thread).  The progress callback runs on the calling thread,
 * between requests of the job in progress (jobs of a group run one after
 * the other on that same thread); the cancel flag may be set from any
 * thread or a signal handler.
 *
 * Pointers in the options (strings, the cancel flag, the progress
 * callback's opaque) are borrowed: they must stay valid for the duration
 * of the call, and the library keeps none of them after it returns. */

enum qbak_sync {
  QBAK_SYNC_FULL,         /* every guest cluster that is not zero */
  QBAK_SYNC_TOP,          /* clusters allocated in the top image */
  QBAK_SYNC_INCREMENTAL,  /* the bitmap's dirty clusters; on-success */
  QBAK_SYNC_BITMAP,       /* the bitmap's dirty clusters; bitmap_mode */
  QBAK_SYNC_CHECKSUMS,    /* the clusters that differ from the backing
                             file's chain (every cluster is read): an
                             incremental without a bitmap */
};

enum qbak_bitmap_mode {
  QBAK_BITMAP_MODE_UNSET,
  QBAK_BITMAP_MODE_ON_SUCCESS,
  QBAK_BITMAP_MODE_ALWAYS,
  QBAK_BITMAP_MODE_NEVER,
};

enum qbak_target_format { QBAK_TARGET_QCOW2, QBAK_TARGET_RAW };

/* What a job does when copying a cluster fails. */
enum qbak_on_error {
  QBAK_ON_ERROR_REPORT,   /* stop at the first error (the default) */
  QBAK_ON_ERROR_IGNORE,   /* skip the failing cluster, keep it in the copy
                             set, carry on; the job still fails at the
                             end */
};

/* How a job ended. */
enum qbak_outcome {
  QBAK_OUTCOME_OK,            /* "ok" */
  QBAK_OUTCOME_FAILED,        /* "failed" (also a job of a group that was
                                 never reached: its options were not
                                 checked) */
  QBAK_OUTCOME_CANCELLED,     /* "cancelled" */
  QBAK_OUTCOME_NOT_STARTED,   /* "not-started": prepared, never copied
                                 (the group stopped before) */
};

/* What a job did to its bitmap. */
enum qbak_bitmap_state {
  QBAK_BITMAP_STATE_NONE,       /* no bitmap, or not reached (NULL name) */
  QBAK_BITMAP_STATE_CLEARED,    /* "cleared": holds the writes since */
  QBAK_BITMAP_STATE_UNCHANGED,  /* "unchanged" */
  QBAK_BITMAP_STATE_NOT_COPIED, /* "not-copied": holds what was not
                                   copied (bitmap-mode always, failed) */
};

/* The names above ("ok", "cleared", ...); NULL for
 * QBAK_BITMAP_STATE_NONE and for values this library does not know.
 * Static strings. */
QBAK_API const char *qbak_outcome_name (enum qbak_outcome outcome);
QBAK_API const char *qbak_bitmap_state_name (enum qbak_bitmap_state state);

/* Progress: DONE of TOTAL bytes of the copy set. */
typedef void (*qbak_progress_cb) (uint64_t done, uint64_t total,
                                  void *opaque);

struct qbak_copy_opts {
  size_t size;                  /* sizeof: set by qbak_copy_opts_init */
  const char *source;
  const char *source_format;    /* required format of SOURCE, or NULL */
  const char *target;           /* must not exist */
  enum qbak_sync sync;
  const char *bitmap;           /* or NULL */
  enum qbak_bitmap_mode bitmap_mode;
  const char *backing;          /* target's backing file, stored as given
                                   and resolved against the target's
                                   directory (qemu-img create -b), or NULL */
  const char *backing_format;   /* its format (qemu-img's -F), recorded in
                                   the target; NULL: qcow2.  Never probed
                                   from the file's content. */
  bool no_backing;              /* an incremental or bitmap copy into qcow2
                                   without a backing file is meant (else
                                   refused: it would restore wrong) */
  enum qbak_target_format format;
  uint32_t cluster_size;        /* 0: the source's (64 KiB for raw) */
  qbak_progress_cb progress;
  void *progress_opaque;
  /* Polled between requests; non-zero cancels the job as QEMU's
   * block-job-cancel does. */
  volatile int *cancel;
  enum qbak_on_error on_error;
  /* Retries of a failed target write, with exponential backoff. */
  unsigned retries;
  /* Continue a failed or cancelled bitmap-mode 'always' job into its
   * TARGET.part, copying only what the bitmap now holds.  Without it, an
   * existing TARGET.part is refused (never deleted), and a job copies
   * everything an interrupted job of its bitmap had to copy (kept in the
   * source as a disabled companion bitmap) plus what changed since. */
  bool resume;
};

/* Set O->size and every field to its default (sync full, no bitmap,
 * a qcow2 target, on-error report, no retries). */
QBAK_API void qbak_copy_opts_init (struct qbak_copy_opts *o);

struct qbak_copy_result {
  size_t size;                  /* sizeof: set by qbak_copy_result_init */
  uint64_t virtual_size;
  uint64_t cluster_size;        /* the target's */
  uint64_t bytes_planned;       /* size of the copy set */
  uint64_t bytes_copied;        /* data written to the target */
  uint64_t clusters_copied;     /* data clusters written */
  uint64_t zero_clusters;       /* copy-set clusters that read as zero */
  uint64_t bytes_skipped;       /* virtual size not in the copy set */
  uint64_t clusters_left;       /* copy-set clusters not copied */
  uint64_t clusters_failed;     /* clusters skipped after an error */
  enum qbak_outcome outcome;
  char error[1024];             /* this job's error message, or "" */
  enum qbak_hint error_hint;    /* and its hint (see qbak_get_error_hint) */
  int error_errno;              /* and its errno (see qbak_get_errno) */
  double seconds;
  enum qbak_bitmap_state bitmap_state;
  uint64_t bitmap_dirty_bytes;  /* dirty bytes of the bitmap afterwards */
};

/* Set R->size; the rest is zero.  The library fills the result in. */
QBAK_API void qbak_copy_result_init (struct qbak_copy_result *r);

/* Run one backup job: plan the copy set, copy it into a new target
 * (written as TARGET.part and renamed when complete), then rewrite the
 * bitmap per bitmap_mode (QEMU's backup job semantics).  RESULT is
 * filled in on success and on failure (unless its size is refused).
 * Returns 0, or -1 with the error set (QBAK_STATUS_CANCELLED after a
 * cancel). */
QBAK_API int qbak_copy (const struct qbak_copy_opts *opts,
                        struct qbak_copy_result *result);

/* ---- Several disks, one point in time ------------------------------- */

enum qbak_completion_mode {
  QBAK_COMPLETION_INDIVIDUAL,   /* each job stands alone */
  QBAK_COMPLETION_GROUPED,      /* all succeed, or none is kept complete */
};

struct qbak_group_opts {
  size_t size;                  /* sizeof: set by qbak_group_opts_init */
  /* N_JOBS options, each set up with qbak_copy_opts_init by the same
   * program (one size: the array's stride is jobs[0].size); borrowed for
   * the call, as their strings are.  A job's own progress callback is
   * not used (the group's is), nor its cancel flag if the group has
   * one. */
  const struct qbak_copy_opts *jobs;
  size_t n_jobs;
  enum qbak_completion_mode completion;
  /* Quiesce hooks around the group's point in time (run with /bin/sh -c
   * in a process of their own, waited for on the calling thread).  If
   * the freeze command was started, the thaw command always runs. */
  const char *freeze_cmd;
  const char *thaw_cmd;
  unsigned freeze_timeout;      /* seconds; 0 = 60 */
  volatile int *cancel;
  qbak_progress_cb progress;
  void *progress_opaque;
};

/* Set G->size and every field to its default (completion grouped, no
 * jobs, no hooks). */
QBAK_API void qbak_group_opts_init (struct qbak_group_opts *g);

/* Run several backup jobs as one group: every source opened, locked and
 * validated before the first byte is copied (a refusal on any stops the
 * group with nothing written); the freeze hook, the point in time (every
 * copy set planned), the thaw hook; then the copies.  RESULTS has n_jobs
 * entries, each set up with qbak_copy_result_init (one size: the stride
 * is results[0].size).  Returns 0 if every job succeeded and the thaw
 * hook (if any) succeeded, else -1 with the first error. */
QBAK_API int qbak_copy_group (const struct qbak_group_opts *opts,
                              struct qbak_copy_result *results);

/* ---- Repositories ------------------------------------------------------
 *
 * A repository is a folder that owns the backup chains of a set of disks:
 * qcow2 files chained by relative backing names (qemu-img and QEMU open
 * them directly), one immutable JSON record per point in time, and one
 * persistent bitmap per disk named after the repository's id, so that
 * two repositories on one disk keep independent chains and a user's own
 * bitmaps are never touched. */

/* One disk of a backup: its image, and its name in the repository (NULL:
 * the file name without its extension). */
struct qbak_backup_disk {
  const char *path;
  const char *name;
};

struct qbak_backup_opts {
  size_t size;                  /* sizeof: set by qbak_backup_opts_init */
  const char *repository;       /* a folder: made if missing or empty */
  const struct qbak_backup_disk *disks;   /* borrowed for the call */
  size_t n_disks;
  const char *source_format;    /* required format of every disk, or NULL
                                   (the format of a disk's first backup is
                                   required from then on either way) */
  bool full;                    /* a full of every disk */
  unsigned full_every;          /* a full after this many incrementals of
                                   a disk; 0: never */
  const char *freeze_cmd;       /* quiesce hooks, as in qbak_group_opts */
  const char *thaw_cmd;
  unsigned freeze_timeout;
  volatile int *cancel;
  qbak_progress_cb progress;
  void *progress_opaque;
};
QBAK_API void qbak_backup_opts_init (struct qbak_backup_opts *o);

struct qbak_backup_result {
  size_t size;                  /* sizeof: set by qbak_backup_result_init */
  bool created;                 /* the repository was made by this call */
  char point[40];               /* the new point's id, or "" */
};
QBAK_API void qbak_backup_result_init (struct qbak_backup_result *r);

/* Back up every disk of O into its repository as one point in time: a
 * full for a disk without a chain there (or whose bitmap is missing or in
 * use, whose size shrank, or when asked), an incremental otherwise.  The
 * point's record is written only after every file of the point is
 * durable; a run that fails leaves the repository as it was (the next
 * run removes what it left).  Two runs on one repository never
 * interleave: the second fails with QBAK_STATUS_BUSY naming the holder.
 * COPIES (n_disks entries, each set up with qbak_copy_result_init, or
 * NULL) get each disk's copy result. */
QBAK_API int qbak_backup (const struct qbak_backup_opts *o,
                          struct qbak_backup_result *result,
                          struct qbak_copy_result *copies);

/* A repository opened to read its points.  Handles are used by one
 * thread at a time; strings returned are owned by the handle. */
struct qbak_repo;
QBAK_API struct qbak_repo *qbak_repo_open (const char *location);
QBAK_API void qbak_repo_close (struct qbak_repo *r);
QBAK_API size_t qbak_repo_point_count (struct qbak_repo *r);

struct qbak_point_info {
  size_t size;                  /* the caller's sizeof */
  const char *id;               /* "20261201T180000Z" */
  const char *time;             /* RFC 3339, UTC */
  int64_t unix_time;
  const char *qbak_version;     /* of the qbak that made it */
  size_t n_disks;
};
/* Point I, oldest first.  -1 if out of range. */
QBAK_API int qbak_repo_get_point (struct qbak_repo *r, size_t i,
                                  struct qbak_point_info *info);

enum qbak_level { QBAK_LEVEL_FULL, QBAK_LEVEL_INCREMENTAL };

struct qbak_point_disk_info {
  size_t size;                  /* the caller's sizeof */
  const char *name;
  enum qbak_level level;
  const char *reason;           /* why this level, for people */
  const char *file;             /* relative to the repository */
  const char *parent;           /* the point its file is based on, or NULL */
  const char *format;           /* the disk's format */
  uint64_t virtual_size;
  uint64_t cluster_size;
  uint64_t bytes_copied;
  double seconds;
};
QBAK_API int qbak_repo_get_point_disk (struct qbak_repo *r, size_t point,
                                       size_t disk,
                                       struct qbak_point_disk_info *info);

struct qbak_restore_opts {
  size_t size;                  /* sizeof: set by qbak_restore_opts_init */
  const char *repository;
  const char *at;               /* a point id; a time (the newest point at
                                   or before it: YYYY-MM-DD[THH:MM[:SS]],
                                   with Z or +HH:MM, else local time);
                                   "latest" or NULL: the newest point */
  const char *disk;             /* one disk into the file OUT, or NULL:
                                   every disk of the point into the folder
                                   OUT, as NAME.qcow2 or NAME.raw */
  const char *out;              /* must not exist (a folder may) */
  enum qbak_target_format format;
  bool overlay;                 /* OUT: an empty qcow2 whose backing file is
                                   the point's file in the repository,
                                   which is only read */
  volatile int *cancel;
  qbak_progress_cb progress;
  void *progress_opaque;
};
QBAK_API void qbak_restore_opts_init (struct qbak_restore_opts *o);
/* Restore a point: each file flattened (its chain read as one image),
 * thin, and durable before this returns.  POINT (40 bytes, or NULL) gets
 * the id of the point restored. */
QBAK_API int qbak_restore (const struct qbak_restore_opts *o, char *point);

/* ---- Verifying a repository ------------------------------------------
 *
 * qbak_verify reads the files a repository's points need, without the
 * source: each file's structure (as qemu-img check: refcounts, overlaps,
 * leaks), its place in its chain (backing file, format, sizes, as its
 * record says), and its data against its manifest where it has one.  A
 * file shared by several points is read once.  A file found bad fails
 * its point and every later point whose chain holds it.  What each
 * verification found is kept per point in the repository (beside the
 * immutable records) and read back with qbak_repo_get_point_verify. */

enum qbak_verify_state {
  QBAK_VERIFY_NONE,             /* never verified */
  QBAK_VERIFY_OK,
  QBAK_VERIFY_FAILED,
  QBAK_VERIFY_SKIPPED,          /* verified recently enough (outdated_after) */
  QBAK_VERIFY_NOT_VERIFIED,     /* the run stopped before it */
};
/* "none", "ok", "failed", "skipped", "not-verified"; NULL for values this
 * library does not know.  Static strings. */
QBAK_API const char *qbak_verify_state_name (enum qbak_verify_state s);

/* One finding, passed to the problem callback as it is found.  MISMATCH
 * false: a note that is no problem ("no manifest"). */
struct qbak_verify_problem {
  size_t size;                  /* the library's sizeof */
  const char *point;            /* the point whose file it is */
  const char *disk;
  const char *file;             /* a key of the repository, or the source */
  bool mismatch;
  bool has_offset;
  uint64_t offset;              /* guest offset */
  const char *what;
};
typedef void (*qbak_verify_problem_cb) (const struct qbak_verify_problem *p,
                                        void *opaque);

struct qbak_verify_error {
  size_t size;                  /* the library's sizeof */
  const char *file;
  bool has_offset;
  uint64_t offset;
  const char *what;
};

struct qbak_verify_disk {
  size_t size;                  /* the library's sizeof */
  const char *name;
  enum qbak_verify_state state;
  bool data_checked;            /* every file of its chain had a manifest */
  const struct qbak_verify_error *errors;   /* of every bad file of its
                                               chain */
  size_t n_errors;
};

/* What a run found for one point, passed to the point callback once the
 * run is over, oldest point first.  Valid during the call. */
struct qbak_verify_point {
  size_t size;                  /* the library's sizeof */
  const char *id;
  enum qbak_verify_state state;
  const struct qbak_verify_disk *disks;
  size_t n_disks;
};
typedef void (*qbak_verify_point_cb) (const struct qbak_verify_point *p,
                                      void *opaque);

/* A source disk compared with its latest point. */
struct qbak_verify_source {
  size_t size;                  /* the library's sizeof */
  const char *path;
  const char *disk;             /* its name in the repository */
  const char *point;            /* the point compared */
  bool bitmap;                  /* the point's bitmap told what changed */
  uint64_t unit;                /* bytes per compared unit */
  uint64_t units_compared;
  uint64_t units_changed;       /* differ where the disk was written since */
  uint64_t units_mismatch;      /* differ where nothing says it was */
  bool size_changed;
};
typedef void (*qbak_verify_source_cb) (const struct qbak_verify_source *s,
                                       void *opaque);

struct qbak_verify_opts {
  size_t size;                  /* sizeof: set by qbak_verify_opts_init */
  const char *repository;
  const char *at;               /* one point (as qbak_restore_opts), or
                                   NULL: every point */
  const char *disk;             /* one disk, or NULL: every disk */
  unsigned sample_percent;      /* 1..99: that share of data clusters
                                   (a partial verification); 0: all */
  int64_t outdated_after;       /* seconds: skip points whose last
                                   complete verification passed less
                                   than this long ago; 0: none skipped */
  /* Disks to compare with their latest point (names as in a backup),
   * read through both chains.  With the point's bitmap in the disk,
   * a difference where the disk was not written since is a mismatch and
   * the others are changes; without one (a raw disk), qbak cannot tell
   * a change from damage and every difference is a mismatch. */
  const struct qbak_backup_disk *sources;
  size_t n_sources;
  volatile int *cancel;
  qbak_progress_cb progress;
  void *progress_opaque;
  qbak_verify_problem_cb problem;
  qbak_verify_point_cb point;
  qbak_verify_source_cb source;
  void *opaque;                 /* for the three callbacks above */
};
QBAK_API void qbak_verify_opts_init (struct qbak_verify_opts *o);

struct qbak_verify_result {
  size_t size;                  /* sizeof: set by qbak_verify_result_init */
  size_t points_ok, points_failed, points_skipped, points_not_verified;
  size_t files_verified, files_failed, files_without_manifest;
  uint64_t bytes_read;
  double seconds;
};
QBAK_API void qbak_verify_result_init (struct qbak_verify_result *r);

/* Verify; takes the repository's lock (its state is written).  0 if
 * everything verified is good; -1 with QBAK_STATUS_MISMATCH if a point
 * failed or a source differs where it should not, or with another
 * status if the verification could not run.  RESULT (or NULL) is filled
 * in either way. */
QBAK_API int qbak_verify (const struct qbak_verify_opts *o,
                          struct qbak_verify_result *result);

/* A point's last verification. */
struct qbak_point_verify_info {
  size_t size;                  /* the caller's sizeof */
  enum qbak_verify_state state; /* NONE, OK or FAILED */
  char time[32];                /* RFC 3339, UTC, or "" */
  int64_t unix_time;
  unsigned sampled;             /* percent of data checked; 0: all */
  bool partial;                 /* only some disks */
  int64_t last_complete_ok;     /* unix time, or 0 */
};
QBAK_API int qbak_repo_get_point_verify (const char *repository,
                                         const char *point,
                                         struct qbak_point_verify_info *info);
/* The same for point I of an open repository (qbak_repo_open), without
 * opening it again.  A verification that passed for files a prune has
 * merged since is no verification of the point's files: the state is
 * then NONE.  A failure stays FAILED. */
QBAK_API int qbak_repo_get_point_verify_at (struct qbak_repo *r, size_t i,
                                            struct qbak_point_verify_info *info);

/* ---- Retention ---------------------------------------------------------
 *
 * A retention policy says which points of a repository to keep, with
 * restic's rules (its `forget`): the rules are ORed; keep_last keeps the
 * N newest points; keep_hourly .. keep_yearly keep the newest point of
 * each of the N newest hours, days, ISO weeks (from Monday, in their ISO
 * week-year), months or years that hold a point; keep_within keeps every
 * point newer than the newest point minus a duration ("1y2m3d4h").
 * Periods follow the calendar of the repository's time zone, fixed when
 * it is made.  Protected points are always kept; they still count in
 * the rules (as restic's --keep-tag snapshots do), so protecting a point
 * changes no other point's fate. */

/* Make the repository LOCATION (a missing or empty folder) with the time
 * zone TIMEZONE ("Europe/Berlin", "UTC"; NULL: the local zone), or check
 * that an existing one has that zone (QBAK_STATUS_USAGE if not).
 * *CREATED (or NULL) tells whether this call made it. */
QBAK_API int qbak_repo_init (const char *location, const char *timezone,
                             bool *created);

struct qbak_prune_opts {
  size_t size;                  /* sizeof: set by qbak_prune_opts_init */
  const char *repository;
  unsigned keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly,
    keep_yearly;
  const char *keep_within;      /* "1y2m3d4h" (parts optional), or NULL */
};
/* Set O->size; no rule (a plan of no rule is refused). */
QBAK_API void qbak_prune_opts_init (struct qbak_prune_opts *o);

/* Why a point is kept: bits of qbak_prune_decision.reasons. */
enum qbak_prune_reason {
  QBAK_PRUNE_KEEP_LAST = 1u << 0,
  QBAK_PRUNE_KEEP_HOURLY = 1u << 1,
  QBAK_PRUNE_KEEP_DAILY = 1u << 2,
  QBAK_PRUNE_KEEP_WEEKLY = 1u << 3,
  QBAK_PRUNE_KEEP_MONTHLY = 1u << 4,
  QBAK_PRUNE_KEEP_YEARLY = 1u << 5,
  QBAK_PRUNE_KEEP_WITHIN = 1u << 6,
  QBAK_PRUNE_PROTECTED = 1u << 7,
};
/* The name of one reason bit ("last", "hourly", "daily", "weekly",
 * "monthly", "yearly", "within", "protected"), or NULL: a static
 * string. */
QBAK_API const char *qbak_prune_reason_name (unsigned reason);

/* What a policy decides for a repository's points, made without changing
 * the repository. */
struct qbak_prune_plan;
QBAK_API struct qbak_prune_plan *qbak_prune_plan_make
  (const struct qbak_prune_opts *o);
QBAK_API void qbak_prune_plan_free (struct qbak_prune_plan *p);
/* Number of points (every point of the repository, oldest first). */
QBAK_API size_t qbak_prune_plan_count (const struct qbak_prune_plan *p);
/* The repository's time zone: a string owned by the plan. */
QBAK_API const char *qbak_prune_plan_timezone (const struct qbak_prune_plan *p);
/* The plan's keep_within as restic writes it ("1y2m"; "" if none), which
 * follows "within " in messages: a string owned by the plan. */
QBAK_API const char *qbak_prune_plan_within (const struct qbak_prune_plan *p);

struct qbak_prune_decision {
  size_t size;                  /* the caller's sizeof */
  const char *id;               /* the point: strings owned by the plan */
  const char *time;             /* RFC 3339, UTC */
  int64_t unix_time;
  int32_t utc_offset;           /* seconds east of UTC in the repository's
                                   zone at that time */
  bool keep;
  unsigned reasons;             /* enum qbak_prune_reason bits; 0: removed */
};
/* Point I's decision.  -1 if I is out of range or the size is bad. */
QBAK_API int qbak_prune_plan_get (const struct qbak_prune_plan *p, size_t i,
                                  struct qbak_prune_decision *d);

/* Pin the point ID of the repository LOCATION so that no policy removes
 * it, or unpin it.  Pinning a pinned point, or unpinning one that is
 * not, is no error. */
/* Remove the points POLICY O does not keep, each disk's chain merged so
 * that every kept point reads exactly as it did, at every instant (a
 * crash leaves an intent the next prune or backup finishes).  Takes the
 * repository's lock.  *PLAN (may be NULL) gets the plan that was carried
 * out (free it with qbak_prune_plan_free). */
QBAK_API int qbak_prune (const struct qbak_prune_opts *o,
                         struct qbak_prune_plan **plan);
QBAK_API int qbak_protect (const char *location, const char *id);
QBAK_API int qbak_unprotect (const char *location, const char *id);

#ifdef __cplusplus
}
#endif

#endif /* QBAK_H */
