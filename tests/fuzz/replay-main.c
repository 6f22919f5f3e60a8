/* Replays files through the fuzz target without libFuzzer: the corpus
 * regression test (zstd's regression_driver.c idea).  Usage:
 * replay FILE... ; exits 0 if no input crashed (crashes abort the
 * process, and the sanitizers report them). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
main (int argc, char **argv)
{
  int n = 0;
  for (int i = 1; i < argc; i++) {
    FILE *fp = fopen (argv[i], "rb");
    if (!fp) {
      perror (argv[i]);
      return 1;
    }
    /* The corpus images are small; read at most 16 MiB of each. */
    size_t cap = 16u << 20, len;
    uint8_t *buf = malloc (cap);
    if (!buf)
      return 1;
    len = fread (buf, 1, cap, fp);
    fclose (fp);
    LLVMFuzzerTestOneInput (buf, len);
    free (buf);
    n++;
  }
  printf ("replayed %d inputs\n", n);
  return 0;
}
