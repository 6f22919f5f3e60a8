/* S3's XML answers through expat (s3-xml.h). */
#include <expat.h>
#include <stdlib.h>
#include <string.h>

#include "common/s3-xml.h"

/* Longer texts are cut: no value S3 sends qbak (a key, an ETag, an error
 * message) comes near. */
#define TEXT_MAX 8192

struct xml_state {
  XML_Parser parser;
  s3_xml_cb cb;
  void *opaque;
  int result;
  size_t len;
  char text[TEXT_MAX + 1];
};

static void XMLCALL
on_start (void *data, const XML_Char *name, const XML_Char **attrs)
{
  (void) name;
  (void) attrs;
  struct xml_state *s = data;
  s->len = 0;
  s->text[0] = '\0';
}

static void XMLCALL
on_text (void *data, const XML_Char *text, int len)
{
  struct xml_state *s = data;
  size_t n = (size_t) len;
  if (n > TEXT_MAX - s->len)
    n = TEXT_MAX - s->len;
  memcpy (s->text + s->len, text, n);
  s->len += n;
  s->text[s->len] = '\0';
}

static void XMLCALL
on_end (void *data, const XML_Char *name)
{
  struct xml_state *s = data;
  int r = s->cb (name, s->text, s->opaque);
  s->len = 0;
  s->text[0] = '\0';
  if (r != 0) {
    s->result = r;
    XML_StopParser (s->parser, XML_FALSE);
  }
}

int
s3_xml_parse (const char *buf, size_t len, s3_xml_cb cb, void *opaque)
{
  struct xml_state *s = calloc (1, sizeof *s);
  if (!s)
    return -1;
  s->parser = XML_ParserCreate ("UTF-8");
  if (!s->parser) {
    free (s);
    return -1;
  }
  s->cb = cb;
  s->opaque = opaque;
  XML_SetUserData (s->parser, s);
  XML_SetElementHandler (s->parser, on_start, on_end);
  XML_SetCharacterDataHandler (s->parser, on_text);
  int r = 0;
  if (len > (size_t) 1 << 30)
    r = -1;
  else if (XML_Parse (s->parser, buf, (int) len, XML_TRUE) ==
           XML_STATUS_ERROR)
    r = s->result ? s->result : -1;
  else
    r = s->result;
  XML_ParserFree (s->parser);
  free (s);
  return r;
}
