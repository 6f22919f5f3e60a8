/* Where a repository keeps its files: a small object-store interface.
 *
 * A repository is a set of named objects (keys such as
 * "points/20261201T180000Z.json" or "disks/vda/0001.qcow2") and one lock.
 * It is written only through operations that an object store can also
 * offer, so that the same repository code runs on a local folder today
 * and on S3-compatible storage later:
 *
 *   put-once   a small object is created whole, durably, and never
 *              replaced: creating a key that exists fails (EEXIST);
 *   replace    a small object is created or replaced whole, durably: a
 *              reader sees the old object or the new one, never a mix
 *              (an object store's PUT): the repository's mutable
 *              state, and the records prune rewrites once their files
 *              are merged (every version of a record names files that
 *              read the same);
 *   rename     an object takes another key, replacing it (prune);
 *   get        a whole small object;
 *   list       the keys under a prefix;
 *   delete     one key;
 *   lock       one named lock, held by one process at a time, naming its
 *              holder to the others.
 *
 * Keys are relative, '/'-separated, made of [A-Za-z0-9._-] components,
 * none of them "." or ".."; anything else is refused (STATUS_USAGE), so
 * no key can leave the repository.  Every implementation refuses to
 * follow a symbolic link inside the repository and to treat anything but
 * a regular file as an object (STATUS_INVALID: a damaged or foreign
 * repository), so a planted link never redirects a read or a write.
 */
#ifndef QBAK_COMMON_STORAGE_H
#define QBAK_COMMON_STORAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>


struct storage;
struct storage_object_ops;
struct qbak_file;

/* A held lock. */
struct storage_lock {
  struct storage *st;
  void *impl;
};

/* One object in a listing.  KEY is valid during the callback only. */
struct storage_entry {
  const char *key;
  uint64_t size;
};
/* Non-zero from the callback stops the listing and is returned. */
typedef int (*storage_list_cb) (const struct storage_entry *e, void *opaque);

struct storage_ops {
  const char *name;     /* "folder", "s3" */
  int (*put_once) (struct storage *st, const char *key, const void *buf,
                   size_t len);
  int (*replace) (struct storage *st, const char *key, const void *buf,
                  size_t len);
  int (*get) (struct storage *st, const char *key, void **buf, size_t *len);
  int (*size) (struct storage *st, const char *key, uint64_t *size);
  int (*list) (struct storage *st, const char *prefix, storage_list_cb cb,
               void *opaque);
  int (*remove) (struct storage *st, const char *key);
  struct storage_lock *(*lock) (struct storage *st, const char *name,
                                const char *holder);
  void (*unlock) (struct storage_lock *lk);
  int (*lock_held) (struct storage_lock *lk);   /* NULL: cannot be lost */
  int (*prepare) (struct storage *st, const char *key);
  int (*rename) (struct storage *st, const char *from, const char *to);
  char *(*local_path) (struct storage *st, const char *key);
  void (*close) (struct storage *st);
  const struct storage_object_ops *objects;     /* big objects, below */
};

struct storage {
  const struct storage_ops *ops;
  char *location;       /* for messages: the folder, or s3://bucket/prefix */
};

/* storage-folder.c: the repository in the local folder PATH.  With
 * CREATE, a missing folder is made (its parent must exist) and *CREATED
 * tells whether it was; without, a missing folder is STATUS_USAGE.  A
 * PATH that is not a folder, or is a symbolic link, is refused. */
struct storage *storage_open_folder (const char *path, bool create,
                                     bool *created);

/* ---- opening a location by name ---- */

/* storage-s3.c: the repository at "s3://BUCKET/PREFIX" on S3-compatible
 * object storage, reached with the AWS tools' configuration
 * (common/s3-config.h).  A missing bucket is STATUS_USAGE (qbak never
 * creates one); a prefix holding no object is a new repository: with
 * CREATE it is opened and *CREATED set, without it is STATUS_USAGE.
 * Wrong credentials or a denied bucket are STATUS_USAGE. */
struct storage *storage_open_s3 (const char *url, bool create,
                                 bool *created);

/* The repository at LOCATION: "s3://..." opens the S3 backend, anything
 * else is a local folder (storage_open_folder). */
struct storage *storage_open (const char *location, bool create,
                              bool *created);

/* ---- end of opening a location by name ---- */

