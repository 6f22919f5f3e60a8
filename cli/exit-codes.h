/* qbak's exit codes.  Documented in qbak(1), docs/man/qbak.1.scd; scripts
 * branch on them, so the values never change. */
#ifndef QBAK_CLI_EXIT_CODES_H
#define QBAK_CLI_EXIT_CODES_H

#define EXIT_OK          0  /* success */
#define EXIT_JOB_FAILED  1  /* I/O error, no space; nothing was lost */
#define EXIT_USAGE       2  /* bad option, missing argument */
#define EXIT_UNUSABLE    3  /* not an image, corrupt, unsupported, in_use */
#define EXIT_BUSY        4  /* image locked by another process */
#define EXIT_MISMATCH    5  /* verification found a mismatch */
#define EXIT_INTERRUPTED 130

#endif
