# bash completion for qbak.  Options come from the binary itself
# (qbak --commands, qbak CMD --long-options), so they never drift.
_qbak ()
{
  local cur prev words cword
  _init_completion || return
  if [[ $cword -eq 1 ]]; then
    COMPREPLY=($(compgen -W "$(qbak --commands 2>/dev/null) help --help --version" -- "$cur"))
    return
  fi
  local cmd=${words[1]}
  if [[ $cmd == help ]]; then
    [[ $cword -eq 2 ]] && COMPREPLY=($(compgen -W "$(qbak --commands 2>/dev/null)" -- "$cur"))
    return
  fi
  if [[ $cmd == bitmap && $cword -eq 2 ]]; then
    COMPREPLY=($(compgen -W "list dump add remove clear enable disable merge" -- "$cur"))
    return
  fi
  case $prev in
    --sync) COMPREPLY=($(compgen -W "full top incremental bitmap checksums" -- "$cur")); return ;;
    --bitmap-mode) COMPREPLY=($(compgen -W "on-success always never" -- "$cur")); return ;;
    --on-error) COMPREPLY=($(compgen -W "report ignore" -- "$cur")); return ;;
    --completion-mode) COMPREPLY=($(compgen -W "grouped individual" -- "$cur")); return ;;
    -O|--output-format) COMPREPLY=($(compgen -W "qcow2 raw" -- "$cur")); return ;;
    -f|--format) COMPREPLY=($(compgen -W "qcow2 qcow raw" -- "$cur")); return ;;
  esac
  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "$(qbak "$cmd" --long-options 2>/dev/null)" -- "$cur"))
    return
  fi
  _filedir
}
complete -F _qbak qbak
