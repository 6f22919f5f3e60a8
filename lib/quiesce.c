/* Quiesce hooks: the freeze command runs before the group's
 * point in time and the thaw command after it; if the freeze was started,
 * the thaw always runs, whatever happened.  Offline images are quiescent
 * by nature; the hooks are for setups that snapshot a live guest (freeze
 * the guest's file systems, take the snapshot, thaw). */
#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/error.h"
#include "lib/quiesce.h"

extern char **environ;

int
qbak_internal_run_hook (const char *what, const char *cmd, unsigned timeout)
{
  posix_spawnattr_t attr;
  posix_spawn_file_actions_t actions;
  pid_t pid;
  char *argv[] = { (char *) "sh", (char *) "-c", (char *) cmd, NULL };

  /* Its own process group: a ^C meant for qbak does not kill the hook
   * (the thaw must still run), and a timeout kills the whole hook. */
  posix_spawnattr_init (&attr);
  posix_spawnattr_setflags (&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup (&attr, 0);
  /* qbak's stdout carries only its result (--json, or nothing for cron):
   * whatever the hook prints goes to stderr with qbak's own messages. */
  posix_spawn_file_actions_init (&actions);
  posix_spawn_file_actions_adddup2 (&actions, STDERR_FILENO, STDOUT_FILENO);
  int r = posix_spawn (&pid, "/bin/sh", &actions, &attr, argv, environ);
  posix_spawn_file_actions_destroy (&actions);
  posix_spawnattr_destroy (&attr);
  if (r != 0) {
    set_io_error (r, "%s hook: cannot run '%s'", what, cmd);
    return -1;
  }

  struct timespec t0;
  clock_gettime (CLOCK_MONOTONIC, &t0);
  for (;;) {
    int status;
    pid_t w = waitpid (pid, &status, WNOHANG);
    if (w == pid) {
      if (WIFEXITED (status) && WEXITSTATUS (status) == 0)
        return 0;
      if (WIFEXITED (status))
        set_io_error (0, "%s hook '%s' failed with exit status %d", what,
                      cmd, WEXITSTATUS (status));
      else
        set_io_error (0, "%s hook '%s' was killed by signal %d", what, cmd,
                      WTERMSIG (status));
      return -1;
    }
    if (w < 0 && errno != EINTR) {
      set_io_error (errno, "%s hook '%s': wait", what, cmd);
      return -1;
    }
    struct timespec t;
    clock_gettime (CLOCK_MONOTONIC, &t);
    double elapsed = (double) (t.tv_sec - t0.tv_sec) +
                     (double) (t.tv_nsec - t0.tv_nsec) / 1e9;
    if (timeout && elapsed >= (double) timeout) {
      kill (-pid, SIGKILL);
      waitpid (pid, &status, 0);
      set_io_error (0, "%s hook '%s' timed out after %u s and was killed",
                    what, cmd, timeout);
      return -1;
    }
    struct timespec ts = { 0, 20 * 1000000L };
    nanosleep (&ts, NULL);
  }
}