/* Whether KEY is a valid key (no error set). */
bool storage_key_valid (const char *key);
/* 0 if KEY is a valid key; -1 with STATUS_USAGE naming LOCATION if not. */
int storage_check_key (const char *location, const char *key);

/* Store BUF as KEY, whole and durable when this returns 0.  -1 with errno
 * EEXIST recorded (STATUS_USAGE) if KEY exists: a put-once never
 * replaces. */
int storage_put_once (struct storage *st, const char *key, const void *buf,
                      size_t len);
/* Store BUF as KEY, whole and durable when this returns 0, replacing
 * what KEY held: a crash leaves the old object or the new one. */
int storage_replace (struct storage *st, const char *key, const void *buf,
                     size_t len);
/* Read the whole of KEY (at most 64 MiB: only records are read whole)
 * into a malloc'ed buffer, NUL-terminated past *LEN.  -1 with errno
 * ENOENT recorded (STATUS_INVALID) if KEY does not exist. */
int storage_get (struct storage *st, const char *key, void **buf,
                 size_t *len);
/* 1 and *SIZE if KEY exists, 0 if not, -1 on error. */
int storage_size (struct storage *st, const char *key, uint64_t *size);
/* Call CB for every object whose key starts with PREFIX (a folder prefix
 * ends with '/'), in byte order of the keys.  Names that are not valid
 * keys, and anything that is not a regular file, are refused
 * (STATUS_INVALID) rather than skipped: a repository holds only what qbak
 * put there. */
int storage_list (struct storage *st, const char *prefix, storage_list_cb cb,
                  void *opaque);
/* Delete KEY; 0 if it did not exist. */
int storage_delete (struct storage *st, const char *key);
/* Give object FROM the key TO, replacing what TO held, durably and in
 * one step (a reader finds TO's old object or FROM's): prune puts merged
 * files and manifests in place with it.  Both keys are in one folder. */
int storage_rename (struct storage *st, const char *from, const char *to);
/* Take the lock NAME for this process, recording HOLDER (a short text:
 * host, pid, start time) in it.  -1 with STATUS_BUSY and the holder's
 * text in the message if another live process holds it.  A lock left by
 * a process that is gone is taken over. */
struct storage_lock *storage_lock (struct storage *st, const char *name,
                                   const char *holder);
/* Release; accepts NULL. */
void storage_unlock (struct storage_lock *lk);
/* 0 if LK is still this process's: checked before a commit point (a
 * point's record), since a lock on an object store is a lease that a
 * process stalled for longer than the stale rule loses to another.  -1
 * with STATUS_BUSY naming the new holder if it was taken over, or with
 * the error of the check.  A folder's lock cannot be lost. */
int storage_lock_held (struct storage_lock *lk);
/* Make ready to create KEY: its folders exist (made without following a
 * link; an object store needs nothing). */
int storage_prepare (struct storage *st, const char *key);
/* The file-system path of KEY where the storage is a local folder (for
 * code that writes files by name, such as a backup target), malloc'ed;
 * NULL with STATUS_USAGE where objects have no path. */
char *storage_local_path (struct storage *st, const char *key);
/* Close; accepts NULL. */
void storage_close (struct storage *st);

