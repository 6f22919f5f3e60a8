/* The progress bar: drawn on stderr only when it is a
 * terminal, at most every 100 ms; the library only calls back. */
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"

static double
now (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

void
progress_init (struct progress *p)
{
  p->enabled = isatty (STDERR_FILENO);
  p->start = now ();
  p->last = 0;
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
  int width = 30, fill = (int) (pct / 100.0 * width);
  char bar[31];
  for (int i = 0; i < width; i++)
    bar[i] = i < fill ? '#' : '.';
  bar[width] = '\0';
  double eta = rate > 0 ? (double) (total - done) / rate : 0;
  fprintf (stderr, "\r[%s] %5.1f%%  %.1f/%.1f MiB  %.1f MiB/s  ETA %.0fs ",
           bar, pct, (double) done / 1048576.0, (double) total / 1048576.0,
           rate / 1048576.0, eta);
}

void
progress_end (struct progress *p)
{
  if (p->enabled && p->last > 0)
    fputc ('\n', stderr);
}
