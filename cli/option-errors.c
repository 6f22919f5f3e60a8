/* What exactly is wrong when getopt_long refuses a command line.
 *
 * getopt_long runs with opterr off and only says '?'; its optind then
 * points past the bad word, or still at it when the bad letter sat
 * inside a word ("-x.qcow2"), so argv[optind - 1] can be the previous,
 * innocent word.  Instead, the command line is read again here with
 * getopt_long's own grammar and the command's own option tables: the
 * first word that grammar rejects is the one getopt_long stopped at,
 * since permuting operands never changes the order of the options. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"

/* What an option's argument looks like, from the usage text: the word
 * after "--sync " or "-O " there.  "a|b|c" reads "a, b or c". */
static char *
argument_hint (const char *usage, const char *spelling)
{
  size_t len = strlen (spelling);
  for (const char *p = strstr (usage, spelling); p;
       p = strstr (p + 1, spelling)) {
    bool starts_word = p == usage || strchr (" [|\n", p[-1]);
    if (!starts_word || (p[len] != ' ' && p[len] != '='))
      continue;
    const char *arg = p + len + 1;
    /* "[--retry N]" ends at the bracket, "src=A[,bitmap=B]" does not */
    size_t n = strcspn (arg, " \n"), depth = 0;
    for (size_t k = 0; k < n; k++)
      if (arg[k] == '[')
        depth++;
      else if (arg[k] == ']' && depth-- == 0) {
        n = k;
        break;
      }
    if (n == 0 || arg[0] == '-' || arg[0] == '[')
      continue;
    char *out = malloc (4 * n + 1);     /* each "|" may grow to " or " */
    if (!out)
      return NULL;
    char *o = out;
    size_t last_bar = n;
    for (size_t i = 0; i < n; i++)
      if (arg[i] == '|')
        last_bar = i;
    for (size_t i = 0; i < n; i++) {
      if (arg[i] != '|')
        *o++ = arg[i];
      else if (i == last_bar)
        o = stpcpy (o, " or ");
      else
        o = stpcpy (o, ", ");
    }
    *o = '\0';
    return out;
  }
  return NULL;
}

/* OPTION ("-O", or "--output-format" even when abbreviated), of table
 * entry LO (NULL if it has none), was given without its argument;
 * SHORT_NAME is its letter, 0 if it has none.  The usage text may show
 * either spelling with the argument, so both are looked up. */
static int
needs_argument (const char *usage, const char *cmd, const char *option,
                const struct option *lo, int short_name)
{
  char spelling[128];
  char *hint = NULL;
  if (short_name > 0 && short_name <= CHAR_MAX) {
    snprintf (spelling, sizeof spelling, "-%c", short_name);
    hint = argument_hint (usage, spelling);
  }
  if (lo && !hint) {
    snprintf (spelling, sizeof spelling, "--%s", lo->name);
    hint = argument_hint (usage, spelling);
  }
  int ret = hint ? usage_error (usage, "%s: option '%s' needs an argument "
                                "(%s)", cmd, option, hint)
                 : usage_error (usage, "%s: option '%s' needs an argument",
                                cmd, option);
  free (hint);
  return ret;
}

/* A word that begins with '-' but reads like a file name. */
static bool
looks_like_file (const char *word)
{
  return strchr (word, '.') || strchr (word, '/') || access (word, F_OK) == 0;
}

static int
unrecognized (const char *usage, const char *cmd, const char *word,
              char bad_letter, const struct option *long_options)
{
  if (looks_like_file (word))
    return usage_error (usage, "%s: unrecognized option '%s': to name a file "
                        "that starts with '-', write './%s' or put '--' "
                        "before the file names", cmd, word, word);

  /* "--synk" or "-sync" for "--sync" */
  const char *name = word + (word[1] == '-' ? 2 : 1);
  size_t n = strcspn (name, "=");
  char *typed = strndup (name, n);
  struct suggestion s = { 0 };
  if (typed && (word[1] == '-' || n > 1))
    for (const struct option *o = long_options; o->name; o++)
      if (strcmp (o->name, "long-options") != 0)
        suggest_consider (&s, typed, o->name);
  free (typed);
  if (s.best)
    return usage_error (usage, "%s: unrecognized option '%.*s': did you mean "
                        "'--%s'?", cmd, (int) (name - word + n), word, s.best);
  if (word[1] != '-' && word[1] != bad_letter)
    return usage_error (usage, "%s: unrecognized option '-%c' in '%s'", cmd,
                        bad_letter, word);
  return usage_error (usage, "%s: unrecognized option '%.*s'", cmd,
                      (int) (name - word + n), word);
}