/* ---- Big objects: backup files and their manifests -------------------
 *
 * A backup file (a qcow2 image of many GiB) or its manifest is never read
 * or written whole.  It is a struct qbak_file (common/fileio.h) on the
 * storage's own backend: a descriptor for a folder, ranged GETs through a
 * bounded cache and a multipart upload for an object store, so formats/
 * reads and writes it as any file.
 *
 * Reading: storage_open_object gives a read-only file for ranged reads
 * (pread, size).
 *
 * Writing: storage_create_object gives a writable file that becomes the
 * object KEY only at storage_commit_object; storage_abort_object gives it
 * up.  What a writer may do to it, the write pattern that an object
 * store can stream into a multipart upload as it is written:
 *
 *   - writes at or past everything written so far (appends; a gap
 *     between them reads as zeroes, and so does an object's tail that
 *     was only reserved by growing it with qbak_file_truncate);
 *   - any write inside the first STORAGE_OBJECT_HEAD bytes, at any time
 *     before the commit: the object store holds that part back and sends
 *     it as part 1 at the commit;
 *   - rewriting the bytes of an append that failed (a retried append);
 *   - shrinking it (qbak_file_truncate) back to no less than what was
 *     written successfully (garbage of failed appends at the end);
 *   - flush: on an object store it makes nothing durable (nothing is an
 *     object before the commit) and may send what is pending;
 *   - no reads of what was written, no holes punched.
 *
 * The qcow2 writer of a new, uncheckpointed target fits it: data and L2
 * tables are appended (all-zero pages of a table left as gaps), then at
 * finish the last L2 tables, the L1 table and the refcount table and
 * blocks are appended in that order, the tail of failed appends cut, and
 * the header, cluster 0 (at most 2 MiB, the largest cluster; 64 KiB for a
 * repository's files), is written last at offset 0.  Nothing else is
 * written out of order and nothing is read back.
 *
 * A folder creates the file at its final name (O_EXCL, never through a
 * link), so a crash leaves a partial file there, as a killed backup's
 * target; an object store shows nothing until the commit, and an upload
 * that was never committed is dropped (abort, or an expiry rule).
 *
 * In-place continuation: on a folder a repository's target is made a
 * valid image every few seconds (qcow2_writer_checkpoint rewrites its L1,
 * refcounts and header in place and punches holes), and the next backup
 * continues a killed one's file.  Neither fits an object stream, so
 * storage_can_continue_in_place says whether the storage offers it; where
 * it does not, a repository's target is written in one pass without
 * checkpoints, and an interrupted backup's upload is aborted and taken
 * anew by the next backup. */
#define STORAGE_OBJECT_HEAD (8u << 20)

struct storage_object_ops {
  /* Files can be reopened and rewritten in place (checkpoints). */
  bool in_place;
  struct qbak_file *(*open) (struct storage *st, const char *key);
  struct qbak_file *(*create) (struct storage *st, const char *key);
  int (*commit) (struct storage *st, struct qbak_file *f);
  int (*abort) (struct storage *st, struct qbak_file *f);
  /* Drop what writers that died left of objects never committed (NULL:
   * nothing is left but files, which a listing shows). */
  int (*drop_unfinished) (struct storage *st);
};

/* KEY for ranged reads: a read-only file named LOCATION/KEY in messages.
 * NULL with errno ENOENT recorded (STATUS_INVALID) if KEY does not exist,
 * STATUS_INVALID for anything but an object qbak made (a link, a
 * folder). */
struct qbak_file *storage_open_object (struct storage *st, const char *key);
/* A new object KEY, written through the returned file in the pattern
 * above, the object only once committed.  NULL with errno EEXIST
 * recorded (STATUS_USAGE) if KEY exists: an object is never replaced. */
struct qbak_file *storage_create_object (struct storage *st, const char *key);
/* Make F, from storage_create_object, the object it was created as,
 * durably: flushed, and its folder flushed (a folder), or the upload
 * completed (an object store).  F stays open (its owner, such as a
 * writer, closes it).  -1 with the error set; a failed commit is not
 * retried: abort. */
int storage_commit_object (struct storage *st, struct qbak_file *f);
/* Give up F, from storage_create_object and not committed: what it wrote
 * is removed (only if KEY still names this very file) or the upload
 * aborted.  F stays open.  0, or -1 with the error set (the object may be
 * left; the repository's next backup removes files no record names). */
int storage_abort_object (struct storage *st, struct qbak_file *f);
/* The key of F, an object of ST (F's name is LOCATION/KEY), pointing
 * into F's name; NULL with STATUS_USAGE if F is not one. */
const char *storage_object_key (struct storage *st,
                                const struct qbak_file *f);
/* Open, read-only, the object a backing file name NAME stored in the
 * object FROM names.  Only a name in FROM's own folder is an object
 * (qemu-img resolves a relative name against the folder of the image
 * that stores it): an absolute name, a name with a '/' or one that is not
 * a valid key component is refused (STATUS_INVALID), so no name leads
 * out of the folder or out of the repository. */
struct qbak_file *storage_open_backing (struct storage *st,
                                        const struct qbak_file *from,
                                        const char *name);
/* Drop the unfinished uploads of disk files (keys "disks/NAME/FILE")
 * that processes which died left on an object store: only ever called
 * with the repository's lock held, when no other writer can be at work.
 * A folder has none: a killed writer's file is an object there, which
 * the repository's leftover rule removes.  0, or -1 with the error set. */
int storage_drop_unfinished (struct storage *st);
/* Whether the storage can continue a file in place (see above). */
bool storage_can_continue_in_place (struct storage *st);

#endif
