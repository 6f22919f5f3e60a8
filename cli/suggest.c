/* "Did you mean ...?": the known word closest to a mistyped one. */
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

/* Edits that turn A into B: insert, delete or replace one character, or
 * swap two neighbours (the commonest typo, "cpoy"), each counting one. */
static size_t
edit_distance (const char *a, const char *b)
{
  size_t la = strlen (a), lb = strlen (b);
  if (la > 64 || lb > 64)     /* no command or option is this long */
    return SIZE_MAX;
  size_t d[65][65];
  for (size_t i = 0; i <= la; i++)
    d[i][0] = i;
  for (size_t j = 0; j <= lb; j++)
    d[0][j] = j;
  for (size_t i = 1; i <= la; i++)
    for (size_t j = 1; j <= lb; j++) {
      size_t best = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
      if (d[i - 1][j] + 1 < best)
        best = d[i - 1][j] + 1;
      if (d[i][j - 1] + 1 < best)
        best = d[i][j - 1] + 1;
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
          d[i - 2][j - 2] + 1 < best)
        best = d[i - 2][j - 2] + 1;
      d[i][j] = best;
    }
  return d[la][lb];
}

void
suggest_consider (struct suggestion *s, const char *word,
                  const char *candidate)
{
  size_t d = edit_distance (word, candidate);
  /* Two edits at most, and under half of the candidate: "x" is not a
   * typo of "map", but "mpa" and "bitmaps" are. */
  if (d > 2 || 2 * d > strlen (candidate))
    return;
  if (!s->best || d < s->distance) {
    s->best = candidate;
    s->distance = d;
  }
}
