#!/usr/bin/env bats
# The interface an admin reads: the man pages (built from docs/man/*.scd)
# render cleanly and document every option each command's --help lists
# and every exit code; `qbak help CMD`, `qbak CMD --help` and `-h`
# anywhere show the command's usage; a mistyped command gets the closest.

bats_require_minimum_version 1.5.0
load helpers

setup() {
    require_oracle man man-db
    require_oracle groff groff-base
    require_qbak
    setup_tmpdir
    MANDIR=${QBAK_BUILDDIR:-$(dirname "$QBAK")}/man
    [ -f "$MANDIR/qbak.1" ] || fail "no man pages in $MANDIR: build them (scdoc)"
    # Plain text, the same on every machine: no pager, no terminal codes,
    # ASCII hyphens.
    export MANWIDTH=80 LC_ALL=C.UTF-8 MANPAGER=cat PAGER=cat
    unset MAN_KEEP_FORMATTING
}

# render PAGE: the page as text on stdout; the test fails on a warning.
render() {
    local err
    err=$(man --warnings -l "$1" 2>&1 >"$T/page.txt") ||
        fail "man -l $1 failed: $err" || return
    [ -z "$err" ] || fail "man --warnings -l $1: $err" || return
    cat "$T/page.txt"
}

# page_of CMD: the man page documenting CMD (a .so link is followed).
page_of() {
    local p=$MANDIR/qbak-$1.1
    local so
    so=$(sed -n '1s/^\.so man1\///p' "$p" 2>/dev/null)
    [ -z "$so" ] || p=$MANDIR/$so
    echo "$p"
}

# help_options CMD...: every option `qbak CMD... --help` lists, long and
# short: in its usage lines (up to the first empty line) and on the lines
# of its option list (those that start with an option), not where the
# text mentions another program's option; and every long option the
# command accepts (its hidden --long-options, as the completions read
# them).  One a line.
help_options() {
    local help listed
    help=$(qbak "$@" --help) || fail "qbak $* --help failed" || return
    listed=$(sed -n '1,/^$/p' <<<"$help"; grep -E '^[[:space:]]+-' <<<"$help")
    {
        grep -oP '(?<![\w-])--[a-z][a-z0-9-]*[a-z0-9](?![\w.=-])' <<<"$listed"
        grep -oP '(?<![\w-])-[A-Za-z](?![\w-])' <<<"$listed"
        qbak "$@" --long-options
    } | sort -u
}

@test "man: every page renders with no warning" {
    local n=0 p
    for p in "$MANDIR"/*.[1-9]; do
        # A .so link is rendered where it is installed (next test).
        grep -q '^\.so ' "$p" && continue
        render "$p" >/dev/null
        n=$((n + 1))
    done
    [ "$n" -ge 11 ] || fail "only $n pages in $MANDIR"
}

@test "man: every command has a page, with every option its --help lists" {
    local cmd opt p text missing=""
    local cmds
    cmds=$(qbak --commands)
    [ "$(wc -l <<<"$cmds")" -ge 11 ] || fail "qbak --commands: $cmds"
    for cmd in $cmds; do
        p=$(page_of "$cmd")
        [ -f "$p" ] || { missing+=" qbak-$cmd.1(no page)"; continue; }
        text=$(render "$p") || return
        grep -q "^NAME" <<<"$text" || fail "$p: no NAME"
        grep -qF "qbak $cmd" <<<"$text" || fail "$p: does not name 'qbak $cmd'"
        for section in SYNOPSIS DESCRIPTION OPTIONS "EXIT STATUS" EXAMPLES "SEE ALSO"; do
            grep -q "^$section" <<<"$text" || missing+=" $(basename "$p"):$section"
        done
        sed -n '/^EXIT STATUS/,/^[A-Z]/p' <<<"$text" | grep -q 'qbak(1)' ||
            missing+=" $(basename "$p"):EXIT-STATUS-points-to-qbak(1)"
        local opts
        opts=$(help_options "$cmd") || return
        [ -n "$opts" ] || fail "qbak $cmd --help: no option found"
        # An entry: a line at the options' indent that starts with an
        # option ("       -f, --format FMT"); its words are the options it
        # documents.
        local -A entry=()
        local line tok toks
        while IFS= read -r line; do
            read -ra toks <<<"${line//[,\[\]=|]/ }"
            for tok in "${toks[@]}"; do
                entry[$tok]=1
            done
        done < <(grep -E '^ {7}-' <<<"$text")
        for opt in $opts; do
            [ -n "${entry[$opt]-}" ] || missing+=" $(basename "$p"):$opt"
        done
        unset entry
    done
    [ -z "$missing" ] || fail "options or sections missing from the man pages:$missing"
}

@test "man: qbak(1) lists every exit code of cli/exit-codes.h" {
    local codes text status_section code missing=""
    codes=$(sed -n 's/^#define EXIT_[A-Z_]*[[:space:]]\+\([0-9]\+\).*/\1/p' \
                "$QBAK_SRCDIR/cli/exit-codes.h")
    [ "$(wc -w <<<"$codes")" -ge 7 ] || fail "exit-codes.h: only '$codes'"
    text=$(render "$MANDIR/qbak.1") || return
    status_section=$(sed -n '/^EXIT STATUS/,/^[A-Z]/p' <<<"$text")
    for code in $codes; do
        # A row of the table: the code alone in its first cell.
        grep -qP "^\\s*[│|]\\s*$code\\s*[│|]" <<<"$status_section" ||
            missing+=" $code"
    done
    [ -z "$missing" ] || fail "qbak(1) EXIT STATUS lacks:$missing"
}

