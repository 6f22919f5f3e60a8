/* Compressed clusters: raw deflate (QEMU's "zlib") and zstd.
 * Decompression stops once one whole cluster has been produced; the input
 * is padded to 512-byte sectors and may carry another cluster's bytes. */
#include <inttypes.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "common/error.h"
#include "formats/qcow2.h"

static int
inflate_cluster (struct qcow2 *s, const uint8_t *src, size_t srclen,
                 uint8_t *dst)
{
  z_stream z;
  memset (&z, 0, sizeof z);
  if (inflateInit2 (&z, -12) != Z_OK) {
    set_io_error (0, "%s: cannot initialise zlib", s->base.filename);
    return -1;
  }
  z.next_in = (Bytef *) src;
  z.avail_in = (uInt) srclen;
  z.next_out = dst;
  z.avail_out = s->cluster_size;
  int r = inflate (&z, Z_FINISH);
  bool ok = (r == Z_STREAM_END || r == Z_BUF_ERROR || r == Z_OK) &&
            z.avail_out == 0;
  inflateEnd (&z);
  if (!ok) {
    set_invalid ("%s: compressed cluster does not decompress (deflate)",
                 s->base.filename);
    return -1;
  }
  return 0;
}

static int
zstd_cluster (struct qcow2 *s, const uint8_t *src, size_t srclen,
              uint8_t *dst)
{
  if (!s->zstd_dctx && !(s->zstd_dctx = ZSTD_createDCtx ())) {
    set_nomem ();
    return -1;
  }
  ZSTD_DCtx_reset (s->zstd_dctx, ZSTD_reset_session_only);
  ZSTD_inBuffer in = { src, srclen, 0 };
  ZSTD_outBuffer out = { dst, s->cluster_size, 0 };
  while (out.pos < out.size) {
    size_t r = ZSTD_decompressStream (s->zstd_dctx, &out, &in);
    if (ZSTD_isError (r)) {
      set_invalid ("%s: compressed cluster does not decompress (zstd: %s)",
                   s->base.filename, ZSTD_getErrorName (r));
      return -1;
    }
    if (r == 0 || in.pos == in.size)
      break;
  }
  if (out.pos != out.size) {
    set_invalid ("%s: compressed cluster decompresses to %zu bytes, not "
                 "%" PRIu32, s->base.filename, out.pos, s->cluster_size);
    return -1;
  }
  return 0;
}

int
qcow2_decompress (struct qcow2 *s, const uint8_t *src, size_t srclen,
                  uint8_t *dst)
{
  return s->compression_type == 1 ? zstd_cluster (s, src, srclen, dst)
                                  : inflate_cluster (s, src, srclen, dst);
}
