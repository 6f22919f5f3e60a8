/* The progress bar: drawn on stderr when it is a terminal (or -p says so),
 * at most every 100 ms, in place with '\r' on one line that fits the
 * terminal; the library only calls back. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"

bool opt_progress, opt_quiet;

bool
progress_option (int c)
{
  if (c == 'p')
    opt_progress = true;
  else if (c == 'q')
    opt_quiet = true;
  else
    return false;
  return true;
}

bool
summary_wanted (void)
{
  return !opt_quiet && isatty (STDOUT_FILENO);
}

int
terminal_columns (void)
{
  struct winsize ws;
  if (ioctl (STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
    return ws.ws_col;
  const char *env = getenv ("COLUMNS");
  char *end;
  long n = env ? strtol (env, &end, 10) : 0;
  if (env && *end == '\0' && n > 0 && n < 10000)
    return (int) n;
  return 80;
}

static double
now (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* The bar on screen, which progress_pause wipes. */
static struct progress *current;

void
progress_init (struct progress *p)
{
  current = p;
  p->enabled = !opt_quiet && (opt_progress || isatty (STDERR_FILENO));
  p->start = now ();
  p->last = 0;
  p->drawn = 0;
}

/* "0:42", "12:05", "1:02:03"; "--:--" before the rate is known. */
static void
format_eta (char *buf, size_t size, double seconds)
{
  if (seconds < 0 || seconds > 359999) {
    snprintf (buf, size, "--:--");
    return;
  }
  unsigned s = (unsigned) (seconds + 0.5);
  if (s >= 3600)
    snprintf (buf, size, "%u:%02u:%02u", s / 3600, s / 60 % 60, s % 60);
  else
    snprintf (buf, size, "%u:%02u", s / 60, s % 60);
}

void
progress_update (uint64_t done, uint64_t total, void *opaque)
{
  struct progress *p = opaque;
  double t = now ();
  if (!p->enabled || (t - p->last < 0.1 && done < total))
    return;
  p->last = t;
  double el = t - p->start;
  double rate = el > 0 ? (double) done / el : 0;
  double pct = total ? 100.0 * (double) done / (double) total : 100.0;
  if (pct > 100.0)
    pct = 100.0;
  char d[HUMAN_SIZE_LEN], tot[HUMAN_SIZE_LEN], r[HUMAN_SIZE_LEN], eta[32];
  human_size (d, done);
  human_size (tot, total);
  human_size (r, (uint64_t) rate);
  format_eta (eta, sizeof eta, rate > 0 ? (double) (total - done) / rate
                                        : -1);

  /* The longest text that leaves a bar of 10 columns; the last column
   * stays empty, since writing it makes some terminals wrap. */
  int width = terminal_columns () - 1;
  char tail[256];
  int n = snprintf (tail, sizeof tail, " %5.1f%%  %s of %s  %s/s  ETA %s",
                    pct, d, tot, r, eta);
  if (n + 12 > width)
    n = snprintf (tail, sizeof tail, " %5.1f%%  %s of %s", pct, d, tot);
  if (n + 12 > width)
    n = snprintf (tail, sizeof tail, " %5.1f%%", pct);
  char line[512];
  int bar = width - n - 2;
  int len;
  if (bar >= 10 && width < (int) sizeof line) {
    if (bar > 50)
      bar = 50;
    int fill = (int) (pct / 100.0 * bar);
    line[0] = '[';
    for (int i = 0; i < bar; i++)
      line[1 + i] = i < fill ? '#' : '.';
    line[1 + bar] = ']';
    memcpy (line + 2 + bar, tail, (size_t) n + 1);
    len = bar + 2 + n;
  }
  else {
    len = snprintf (line, sizeof line, "%.*s", width > 0 ? width : 0,
                    tail + 1);
    if (len > width)
      len = width > 0 ? width : 0;
  }
  /* Spaces over what a longer previous line left. */
  int pad = p->drawn > len ? p->drawn - len : 0;
  fprintf (stderr, "\r%s%*s", line, pad, "");
  if (pad)
    fprintf (stderr, "\r%s", line);
  fflush (stderr);
  p->drawn = len;
}

void
progress_pause (void)
{
  if (current && current->drawn && isatty (STDERR_FILENO)) {
    fprintf (stderr, "\r%*s\r", current->drawn, "");
    fflush (stderr);
    current->drawn = 0;
    current->last = 0;          /* draw it again at once */
  }
}

void
progress_end (struct progress *p)
{
  if (current == p)
    current = NULL;
  if (!p->enabled || !p->drawn)
    return;
  if (isatty (STDERR_FILENO))
    /* Wipe the bar: the summary (or the error) takes its line. */
    fprintf (stderr, "\r%*s\r", p->drawn, "");
  else
    fputc ('\n', stderr);
  fflush (stderr);
  p->drawn = 0;
}