@test "man: cmake --install puts the pages where man finds them, qbak-unprotect too" {
    require_oracle cmake cmake
    local builddir=${QBAK_BUILDDIR:-$(dirname "$QBAK")}
    cmake --install "$builddir" --prefix "$T/inst" >/dev/null
    local mandir=$T/inst/share/man p
    for p in "$MANDIR"/*.[1-9]; do
        local name=${p##*/}
        [ -f "$mandir/man${name##*.}/$name" ] || fail "not installed: $name"
    done
    local cmd text
    for cmd in $(qbak --commands); do
        text=$(MANPATH=$mandir man --warnings "qbak-$cmd" 2>&1) ||
            fail "man qbak-$cmd: $text"
        grep -qF "qbak $cmd" <<<"$text" || fail "man qbak-$cmd does not show 'qbak $cmd'"
        ! grep -q "warning" <<<"$text" || fail "man qbak-$cmd: $text"
    done
    [ -f "$T/inst/share/zsh/vendor-completions/_qbak" ] || fail "zsh completion not installed"
    ls "$T"/inst/share/bash-completion/completions/qbak >/dev/null ||
        fail "bash completion not installed under the prefix"
}

@test "help: qbak help CMD, qbak CMD --help and -h anywhere print the command's usage" {
    local cmd expect
    for cmd in $(qbak --commands); do
        expect=$(qbak "$cmd" --help) || fail "qbak $cmd --help: exit $?"
        grep -q "^Usage: qbak $cmd" <<<"$expect" || fail "qbak $cmd --help: $expect"
        run --separate-stderr qbak help "$cmd"
        [ "$status" -eq 0 ] && [ "$output" = "$expect" ] && [ -z "$stderr" ] ||
            fail "qbak help $cmd differs from qbak $cmd --help: $stderr"
        run --separate-stderr qbak "$cmd" -h
        [ "$status" -eq 0 ] && [ "$output" = "$expect" ] ||
            fail "qbak $cmd -h differs from --help: $stderr"
        # After arguments, and after an option whose value is wrong: help
        # wins over the error the line would give.
        run --separate-stderr qbak "$cmd" x.qcow2 --no-such-option repo -h
        [ "$status" -eq 0 ] && [ "$output" = "$expect" ] ||
            fail "qbak $cmd ... -h: exit $status, $stderr"
    done
    run --separate-stderr qbak help bitmap add
    [ "$status" -eq 0 ] && [ "$output" = "$(qbak bitmap --help)" ] ||
        fail "qbak help bitmap add: exit $status, $stderr"
    # After --, -h is a file name.
    run --separate-stderr qbak info -- -h
    [ "$status" -ne 0 ] || fail "qbak info -- -h printed help"
}

@test "help: a mistyped command suggests the closest one, for every command" {
    local cmd typo
    for cmd in $(qbak --commands) help; do
        # Two neighbours swapped, and the last letter dropped.
        for typo in "${cmd:0:1}${cmd:2:1}${cmd:1:1}${cmd:3}" "${cmd%?}"; do
            [ "$typo" != "$cmd" ] || continue
            run --separate-stderr qbak "$typo"
            [ "$status" -eq 2 ] || fail "qbak $typo: exit $status"
            [[ $stderr == *"did you mean '$cmd'?"* ]] ||
                fail "qbak $typo: no suggestion of '$cmd': $stderr"
        done
    done
    run --separate-stderr qbak help bakup
    [[ $stderr == *"did you mean 'backup'?"* ]] || fail "qbak help bakup: $stderr"
    # The hidden helper of the completions is never suggested.
    run --separate-stderr qbak _complete
    [[ $stderr != *"__complete"* ]] || fail "qbak _complete: $stderr"
}
