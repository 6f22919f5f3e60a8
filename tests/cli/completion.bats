#!/usr/bin/env bats
# The shell completions (completions/qbak.bash, completions/_qbak): bash's
# completion function is driven as bash drives it (COMP_WORDS, COMP_CWORD,
# COMP_LINE), with and without bash-completion loaded, and its candidates
# are compared with the oracles: the bitmaps qemu-img made and lists, the
# points and disks `qbak list --json` shows.  The hidden helper behind the
# names, qbak __complete, prints names or nothing, never an error.

bats_require_minimum_version 1.5.0
load helpers

BASH_COMPLETION=/usr/share/bash-completion/bash_completion

setup() {
    require_common_oracles
    require_qbak
    setup_tmpdir
    [ -r "$BASH_COMPLETION" ] ||
        fail "missing $BASH_COMPLETION: install the Debian package 'bash-completion'"
    # The completion runs the qbak named on the line: the one under test.
    mkdir -p bin && ln -sf "$QBAK" bin/qbak
    export PATH=$T/bin:$PATH
    qemu-img create -q -f qcow2 a.qcow2 1M
    qemu-img bitmap --add a.qcow2 nightly
    qemu-img bitmap --add a.qcow2 weekly
    qemu-img bitmap --add a.qcow2 'with space'
}

teardown() {
    kill_daemons
}

# want LINE EXPECTED: queue a check that bash's completion of qbak offers
# exactly EXPECTED (newline-separated, any order) at the end of LINE.
# LINE is split into COMP_WORDS as bash splits it (at blanks, and at '='
# as COMP_WORDBREAKS says); a trailing blank means an empty current word.
want() {
    WANT_LINES+=("$1")
    WANT_REPLIES+=("$(norm "$2")")
}

