/* Files qbak creates: backup targets, partial targets, space reserves.
 *
 * A backup folder may be shared with other users or with a careless
 * script, so qbak never creates a file through a symlink, never truncates
 * or replaces an existing name, and never deletes a name it did not create
 * in this process.  A new target is an anonymous file (O_TMPFILE) in its
 * folder until it is complete, and is then linked at its name, which
 * fails if the name exists; a crash therefore leaves no half-written file
 * behind.  Where the file system has no anonymous files, the target is
 * created at its name with O_CREAT|O_EXCL|O_NOFOLLOW instead.
 */
#ifndef QBAK_COMMON_OUTFILE_H
#define QBAK_COMMON_OUTFILE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/fileio.h"

/* Create a new file for PATH, read-write.  If the folder of PATH supports
 * anonymous files, the file has no name yet (*ANONYMOUS = true; link it
 * with outfile_link); otherwise it is PATH itself, created exclusively
 * (*ANONYMOUS = false).  The file's I/O messages name PATH either way; a
 * failure to create it is reported for LABEL (what the user asked for,
 * such as the target of which PATH is the partial file) and names the
 * folder: STATUS_USAGE with the errno recorded (not
 * a bad option: the CLI prints no usage text) when the folder is missing,
 * not a folder, not writable, read-only, or PATH exists; STATUS_IO
 * otherwise. */
struct qbak_file *outfile_create (const char *path, const char *label,
                                  bool *anonymous);

/* Give the file open at FD the name NAME, which must not exist (never
 * replaced; EEXIST is STATUS_USAGE).  FD's file may be anonymous or
 * named already (a second name).  Does not flush the folder. */
int outfile_link (int fd, const char *name);

/* Remove NAME only if it is still the file open at FD (a name swapped
 * for another file meanwhile is left alone).  0 if removed or already
 * gone, -1 with the error set otherwise. */
int outfile_unlink_own (int fd, const char *name);

/* Make the names in PATH's folder durable (fsync of the folder).  Once
 * that failed for a folder, it fails for good in this process (never
 * retried: fileio.h). */
int outfile_sync_folder (const char *path);

/* An anonymous file in PATH's folder holding BYTES of allocated space, as
 * a reserve to give back later by closing it; -1 if it cannot be made
 * (no error is set: a reserve is a precaution, never a requirement). */
int outfile_reserve (const char *path, uint64_t bytes);

/* The folder of PATH ("." for a bare name), malloc'ed, or NULL with the
 * error set. */
char *outfile_folder (const char *path);

#endif
