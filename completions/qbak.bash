# bash completion for qbak.
#
# Commands and options come from the binary itself (qbak --commands,
# qbak CMD --long-options), so they never drift; the names on an image or
# in a repository already on the line (bitmaps, point ids, disks) come from
# its hidden helper, qbak __complete, which reads without locks, writes
# nothing and prints nothing but names.  Works with bash-completion's
# _init_completion and, where it is missing, on COMP_WORDS alone.

# The options that take a value in the next word (or after '=').
_qbak_takes_value ()
{
  case $1 in
    -f|--format|-F|--backing-format|-O|--output-format|-g|--granularity|\
    --image|--from-image|--sync|--bitmap|--bitmap-mode|--backing|\
    --cluster-size|--on-error|--retry|--job|--completion-mode|--freeze-cmd|\
    --thaw-cmd|--freeze-timeout|--full-every|--tz|--keep-*|--at|--disk|\
    --sample|--outdated-after|--source) return 0 ;;
  esac
  return 1
}

# _qbak_scan: from words[] and cword, set _qbak_args (the arguments that
# are not options or option values, after the command; the current word
# left out), _qbak_argn (the current word's place among them, counted
# from 0, or -1 if it is an option's value) and _qbak_format (the value of
# -f/--format on the line, if any).
_qbak_scan ()
{
  _qbak_args=() _qbak_argn=-1 _qbak_format=
  local i w dashdash= skip=
  for ((i = 2; i < ${#words[@]}; i++)); do
    w=${words[i]}
    if [[ $skip ]]; then
      skip=
      [[ ${words[i - 1]} == -f || ${words[i - 1]} == --format ]] &&
        _qbak_format=$w
      continue
    fi
    if [[ ! $dashdash && $w == -- ]]; then
      dashdash=1
      continue
    fi
    if [[ ! $dashdash && $w == -?* ]]; then
      [[ $w == --format=* ]] && _qbak_format=${w#*=}
      [[ $w != *=* ]] && _qbak_takes_value "$w" && skip=1
      continue
    fi
    if ((i == cword)); then
      _qbak_argn=${#_qbak_args[@]}
      continue
    fi
    _qbak_args+=("$w")
  done
}

# _qbak_names QBAK KIND ARG...: qbak __complete KIND ARG..., one name a line.
_qbak_names ()
{
  local qbak=$1
  shift
  "$qbak" __complete "$@" 2>/dev/null
}

# _qbak_bitmaps QBAK IMAGE: the bitmap names of IMAGE, with the -f on the
# line (a guest's raw disk is never probed as qcow2 for its names).
_qbak_bitmaps ()
{
  [[ -n $2 && -e $2 ]] || return 0
  if [[ $_qbak_format ]]; then
    _qbak_names "$1" bitmaps -f "$_qbak_format" "$2"
  else
    _qbak_names "$1" bitmaps "$2"
  fi
}

# _qbak_repo_names QBAK KIND: the point ids or disk names of the first
# argument on the line that is a repository.
_qbak_repo_names ()
{
  local a out
  for a in "${_qbak_args[@]}"; do
    [[ -d $a ]] || continue
    out=$(_qbak_names "$1" "$2" "$a")
    if [[ $out ]]; then
      printf '%s\n' "$out"
      return
    fi
  done
}

# _qbak_reply WORDS: COMPREPLY from newline-separated WORDS matching cur
# (names may hold spaces).
_qbak_reply ()
{
  local IFS=$'\n'
  COMPREPLY=($(compgen -W "$1" -- "$cur"))
}

_qbak_files ()
{
  if declare -F _filedir >/dev/null; then
    _filedir "$@"
  else
    local IFS=$'\n'
    COMPREPLY=($(compgen -f -- "$cur"))
    compopt -o filenames 2>/dev/null
  fi
}

_qbak_dirs ()
{
  if declare -F _filedir >/dev/null; then
    _filedir -d
  else
    local IFS=$'\n'
    COMPREPLY=($(compgen -d -- "$cur"))
    compopt -o filenames 2>/dev/null
  fi
}

_qbak ()
{
  local cur prev words cword split=
  if declare -F _init_completion >/dev/null; then
    # -s: "--opt=value" is split, and split is set to true.
    _init_completion -s || return
  else
    # Without bash-completion: COMP_WORDS split at '=' (COMP_WORDBREAKS);
    # put "--opt" "=" "value" back together as one word.
    local i w join=
    words=() cword=0
    for ((i = 0; i < ${#COMP_WORDS[@]}; i++)); do
      w=${COMP_WORDS[i]}
      if [[ $w == = && ${#words[@]} -gt 1 && ${words[${#words[@]} - 1]} == -* ]]; then
        words[${#words[@]} - 1]+==
        join=1
      elif [[ $join ]]; then
        words[${#words[@]} - 1]+=$w
        join=
      else
        words+=("$w")
      fi
      ((i == COMP_CWORD)) && cword=$((${#words[@]} - 1))
    done
    cur=${words[cword]}
    prev=${words[cword - 1]}
    if [[ $cur == -*=* ]]; then
      prev=${cur%%=*}
      cur=${cur#*=}
      split=true
    fi
  fi

  local qbak=${words[0]}
  qbak=${qbak/#\~/$HOME}
  command -v "$qbak" >/dev/null 2>&1 || qbak=qbak

  if ((cword == 1)); then
    _qbak_reply "$("$qbak" --commands 2>/dev/null)
help
--help
--version"
    return
  fi
  local cmd=${words[1]}
  if [[ $cmd == help ]]; then
    ((cword == 2)) && _qbak_reply "$("$qbak" --commands 2>/dev/null)"
    return
  fi

  _qbak_scan
  local sub=
  [[ $cmd == bitmap ]] && sub=${_qbak_args[0]}

  # An option's value.
  case $prev in
    --sync) _qbak_reply $'full\ntop\nincremental\nbitmap\nchecksums'; return ;;
    --bitmap-mode) _qbak_reply $'on-success\nalways\nnever'; return ;;
    --on-error) _qbak_reply $'report\nignore'; return ;;
    --completion-mode) _qbak_reply $'grouped\nindividual'; return ;;
    -O|--output-format) _qbak_reply $'qcow2\nraw'; return ;;
    -f|--format) _qbak_reply $'qcow2\nqcow\nraw'; return ;;
    -F|--backing-format) _qbak_reply $'qcow2\nraw\nqcow'; return ;;
    --bitmap)
      [[ $cmd == copy ]] && _qbak_reply "$(_qbak_bitmaps "$qbak" "${_qbak_args[0]}")"
      return ;;
    --at)
      _qbak_reply "$(_qbak_repo_names "$qbak" points)
latest"
      return ;;
    --disk)
      _qbak_reply "$(_qbak_repo_names "$qbak" disks)"
      return ;;
    --tz)
      # Zone names are file names under the zone folder, not here: a
      # folder (Europe/) gets its slash and no space after it.
      local zones=${TZDIR:-/usr/share/zoneinfo} zone IFS=$'\n'
      for zone in $(cd "$zones" 2>/dev/null && compgen -f -- "$cur"); do
        [[ -d $zones/$zone ]] && zone+=/
        COMPREPLY+=("$zone")
      done
      [[ ${#COMPREPLY[@]} -eq 1 && ${COMPREPLY[0]} == */ ]] &&
        compopt -o nospace 2>/dev/null
      return ;;
    --freeze-cmd|--thaw-cmd)
      local IFS=$'\n'
      COMPREPLY=($(compgen -c -- "$cur"))
      return ;;
    --backing|--image|--from-image|--source)
      _qbak_files
      return ;;
    -g|--granularity|--cluster-size|--retry|--job|--freeze-timeout|\
    --full-every|--keep-*|--sample|--outdated-after)
      return ;;
  esac
  # --opt=value for an option without values: nothing to offer.
  [[ $split == true ]] && return

  if [[ $cur == -* ]]; then
    _qbak_reply "$("$qbak" "$cmd" --long-options 2>/dev/null)"
    [[ ${COMPREPLY-} ]] && compopt +o filenames 2>/dev/null
    return
  fi

  case $cmd in
    bitmap)
      if ((_qbak_argn == 0)); then
        _qbak_reply $'list\ndump\nadd\nremove\nclear\nenable\ndisable\nmerge'
        return
      fi
      # Names, after IMAGE (or with --image IMG: from the first IMG).
      local image=${_qbak_args[1]} first_name=2 i
      for ((i = 2; i < ${#words[@]} - 1; i++)); do
        if [[ ${words[i]} == --image ]]; then
          image=${words[i + 1]} first_name=1
          break
        fi
        [[ ${words[i]} == --image=* ]] && { image=${words[i]#*=} first_name=1; break; }
      done
      case $sub in
        remove|clear|enable|disable|dump|merge)
          if ((_qbak_argn >= first_name)); then
            [[ $sub == merge && $_qbak_argn -gt $first_name ]] &&
              [[ " ${words[*]} " == *" --from-image"* ]] && return
            _qbak_reply "$(_qbak_bitmaps "$qbak" "$image")"
            return
          fi ;;
        add)
          ((_qbak_argn >= first_name)) && return ;;
      esac
      _qbak_files
      ;;
    protect|unprotect)
      case $_qbak_argn in
        0) _qbak_dirs ;;
        1) _qbak_reply "$(_qbak_repo_names "$qbak" points)" ;;
      esac
      ;;
    list|prune)
      _qbak_dirs
      ;;
    *)
      _qbak_files
      ;;
  esac
}
complete -F _qbak qbak