/* Check "--name[=value]" at ARGV[*I]; on success, step *I past a value
 * given as the next word. */
static int
check_long (const char *usage, const char *cmd, int argc, char **argv,
            int *i, const struct option *long_options)
{
  const char *word = argv[*i], *name = word + 2;
  size_t n = strcspn (name, "=");
  const struct option *found = NULL;
  bool ambiguous = false;
  for (const struct option *o = long_options; o->name; o++) {
    if (strncmp (o->name, name, n) != 0)
      continue;
    if (strlen (o->name) == n) {
      found = o;
      ambiguous = false;
      break;
    }
    if (!found)
      found = o;
    else if (found->has_arg != o->has_arg || found->val != o->val)
      ambiguous = true;
  }
  if (!found)
    return unrecognized (usage, cmd, word, 0, long_options);
  if (ambiguous) {
    /* "--a, --b or --c" */
    char list[512] = "";
    size_t used = 0, left = 0;
    for (const struct option *o = long_options; o->name; o++)
      left += strncmp (o->name, name, n) == 0;
    for (const struct option *o = long_options; o->name; o++)
      if (strncmp (o->name, name, n) == 0 && used < sizeof list) {
        left--;
        used += (size_t) snprintf (list + used, sizeof list - used, "%s--%s",
                                   !used ? "" : left ? ", " : " or ",
                                   o->name);
      }
    return usage_error (usage, "%s: option '%.*s' is ambiguous: it could be "
                        "%s", cmd, (int) n + 2, word, list);
  }
  if (name[n] == '=' && found->has_arg == no_argument)
    return usage_error (usage, "%s: option '--%s' takes no argument", cmd,
                        found->name);
  if (name[n] != '=' && found->has_arg == required_argument) {
    if (*i + 1 >= argc) {
      char option[128];
      snprintf (option, sizeof option, "--%s", found->name);
      return needs_argument (usage, cmd, option, found, found->val);
    }
    ++*i;
  }
  return 0;
}

/* Check "-abc" at ARGV[*I]; on success, step *I past an argument given
 * as the next word. */
static int
check_short (const char *usage, const char *cmd, int argc, char **argv,
             int *i, const char *short_options,
             const struct option *long_options)
{
  const char *word = argv[*i];
  for (const char *p = word + 1; *p; p++) {
    const char *spec = *p != ':' ? strchr (short_options, *p) : NULL;
    if (!spec)
      return unrecognized (usage, cmd, word, *p, long_options);
    if (spec[1] != ':')
      continue;
    if (p[1] == '\0' && spec[2] != ':') {
      if (*i + 1 >= argc) {
        const struct option *lo = long_options;
        while (lo->name && lo->val != *p)
          lo++;
        char option[3] = { '-', *p, '\0' };
        return needs_argument (usage, cmd, option, lo->name ? lo : NULL, *p);
      }
      ++*i;
    }
    break;             /* the rest of the word is the argument */
  }
  return 0;
}

int
bad_option (const char *usage, const char *cmd, int argc, char **argv,
            const char *short_options, const struct option *long_options)
{
  for (int i = 1; i < argc; i++) {
    const char *word = argv[i];
    int ret = 0;
    if (strcmp (word, "--") == 0)
      break;
    if (word[0] != '-' || word[1] == '\0')
      continue;                     /* an operand */
    if (word[1] == '-')
      ret = check_long (usage, cmd, argc, argv, &i, long_options);
    else
      ret = check_short (usage, cmd, argc, argv, &i, short_options,
                         long_options);
    if (ret)
      return ret;
  }
  /* getopt_long refused something this grammar accepts: still say so. */
  return usage_error (usage, "%s: invalid option", cmd);
}
