# Build one man page: cmake -DSCDOC=... -DIN=x.1.scd -DOUT=x.1 -P scdoc.cmake
#
# scdoc writes "-" as it is, which groff may break a line after, and the
# man macros turn hyphenation back on at .TH, so "--bitmap-mode" could be
# cut in two or print with a Unicode hyphen that a reader cannot paste
# into a shell.  Options are the point of these pages: every hyphen
# becomes \- (a character groff never breaks at), and hyphenation and
# justification are turned off again after .TH, as in git's pages.
execute_process(COMMAND ${SCDOC} INPUT_FILE ${IN} OUTPUT_VARIABLE page
  RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "scdoc ${IN}: ${err}")
endif()
# scdoc's output has no "\-", and its only escape with a hyphen in it is
# the motion \h'-04' of a list's bullet; two passes because the second
# hyphen of "--" is the first one's neighbour.
string(REGEX REPLACE "(^|[^\\'])-" "\\1\\\\-" page "${page}")
string(REGEX REPLACE "(^|[^\\'])-" "\\1\\\\-" page "${page}")
string(REGEX REPLACE "(\n\\.TH [^\n]*\n)" "\\1.nh\n.ad l\n" page "${page}")
file(WRITE ${OUT} "${page}")