# norm LINES: the non-empty lines of LINES sorted and joined with '|',
# in bash alone (a loaded machine makes every process count).
norm() {
    local -a a=()
    local x t i j
    while IFS= read -r x; do
        [ -n "$x" ] && a+=("$x")
    done <<<"$1"
    for ((i = 1; i < ${#a[@]}; i++)); do
        t=${a[i]}
        for ((j = i - 1; j >= 0; j--)); do
            [[ ${a[j]} > $t ]] || break
            a[j + 1]=${a[j]}
        done
        a[j + 1]=$t
    done
    local IFS='|'
    echo "${a[*]}"
}

# check MODE: run the queued checks in one bash, MODE bc (bash-completion
# loaded) or plain (no bash-completion: COMP_WORDS only).
check() {
    local mode=$1 got i bad=""
    mapfile -t got < <(bash -c "$(declare -f norm)"'
        mode=$1
        [ "$mode" = bc ] && . "$2"
        . "$3"
        if [ "$mode" = plain ] && declare -F _init_completion >/dev/null; then
            echo "bash-completion loaded in plain mode" >&2
            exit 1
        fi
        shift 3
        for line; do
            read -ra COMP_WORDS <<<"${line//=/ = }"
            [[ $line == *" " || $line == *= ]] && COMP_WORDS+=("")
            COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
            COMP_LINE=$line COMP_POINT=${#line}
            COMPREPLY=()
            _qbak
            norm "$(printf "%s\n" "${COMPREPLY[@]}")"
        done' _ "$mode" "$BASH_COMPLETION" "$QBAK_SRCDIR/completions/qbak.bash" \
        "${WANT_LINES[@]}")
    [ "${#got[@]}" -eq "${#WANT_LINES[@]}" ] ||
        fail "$mode: ${#got[@]} answers for ${#WANT_LINES[@]} lines"
    for i in "${!WANT_LINES[@]}"; do
        [ "${got[i]}" = "${WANT_REPLIES[i]}" ] ||
            bad+=$'\n'"  '${WANT_LINES[i]}<TAB>': got [${got[i]}], expected [${WANT_REPLIES[i]}]"
    done
    [ -z "$bad" ] || fail "$mode:$bad"
}

# check_both: the queued checks with and without bash-completion.
check_both() {
    check bc && check plain
}

@test "completion: commands and options come from the binary" {
    local cmd
    # The helper is hidden.
    want "qbak " "$(qbak --commands; printf 'help\n--help\n--version\n')"
    want "qbak __" ""
    want "qbak re" "restore"
    want "qbak help " "$(qbak --commands)"
    for cmd in $(qbak --commands); do
        want "qbak $cmd --" "$(qbak "$cmd" --long-options)"
    done
    want "qbak bitmap " $'list\ndump\nadd\nremove\nclear\nenable\ndisable\nmerge'
    check_both
}

@test "completion: option values" {
    want "qbak copy a.qcow2 t.qcow2 --sync " $'full\ntop\nincremental\nbitmap\nchecksums'
    want "qbak copy --sync=inc" "incremental"
    want "qbak copy --bitmap-mode " $'on-success\nalways\nnever'
    want "qbak copy --on-error " $'report\nignore'
    want "qbak copy --completion-mode " $'grouped\nindividual'
    want "qbak copy -O " $'qcow2\nraw'
    want "qbak copy --output-format=r" "raw"
    want "qbak info -f " $'qcow2\nqcow\nraw'
    want "qbak copy -F " $'qcow2\nraw\nqcow'
    want "qbak backup --tz Europe/Berl" "Europe/Berlin"
    want "qbak backup --tz Europ" "Europe/"
    # A value nobody can guess: nothing, rather than file names.
    want "qbak prune --keep-daily " ""
    check_both
}

@test "completion: bitmap names of the image on the line, as qemu-img made them" {
    local sub names
    names=$(qemu_bitmap_names a.qcow2)
    [ "$(wc -l <<<"$names")" -eq 3 ] || fail "qemu-img lists: $names"
    for sub in remove clear enable disable dump merge; do
        want "qbak bitmap $sub a.qcow2 " "$names"
    done
    want "qbak bitmap merge a.qcow2 nightly " "$names"
    want "qbak bitmap -f qcow2 clear a.qcow2 w" $'weekly\nwith space'
    want "qbak bitmap remove --image a.qcow2 " "$names"
    want "qbak copy a.qcow2 t.qcow2 --sync incremental --bitmap " "$names"
    want "qbak copy a.qcow2 t.qcow2 --bitmap=ni" "nightly"
    # A new name, an image's place, a raw image, a missing one: no names.
    want "qbak bitmap add a.qcow2 " ""
    want "qbak bitmap remove -f raw a.qcow2 " ""
    want "qbak bitmap remove nothere.qcow2 " ""
    check_both
}

@test "completion: bitmap names while a VM holds the image (read without locks)" {
    require_bitmap_oracles
    local pid names before
    names=$(qemu_bitmap_names a.qcow2)
    qemu-storage-daemon --blockdev "driver=file,node-name=f,filename=$T/a.qcow2" \
        --blockdev driver=qcow2,node-name=q,file=f </dev/null >qsd.log 2>&1 3>&- &
    pid=$!
    track_pid "$pid"
    for _ in $(seq 200); do
        [ -d "/proc/$pid" ] || fail "qemu-storage-daemon exited: $(cat qsd.log)"
        qemu-img info a.qcow2 >/dev/null 2>&1 || break
        sleep 0.05
    done
    ! qemu-img info a.qcow2 >/dev/null 2>&1 || fail "the image is not locked"
    before=$(sha256sum <a.qcow2)
    want "qbak bitmap dump a.qcow2 " "$names"
    check bc
    [ "$(sha256sum <a.qcow2)" = "$before" ] || fail "completion changed the image"
}

@test "completion: point ids and disk names of the repository on the line" {
    local ids disks
    qemu-img create -q -f qcow2 b.qcow2 1M
    qbak backup a.qcow2 b.qcow2=data repo 2>/dev/null
    qbak backup a.qcow2 b.qcow2=data repo
    ids=$(qbak list --json repo | jq -r '.points[].id')
    disks=$(qbak list --json repo | jq -r '[.points[].disks[].name] | unique | .[]')
    [ "$(wc -l <<<"$ids")" -eq 2 ] || fail "qbak list: $ids"
    [ "$disks" = $'a\ndata' ] || fail "qbak list disks: $disks"
    want "qbak restore repo out --at " "$(printf '%s\nlatest\n' "$ids")"
    want "qbak restore repo out --disk " "$disks"
    want "qbak restore repo out --disk=d" "data"
    want "qbak protect repo " "$ids"
    want "qbak unprotect repo " "$ids"
    want "qbak verify --source a.qcow2 repo --at " "$(printf '%s\nlatest\n' "$ids")"
    want "qbak verify repo --disk " "$disks"
    # No repository on the line: only what needs none.
    want "qbak restore --at " "latest"
    want "qbak protect bin " ""
    check_both
}

@test "completion: the helper prints names or nothing, and exits 0" {
    local what
    echo "not an image" >junk
    mkfifo fifo
    for what in "bitmaps nothere" "bitmaps junk" "bitmaps fifo" "bitmaps -f vmdk a.qcow2" \
                "points nothere" "disks ." "points" "nonsense x" ""; do
        # shellcheck disable=SC2086
        run --separate-stderr timeout 10 qbak __complete $what
        [ "$status" -eq 0 ] || fail "qbak __complete $what: exit $status"
        [ -z "$output$stderr" ] || fail "qbak __complete $what printed: $output$stderr"
    done
    run --separate-stderr qbak __complete bitmaps a.qcow2
    [ "$status" -eq 0 ] && [ "$output" = "$(qemu_bitmap_names a.qcow2)" ] ||
        fail "qbak __complete bitmaps a.qcow2: $output"
    ! qbak --commands | grep -q complete || fail "--commands lists the helper"
    ! qbak --help | grep -q __complete || fail "--help lists the helper"
}

@test "completion: the zsh completion parses and offers the same names" {
    require_oracle zsh zsh
    run zsh -n "$QBAK_SRCDIR/completions/_qbak"
    [ "$status" -eq 0 ] || fail "zsh -n _qbak: $output"
    qbak backup a.qcow2 repo 2>/dev/null
    local line got want
    # zsh's completion system needs a terminal; its compadd and _files are
    # stood in for by functions that print what they are given.
    for line in "qbak bitmap remove a.qcow2 ''" "qbak copy a.qcow2 t --bitmap ''" \
                "qbak restore repo out --at ''" "qbak copy --sync ''"; do
        got=$(zsh -fc '
            compadd () {
                [[ $1 == -a ]] && { print -l -- ${(P)2}; return; }
                [[ $1 == -- ]] && shift
                print -l -- "$@"
            }
            _files () { print -- "<files>"; }
            eval "words=($1)"
            CURRENT=$#words PREFIX=
            source "$2"' _ "$line" "$QBAK_SRCDIR/completions/_qbak")
        case $line in
            *--at*) want=$(qbak list --json repo | jq -r '.points[].id'; echo latest) ;;
            *--sync*) want=$'full\ntop\nincremental\nbitmap\nchecksums' ;;
            *) want=$(qemu_bitmap_names a.qcow2) ;;
        esac
        [ "$(norm "$got")" = "$(norm "$want")" ] ||
            fail "zsh: '$line': got [$got], expected [$want]"
    done
}
