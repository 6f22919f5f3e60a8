/* SIGINT and SIGTERM cancel a running job at its next request, as QEMU's
 * job-cancel does: the library polls the flag, so the handler only sets
 * it. */
#include <signal.h>

#include "cli/cli.h"

static volatile int cancel_requested;

static void
on_signal (int sig)
{
  (void) sig;
  cancel_requested = 1;
}

volatile int *
cancel_on_signals (void)
{
  struct sigaction sa = { .sa_handler = on_signal };
  sigemptyset (&sa.sa_mask);
  sigaction (SIGINT, &sa, NULL);
  sigaction (SIGTERM, &sa, NULL);
  return &cancel_requested;
}
