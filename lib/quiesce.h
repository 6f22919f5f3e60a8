/* lib/ internal: quiesce hooks. */
#ifndef QBAK_LIB_QUIESCE_H
#define QBAK_LIB_QUIESCE_H

/* Run CMD with /bin/sh -c in its own process group; fail (QBAK_STATUS_IO)
 * on a non-zero exit, a signal, or after TIMEOUT seconds (0: none), when
 * the hook's process group is killed.  WHAT names it ("freeze"). */
int qbak_internal_run_hook (const char *what, const char *cmd,
                            unsigned timeout);

#endif
