/* Background write-back: a thread that starts the disk writing ranges of
 * a file (sync_file_range WRITE) while the caller goes on copying.
 *
 * Starting write-back can block for tens of milliseconds (the block
 * layer's write-back throttling waits for requests in flight); done on the
 * copying thread, that time adds to the job, done here it overlaps with
 * the copy.  It is only a hint: errors surface at the flush that makes the
 * data durable (an I/O error met here is kept for it: writeback_take_error),
 * and without a thread the range is started in the caller.  The thread
 * also drops what lies far enough behind and is on disk from the page
 * cache, so a long copy reuses its pages instead of taking fresh ones. */
#ifndef QBAK_COMMON_WRITEBACK_H
#define QBAK_COMMON_WRITEBACK_H

#include <stdbool.h>
#include <stdint.h>

struct writeback;

/* A write-back thread for FD, or NULL if none could be started (the
 * caller then starts write-back itself). */
struct writeback *writeback_start (int fd);
/* Queue [OFFSET, +LEN) (merged with what is queued: one range, its
 * bounds). */
void writeback_queue (struct writeback *wb, uint64_t offset, uint64_t len);
/* Does errno ERR of sync_file_range mean written data may be lost? */
bool writeback_lost_data (int err);
/* The errno of the first write-back that met an I/O error since the last
 * call (written data may be lost: the file's flush must fail,
 * common/fileio.h), or 0; the error is handed over once. */
int writeback_take_error (struct writeback *wb);
/* Stop the thread after what is queued was started, and free WB.  Accepts
 * NULL. */
void writeback_stop (struct writeback *wb);

#endif
