/* qbak __complete WHAT ...: names for the shell completions, one a line.
 *
 *   qbak __complete bitmaps [-f FMT] IMAGE   the persistent bitmaps of IMAGE
 *   qbak __complete points REPO              the point ids of REPO, oldest
 *                                            first
 *   qbak __complete disks REPO               the disk names of REPO's points
 *
 * Completion runs while someone types, on whatever the line holds: this
 * command never writes, never waits for a lock (images are read as
 * `qbak info -U` reads them, without QEMU's locks, and only the image's
 * own metadata: no file it names is opened), and on any error prints
 * nothing and exits 0, so a half-typed path never puts a message in the
 * middle of the line.  It is not listed in help or --commands. */
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

/* A name goes out only if it is one line of printable text: a name in an
 * image is chosen by whoever wrote the image. */
static void
put_name (const char *name)
{
  if (!name || !name[0])
    return;
  for (const unsigned char *p = (const unsigned char *) name; *p; p++)
    if (*p < 0x20 || *p == 0x7f)
      return;
  puts (name);
}

static void
complete_bitmaps (const char *path, const char *format)
{
  if (format && strcmp (format, "qcow2") != 0 && strcmp (format, "qcow") != 0
      && strcmp (format, "raw") != 0)
    return;
  struct qbak_image *img = qbak_image_open_format (
    path, format, QBAK_OPEN_FORCE_SHARE | QBAK_OPEN_NO_BACKING
    | QBAK_OPEN_INSPECT);
  if (!img)
    return;
  size_t n = qbak_bitmap_count (img);
  for (size_t i = 0; i < n; i++) {
    struct qbak_bitmap_info b;
    qbak_bitmap_info_init (&b);
    if (qbak_bitmap_get_info (img, i, &b) == 0)
      put_name (b.name);
  }
  qbak_image_close (img);
}

/* The point ids of the repository at LOCATION, oldest first, or (DISKS)
 * the names of its disks, each once, in the order they first appear. */
static void
complete_repo (const char *location, bool disks)
{
  struct qbak_repo *r = qbak_repo_open (location);
  if (!r)
    return;
  size_t n = qbak_repo_point_count (r), n_seen = 0, cap = 0;
  const char **seen = NULL;          /* owned by R */
  for (size_t p = 0; p < n; p++) {
    struct qbak_point_info pi = { .size = sizeof pi };
    if (qbak_repo_get_point (r, p, &pi) < 0)
      continue;
    if (!disks) {
      put_name (pi.id);
      continue;
    }
    for (size_t d = 0; d < pi.n_disks; d++) {
      struct qbak_point_disk_info di = { .size = sizeof di };
      if (qbak_repo_get_point_disk (r, p, d, &di) < 0 || !di.name)
        continue;
      bool known = false;
      for (size_t k = 0; k < n_seen && !known; k++)
        known = strcmp (seen[k], di.name) == 0;
      if (known)
        continue;
      if (n_seen == cap) {
        size_t want = cap ? 2 * cap : 16;
        const char **more = realloc (seen, want * sizeof *more);
        if (!more)
          break;
        seen = more;
        cap = want;
      }
      seen[n_seen++] = di.name;
      put_name (di.name);
    }
  }
  free (seen);
  qbak_repo_close (r);
}

int
cmd_complete (int argc, char **argv)
{
  /* Nothing this command could say would help someone at a prompt. */
  if (!freopen ("/dev/null", "w", stderr))
    fclose (stderr);
  if (argc < 3)
    return EXIT_OK;
  const char *what = argv[1];
  if (strcmp (what, "bitmaps") == 0) {
    if (argc == 5 && strcmp (argv[2], "-f") == 0)
      complete_bitmaps (argv[4], argv[3]);
    else if (argc == 3)
      complete_bitmaps (argv[2], NULL);
  }
  else if (argc == 3 && strcmp (what, "points") == 0)
    complete_repo (argv[2], false);
  else if (argc == 3 && strcmp (what, "disks") == 0)
    complete_repo (argv[2], true);
  fflush (stdout);
  return EXIT_OK;
}
