/* The XML of S3's answers (listings, multipart uploads, errors), read
 * with expat: a real parser rather than string scanning, so that entity
 * escapes in keys and error texts ("&amp;"), CDATA, attributes and
 * namespaces are handled as XML defines them. */
#ifndef QBAK_COMMON_S3_XML_H
#define QBAK_COMMON_S3_XML_H

#include <stddef.h>

/* Called at the end of every element with its name (no namespace) and
 * its text since the last element started (decoded; "" for a container
 * such as <Contents>, whose children were reported before it).
 * Non-zero stops the parse and is returned. */
typedef int (*s3_xml_cb) (const char *name, const char *text, void *opaque);

/* Parse BUF.  0, the callback's non-zero value, or -1 if it is not
 * well-formed XML (no error set: the caller says what it was reading). */
int s3_xml_parse (const char *buf, size_t len, s3_xml_cb cb, void *opaque);

#endif
