/* The table of an image's bitmaps, as `qbak bitmap list` prints it and
 * `qbak info` under "bitmaps:": one look for one thing. */
#include <string.h>

#include "cli/cli.h"

void
print_bitmap_table (struct qbak_image *img, const char *indent)
{
  size_t n = qbak_bitmap_count (img);
  int name_width = 4;           /* the column fits the longest name */
  for (size_t i = 0; i < n; i++) {
    struct qbak_bitmap_info b;
    qbak_bitmap_info_init (&b);
    if (qbak_bitmap_get_info (img, i, &b) == 0 &&
        (int) strlen (b.name) > name_width)
      name_width = (int) strlen (b.name);
  }
  printf ("%s%-*s %11s %-8s %s\n", indent, name_width, "NAME",
          "GRANULARITY", "FLAGS", "DIRTY");
  if (n == 0)
    printf ("%s(no bitmaps)\n", indent);
  for (size_t i = 0; i < n; i++) {
    struct qbak_bitmap_info b;
    qbak_bitmap_info_init (&b);
    if (qbak_bitmap_get_info (img, i, &b) < 0)
      continue;
    char gran[HUMAN_SIZE_LEN], dirty[HUMAN_SIZE_LEN];
    printf ("%s%-*s %11s %-8s %s\n", indent, name_width, b.name,
            human_size (gran, b.granularity),
            b.in_use ? "in-use" : b.enabled ? "auto" : "disabled",
            b.dirty_known ? human_size_exact (dirty, b.dirty_bytes)
                          : "unknown");
  }
}
