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
  int (*prepare) (struct storage *st, const char *key);
  int (*rename) (struct storage *st, const char *from, const char *to);
  char *(*local_path) (struct storage *st, const char *key);
  void (*close) (struct storage *st);
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
/* Make ready to create KEY: its folders exist (made without following a
 * link; an object store needs nothing). */
int storage_prepare (struct storage *st, const char *key);
/* The file-system path of KEY where the storage is a local folder (for
 * code that writes files by name, such as a backup target), malloc'ed;
 * NULL with STATUS_USAGE where objects have no path. */
char *storage_local_path (struct storage *st, const char *key);
/* Close; accepts NULL. */
void storage_close (struct storage *st);

#endif
