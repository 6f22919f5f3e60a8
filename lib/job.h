/* lib/ internal: one backup job in stages, so that a group (group.c) can
 * prepare every job before any copies, plan them all at one point in time,
 * and complete or fail them together.
 *
 *   job_prepare   arguments, source (locked, validated), bitmap, target
 *   job_plan      the point in time: sync set, copy set, successor
 *   job_copy      the copy loop (cancel, error policy, retries), in
 *                 copy-loop.c
 *   job_finish_target, job_promote
 *                 target durable; renamed into place; bitmap per mode
 *   job_fail      failure or cancel: partial target kept durable as
 *                 TARGET.part, bitmap per mode (QEMU's semantics)
 */
#ifndef QBAK_LIB_JOB_H
#define QBAK_LIB_JOB_H

#include "bitmaps/dirty-bitmap.h"
#include "common/status.h"
#include "formats/image.h"
#include "formats/manifest.h"
#include "formats/qcow2-writer.h"
#include "lib/internal.h"

struct copy_job;
struct qcow2_header;
struct storage;

/* What a repository asks of a job beyond the public options: a target
 * that survives being killed.  It is written at its own name from the
 * start (the repository's record, not the name, makes it part of a
 * point), stores every zero cluster it copies, and is made durable, with
 * MARK as its partial mark, every few seconds of copying: whenever the
 * run stops, the file is the valid image of its last checkpoint, and
 * what it holds is what was copied.  A failed or cancelled job keeps it
 * (durable, marked); the bitmap mode must be never. */
struct job_in_place {
  const uint8_t *mark;          /* TARGET_PARTIAL_ID_BYTES */
  /* The target exists (the file of an interrupted run, with MARK or no
   * mark at all when it was complete): continue it.  Its clusters are
   * not copied again, except those of REDO_BITMAP (a bitmap of the
   * source: what changed since the interrupted run began). */
  bool resume;
  const char *redo_bitmap;
  uint64_t bytes_kept;          /* out: data bytes it held already */
  /* The target's manifest is written here (a new file), hashed while
   * copying; a continued target's is made from the finished file.  Its
   * digest goes to MANIFEST_DIGEST. */
  const char *manifest_path;
  char manifest_digest[MANIFEST_DIGEST_HEX + 1];
  /* Where the storage cannot continue a file in place (an object
   * store, common/storage.h): the target and its manifest are the new
   * objects KEY and MANIFEST_KEY of ST, written in one pass with no
   * checkpoints, committed when the job finishes them and aborted when
   * it fails, so that an interrupted run leaves no object and the next
   * one takes the point anew (RESUME must be false).  The target and
   * manifest paths then only name them in messages.  ST NULL: files by
   * path, as above. */
  struct storage *st;
  const char *key;
  const char *manifest_key;
  /* Checksum-based: of the copy set, only the clusters that differ from
   * this view (the previous point's chain) are written.  The job takes
   * it over (frees it). */
  struct manifest_view *reference;
};

/* A job's source read through a repository's storage (restore): the
 * qcow2 object KEY of ST and its chain, opened as objects
 * (lib/repo-objects.h), never by a file-system path.  The options'
 * source then only names it in messages. */
struct job_source {
  struct storage *st;
  const char *key;
};

/* NULL with the error set if the job cannot start; nothing is written
 * then.  PLACE and SOURCE (may be NULL) are borrowed for the job's
 * life. */
struct copy_job *job_prepare (const struct qbak_copy_opts *o,
                              struct qbak_copy_result *res,
                              struct job_in_place *place,
                              const struct job_source *source);
int job_plan (struct copy_job *j);
/* CANCEL overrides the options' flag (the group's). */
int job_copy (struct copy_job *j, volatile int *cancel,
              qbak_progress_cb progress, void *opaque);
/* copy-loop.c calls it after each request: a checkpoint of an in-place
 * target when one is due. */
