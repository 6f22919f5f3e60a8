/* Sizes for people, as qemu-img prints them: "64 MiB", "1.35 MiB",
 * "64 MiB (67108864 bytes)". */
#include <inttypes.h>
#include <stdio.h>

#include "cli/cli.h"

const char *
human_size (char buf[HUMAN_SIZE_LEN], uint64_t bytes)
{
  static const char *const prefixes[] = { "", "Ki", "Mi", "Gi", "Ti", "Pi",
                                          "Ei" };
  /* qemu's size_to_str: the largest unit of which there is at least one,
   * but 1000 or more of a unit already reads in the next one ("0.977
   * MiB", not "1e+03 KiB"), printed with three significant digits. */
  size_t i = 0;
  while (i + 1 < sizeof prefixes / sizeof prefixes[0] &&
         (double) bytes * 1.024 >= (double) (UINT64_C (1) << (10 * (i + 1))))
    i++;
  snprintf (buf, HUMAN_SIZE_LEN, "%0.3g %sB",
            (double) bytes / (double) (UINT64_C (1) << (10 * i)),
            prefixes[i]);
  return buf;
}

const char *
human_size_exact (char buf[HUMAN_SIZE_LEN], uint64_t bytes)
{
  char short_form[HUMAN_SIZE_LEN];
  snprintf (buf, HUMAN_SIZE_LEN, "%s (%" PRIu64 " bytes)",
            human_size (short_form, bytes), bytes);
  return buf;
}