int job_maybe_checkpoint (struct copy_job *j);
/* Make the target durable (not yet renamed). */
int job_finish_target (struct copy_job *j);
/* Rename TARGET.part into place, then rewrite the bitmap per mode. */
int job_promote (struct copy_job *j);
/* Failure semantics; the current error is kept and returned through the
 * result's message.  STATUS tells cancel from failure. */
void job_fail (struct copy_job *j, enum status status);
/* Undo job_prepare for a job that never copied: removes TARGET.part. */
void job_discard (struct copy_job *j);
void job_free (struct copy_job *j);
const char *job_name (struct copy_job *j);

/* manifest-of-layer.c: write the manifest of the qcow2 file PATH's own
 * layer (what it holds, not its backing files) into MANIFEST (a new
 * file), by reading it; its digest into DIGEST. */
int manifest_of_layer (const char *path, const char *manifest,
                       char *digest);

/* layer-merge.c: copy the clusters the qcow2 file FROM holds itself
 * (data and zero clusters, not its backing files') into the qcow2 file
 * INTO, written by qbak: only where INTO holds nothing (ONLY_HOLES), or
 * over what it holds; grow INTO to FROM's size if it is smaller; store
 * BACKING (NULL: none) as INTO's backing file; commit with one header
 * write.  Either INTO is as it was or it is all of that. */
int layer_merge (const char *from, const char *into, bool only_holes,
                 const char *backing, const char *backing_format);

/* layer-merge.c: copy [OFF, +LEN) of layer FROM, whose clusters there
 * are all of state ST (data or zero, as it holds them), into W, through
 * BUF of LAYER_MERGE_BUFFER_BYTES. */
#define LAYER_MERGE_BUFFER_BYTES (8u << 20)
int layer_put_extent (struct image *from, struct qcow2_writer *w,
                      enum layer_state st, uint64_t off, uint64_t len,
                      uint8_t *buf);

/* layer-merge-object.c: the same merge where files cannot be rewritten
 * in place (an object store): NEW_KEY, a new object of ST, becomes a
 * qcow2 file holding what TOP_KEY's file holds itself (data and zero
 * clusters) and, where it holds nothing, what BOTTOM_KEY's file holds
 * itself; the larger of their virtual sizes, their cluster size, BACKING
 * (NULL: none) as its backing file.  Committed when this returns 0; on
 * error nothing is left at NEW_KEY.  NEW_KEY NULL: the merge replaces
 * TOP_KEY's object whole when it is committed (storage_replace_object),
 * so TOP_KEY reads as before until then, and as the merge after. */
int layer_merge_object (struct storage *st, const char *bottom_key,
                        const char *top_key, const char *new_key,
                        const char *backing, const char *backing_format);
/* The decoded header of the qcow2 file KEY of ST, read through the
 * storage (its cluster 0 only).  -1 with errno ENOENT recorded if KEY is
 * missing.  Free with qcow2_header_free. */
int layer_object_header (struct storage *st, const char *key,
                         struct qcow2_header *hdr);

/* group.c: qbak_copy_group with an in-place target for each job (PLACES
 * parallel to the jobs, or NULL), and sources in a storage (SOURCES
 * parallel to the jobs, or NULL). */
int qbak_internal_copy_group (const struct qbak_group_opts *g,
                              struct qbak_copy_result *results,
                              struct job_in_place *places,
                              const struct job_source *sources);

/* copy.c: the public structures that carry their size first (qbak.h).
 * Whether a caller's SIZE is one this library can read, for a structure
 * of KNOWN bytes. */
bool struct_size_ok (size_t given, size_t known);
/* Copy the caller's structure SRC (of its own size) into DST, zero-filled
 * to DST_SIZE, DST's size set to DST_SIZE.  -1 with a usage error for a
 * size 0 or larger than DST_SIZE. */
int copy_struct_in (void *dst, size_t dst_size, const void *src);

#endif
