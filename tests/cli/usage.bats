#!/usr/bin/env bats
# qbak's command line: --help, --version, and usage errors (exit 2).

bats_require_minimum_version 1.5.0
load helpers

setup() {
    require_common_oracles
    require_qbak
    setup_tmpdir
    qemu-img create -q -f qcow2 a.qcow2 1M
}

# check_help ARGS...: `qbak ARGS... --help` exits 0, prints a usage text
# naming the command on stdout, and nothing on stderr.
check_help() {
    local cmd="qbak $*"
    run --separate-stderr qbak "$@" --help
    [ "$status" -eq 0 ] || fail "$cmd --help: exit $status; stderr: $stderr"
    [ -z "$stderr" ] || fail "$cmd --help wrote on stderr: $stderr"
    grep -qi 'usage:' <<<"$output" || fail "$cmd --help: no usage line on stdout: $output"
    grep -qF -- "$cmd" <<<"$output" || fail "$cmd --help: usage does not mention '$cmd': $output"
}

# check_usage_error ARGS...: `qbak ARGS...` exits 2, prints nothing on
# stdout, and one line on stderr: "qbak: " and what is wrong, then a
# pointer to the right --help instead of the whole usage text (which
# would bury the message in cron's mail).
check_usage_error() {
    run --separate-stderr qbak "$@"
    [ "$status" -eq 2 ] || fail "qbak $*: exit $status, expected 2; stderr: $stderr"
    [ -z "$output" ] || fail "qbak $*: wrote on stdout: $output"
    check_error_line || return
    [[ $stderr =~ "Try 'qbak "([a-z]+ )?"--help'."$ ]] ||
        fail "qbak $*: no \"Try 'qbak ... --help'.\" pointer at the end: $stderr"
}

# check_first_line_prefix ARGS...: the first stderr line of a usage error
# starts with "qbak: " (not the path the binary was run as).
check_first_line_prefix() {
    run --separate-stderr qbak "$@"
    [ "$status" -eq 2 ] || fail "qbak $*: exit $status, expected 2; stderr: $stderr"
    [[ $stderr == "qbak: "* ]] || fail "qbak $*: stderr does not start with 'qbak: ': $stderr"
}

@test "usage: qbak --help exits 0 with usage on stdout" {
    check_help
}

@test "usage: qbak info --help exits 0 with usage on stdout" {
    check_help info
}

@test "usage: qbak map --help exits 0 with usage on stdout" {
    check_help map
}

@test "usage: qbak bitmap --help exits 0 with usage on stdout" {
    check_help bitmap
}

@test "usage: qbak bitmap list --help exits 0 with usage on stdout" {
    check_help bitmap list
}

@test "usage: qbak bitmap dump --help exits 0 with usage on stdout" {
    check_help bitmap dump
}

@test "usage: qbak --version exits 0 and prints a version on stdout" {
    run --separate-stderr qbak --version
    [ "$status" -eq 0 ] || fail "exit $status; stderr: $stderr"
    [ -n "$output" ] || fail "nothing on stdout"
}

@test "usage: qbak with no command exits 2 with usage on stderr" {
    check_usage_error
}

@test "usage: unknown command exits 2 with usage on stderr" {
    check_usage_error frobnicate a.qcow2
}

@test "usage: unknown top-level option exits 2 with usage on stderr" {
    check_usage_error --bogus
}

@test "usage: info with an unknown option exits 2 with usage on stderr" {
    check_usage_error info a.qcow2 --bogus
}

@test "usage: info without IMAGE exits 2 with usage on stderr" {
    check_usage_error info
}

@test "usage: info with an extra argument exits 2 with usage on stderr" {
    check_usage_error info a.qcow2 a.qcow2
}

@test "usage: map with an unknown option exits 2 with usage on stderr" {
    check_usage_error map a.qcow2 --bogus
}

@test "usage: map without IMAGE exits 2 with usage on stderr" {
    check_usage_error map
}

@test "usage: bitmap without a subcommand exits 2 with usage on stderr" {
    check_usage_error bitmap
}

@test "usage: unknown bitmap subcommand exits 2 with usage on stderr" {
    check_usage_error bitmap frobnicate a.qcow2
}

@test "usage: bitmap list with an unknown option exits 2 with usage on stderr" {
    check_usage_error bitmap list a.qcow2 --bogus
}

@test "usage: bitmap list without IMAGE exits 2 with usage on stderr" {
    check_usage_error bitmap list
}

@test "usage: bitmap dump with an unknown option exits 2 with usage on stderr" {
    check_usage_error bitmap dump a.qcow2 b0 --bogus
}

@test "usage: bitmap dump without NAME exits 2 with usage on stderr" {
    check_usage_error bitmap dump a.qcow2
}

@test "usage: bitmap dump without IMAGE and NAME exits 2 with usage on stderr" {
    check_usage_error bitmap dump
}

@test "usage: an unknown option's error line starts with 'qbak: '" {
    check_first_line_prefix info a.qcow2 --bogus
}

@test "usage: a missing argument's error line starts with 'qbak: '" {
    check_first_line_prefix bitmap dump a.qcow2
}

# ---------------------------------------------------------------------
# Every parse error names the real problem, in one line.

# usage_says TEXT ARGS...: `qbak ARGS...` is a one-line usage error
# (check_usage_error) whose message contains TEXT.
usage_says() {
    local want=$1
    shift
    check_usage_error "$@" || return
    [[ $stderr == *"$want"* ]] || fail "qbak $*: expected '$want' in: $stderr"
}

# check_help_flag FLAG ARGS...: `qbak ARGS... FLAG` prints the same help
# as `qbak ARGS... --help`, on stdout, exit 0, nothing on stderr.
check_help_flag() {
    local flag=$1 want
    shift
    want=$("$QBAK" "$@" --help)
    run --separate-stderr qbak "$@" "$flag"
    [ "$status" -eq 0 ] || fail "qbak $* $flag: exit $status; stderr: $stderr"
    [ -z "$stderr" ] || fail "qbak $* $flag wrote on stderr: $stderr"
    [ "$output" = "$want" ] || fail "qbak $* $flag: not the --help text: $output"
    grep -qF -- "qbak $*" <<<"$output" || fail "qbak $* $flag: help does not mention 'qbak $*'"
}

@test "usage: a missing option argument is named as such, with its values" {
    usage_says "option '--sync' needs an argument (full, top, incremental, bitmap or checksums)" \
        copy a.qcow2 t.qcow2 --sync
    [ ! -e t.qcow2 ] && [ ! -e t.qcow2.part ] || fail "a target was made"
    usage_says "option '--bitmap-mode' needs an argument (on-success, always or never)" \
        copy a.qcow2 t.qcow2 --sync full --bitmap-mode
    usage_says "option '-O' needs an argument (qcow2 or raw)" copy a.qcow2 t.qcow2 --sync full -O
    usage_says "option '--output-format' needs an argument (qcow2 or raw)" \
        copy a.qcow2 t.qcow2 --sync full --output-format
    usage_says "option '--on-error' needs an argument (report or ignore)" copy a.qcow2 t.qcow2 --on-error
    usage_says "option '--completion-mode' needs an argument (grouped or individual)" \
        copy --sync full --completion-mode
    usage_says "option '--granularity' needs an argument" bitmap add a.qcow2 x --granularity
    usage_says "option '-g' needs an argument" bitmap add a.qcow2 x -g
    usage_says "option '-f' needs an argument" info a.qcow2 -f
    usage_says "option '--format' needs an argument" map a.qcow2 --format
    usage_says "option '--from-image' needs an argument" bitmap merge a.qcow2 d s --from-image
}

# Every option a command lists (the table completions use) that takes an
# argument says so when the argument is missing, and none is ever called
# unrecognized: the messages come from the same tables getopt uses.
@test "usage: every option of every command, given last without its argument, is named correctly" {
    local with_arg=" sync bitmap bitmap-mode backing cluster-size output-format format
        on-error retry job completion-mode freeze-cmd thaw-cmd freeze-timeout
        granularity image from-image " cmd opt n=0 bad=()
    local -A operands=([copy]="a.qcow2 t.qcow2" [info]=a.qcow2 [map]=a.qcow2
                       [bitmap]="list a.qcow2")
    for cmd in copy info map bitmap; do
        for opt in $("$QBAK" "$cmd" --long-options); do
            n=$((n + 1))
            # shellcheck disable=SC2086
            run --separate-stderr qbak "$cmd" ${operands[$cmd]} "$opt"
            [ "$status" -eq 0 ] || [ "$status" -eq 2 ] || bad+=("$cmd $opt: exit $status: $stderr")
            [[ $stderr != *unrecognized* ]] || bad+=("$cmd $opt: $stderr")
            if [[ $with_arg == *" ${opt#--} "* ]]; then
                [[ $stderr == "qbak: $cmd: option '$opt' needs an argument"* ]] ||
                    bad+=("$cmd $opt: $stderr")
            fi
            [ "$status" -eq 0 ] || [ "$(grep -c '' <<<"$stderr")" -eq 1 ] ||
                bad+=("$cmd $opt: not one line: $stderr")
        done
    done
    [ "$n" -gt 20 ] || fail "only $n options listed by --long-options"
    [ "${#bad[@]}" -eq 0 ] || fail "$(printf '%s\n' "${bad[@]}")"
    [ ! -e t.qcow2 ] || fail "a target was made"
}

@test "usage: an unknown option is named, with the closest known one" {
    usage_says "unrecognized option '--bogus'" copy a.qcow2 t.qcow2 --sync full --bogus
    usage_says "unrecognized option '--synk': did you mean '--sync'?" copy a.qcow2 t.qcow2 --synk full
    usage_says "unrecognized option '-sync': did you mean '--sync'?" copy a.qcow2 t.qcow2 -sync full
    usage_says "unrecognized option '--jsn': did you mean '--json'?" info a.qcow2 --jsn
    usage_says "unrecognized option '-z'" map a.qcow2 -z
    usage_says "unrecognized option '-z' in '-Uz'" info a.qcow2 -Uz
    usage_says "unrecognized option '--granularty': did you mean '--granularity'?" \
        bitmap add --granularty 64k a.qcow2 x
    usage_says "unrecognized option '--bogus'" --bogus
    usage_says "did you mean '--version'?" --verison
    [ ! -e t.qcow2 ] && [ ! -e t.qcow2.part ] || fail "a target was made"
}

@test "usage: an ambiguous abbreviation lists what it could be; a unique one works" {
    usage_says "option '--bit' is ambiguous: it could be --bitmap or --bitmap-mode" \
        copy a.qcow2 t.qcow2 --sync full --bit x
    usage_says "option '--f' is ambiguous" copy a.qcow2 t.qcow2 --sync full --f x
    run --separate-stderr qbak info a.qcow2 --js
    [ "$status" -eq 0 ] || fail "info --js: exit $status: $stderr"
    jq -e '.format == "qcow2"' <<<"$output" >/dev/null || fail "info --js: $output"
}

@test "usage: an option that takes no argument refuses one" {
    usage_says "option '--json' takes no argument" info a.qcow2 --json=yes
}

@test "usage: a file name starting with '-' is blamed, not the previous word, with how to name it" {
    qemu-img create -q -f qcow2 ./-x.qcow2 1M
    local args
    for args in "copy -x.qcow2 t.qcow2 --sync full" "copy a.qcow2 -x.qcow2 --sync full" \
                "info -x.qcow2" "map -x.qcow2" "bitmap list -x.qcow2" \
                "bitmap add -x.qcow2 b0"; do
        # shellcheck disable=SC2086
        usage_says "unrecognized option '-x.qcow2'" $args
        [[ $stderr == *"'./-x.qcow2'"* && $stderr == *"'--'"* ]] ||
            fail "qbak $args: no hint about ./-x.qcow2 or --: $stderr"
    done
    [ ! -e t.qcow2 ] && [ ! -e t.qcow2.part ] || fail "a target was made"
    [ -z "$(qemu_bitmap_names ./-x.qcow2)" ] || fail "a bitmap was added to -x.qcow2"
    # and the hint works: both spellings name the file
    run --separate-stderr qbak info ./-x.qcow2 --json
    [ "$status" -eq 0 ] || fail "info ./-x.qcow2: exit $status: $stderr"
    run --separate-stderr qbak copy --sync full -- -x.qcow2 t.qcow2
    [ "$status" -eq 0 ] || fail "copy -- -x.qcow2: exit $status: $stderr"
    run --separate-stderr qemu-img compare ./-x.qcow2 t.qcow2
    [ "$status" -eq 0 ] || fail "qemu-img compare: $output $stderr"
}

@test "usage: -h after a command prints that command's help, exit 0" {
    check_help_flag -h copy
    check_help_flag -h info
    check_help_flag -h map
    check_help_flag -h bitmap
    check_help_flag -h bitmap add
    check_help_flag -h bitmap list
    check_help_flag -h bitmap merge
    check_help_flag -h
}

@test "usage: qbak help COMMAND prints the command's help, exit 0" {
    local cmd want
    for cmd in copy info map bitmap; do
        want=$("$QBAK" "$cmd" --help)
        run --separate-stderr qbak help "$cmd"
        [ "$status" -eq 0 ] || fail "help $cmd: exit $status: $stderr"
        [ -z "$stderr" ] || fail "help $cmd: stderr: $stderr"
        [ "$output" = "$want" ] || fail "help $cmd is not 'qbak $cmd --help': $output"
    done
    run --separate-stderr qbak help
    [ "$status" -eq 0 ] && [ "$output" = "$("$QBAK" --help)" ] || fail "qbak help: $status $output"
}

@test "usage: qbak help with an unknown command is a usage error naming it" {
    usage_says "help: unknown command 'nosuch'" help nosuch
    usage_says "did you mean 'copy'?" help cpoy
}

@test "usage: a mistyped command or subcommand suggests the closest one" {
    usage_says "unknown command 'cpy': did you mean 'copy'?" cpy a.qcow2 t.qcow2 --sync full
    usage_says "unknown command 'bitmaps': did you mean 'bitmap'?" bitmaps list a.qcow2
    usage_says "unknown command 'ifno': did you mean 'info'?" ifno a.qcow2
    usage_says "unknown subcommand 'ad': did you mean 'add'?" bitmap ad a.qcow2 x
    usage_says "unknown subcommand 'lst': did you mean 'list'?" bitmap lst a.qcow2
    usage_says "unknown command 'frobnicate' (backup, bitmap, copy, info, list, map, protect, prune, restore, unprotect or verify)" frobnicate
    [ -z "$(qemu_bitmap_names a.qcow2)" ] || fail "a bitmap was added"
}

@test "usage: a bad option value names the option and what it may be" {
    usage_says "invalid --sync 'none' (full, top, incremental, bitmap or checksums)" copy a.qcow2 t.qcow2 --sync none
    usage_says "invalid --bitmap-mode 'x'" copy a.qcow2 t.qcow2 --sync full --bitmap-mode x
    usage_says "invalid -O 'vmdk' (qcow2 or raw)" copy a.qcow2 t.qcow2 --sync full -O vmdk
    usage_says "invalid --cluster-size 'big'" copy a.qcow2 t.qcow2 --sync full --cluster-size big
    usage_says "invalid --on-error 'x'" copy a.qcow2 t.qcow2 --sync full --on-error x
    usage_says "invalid --retry 'x'" copy a.qcow2 t.qcow2 --sync full --retry x
    usage_says "invalid --completion-mode 'x'" copy --sync full --completion-mode x
    usage_says "invalid --freeze-timeout '0'" copy a.qcow2 t.qcow2 --sync full --freeze-timeout 0
    usage_says "invalid -f 'qcow3' (qcow2, qcow or raw)" copy -f qcow3 a.qcow2 t.qcow2 --sync full
    usage_says "invalid -f 'qcow3' (qcow2, qcow or raw)" bitmap add -f qcow3 a.qcow2 x
    usage_says "invalid --granularity 'x'" bitmap add --granularity x a.qcow2 b
    [ ! -e t.qcow2 ] && [ ! -e t.qcow2.part ] || fail "a target was made"
    [ -z "$(qemu_bitmap_names a.qcow2)" ] || fail "a bitmap was added"
}

@test "usage: missing and extra operands of every command are one line each" {
    usage_says "missing IMAGE" info
    usage_says "info:" info a.qcow2 a.qcow2
    usage_says "missing IMAGE" map
    usage_says "map:" map a.qcow2 a.qcow2
    usage_says "missing SRC and TARGET" copy --sync full
    usage_says "missing TARGET" copy a.qcow2 --sync full
    usage_says "copy:" copy a.qcow2 t.qcow2 u.qcow2 --sync full
    usage_says "missing subcommand (list, dump, add" bitmap
    usage_says "missing subcommand" bitmap -U
    usage_says "missing IMAGE" bitmap list
    usage_says "unexpected argument 'extra'" bitmap list a.qcow2 extra
    usage_says "missing NAME" bitmap dump a.qcow2
    usage_says "unexpected argument 'extra'" bitmap dump a.qcow2 x extra
    local sub
    for sub in add remove clear enable disable merge; do
        usage_says "bitmap $sub: missing IMAGE" bitmap "$sub"
        usage_says "bitmap $sub: missing NAME" bitmap "$sub" a.qcow2
    done
    usage_says "unexpected argument 'y'" bitmap add a.qcow2 x y
    usage_says "bitmap merge: missing SRC" bitmap merge a.qcow2 d
    usage_says "--granularity is only for add" bitmap list --granularity 64k a.qcow2
    usage_says "--image is for the changes" bitmap list --image a.qcow2
    usage_says "-U is for list and dump" bitmap add -U a.qcow2 x
    [ ! -e t.qcow2 ] && [ ! -e u.qcow2 ] || fail "a target was made"
    [ -z "$(qemu_bitmap_names a.qcow2)" ] || fail "a bitmap was added"
}

@test "usage: bitmap options may come before the subcommand" {
    run --separate-stderr qbak bitmap -f qcow2 --granularity 128k add a.qcow2 early
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    [ "$(qemu_granularity a.qcow2 early)" = 131072 ] || fail "$(qemu_info a.qcow2)"
    run --separate-stderr qemu-img check a.qcow2
    [ "$status" -eq 0 ] || fail "qemu-img check: $output $stderr"
}

# complete_bash WORDS...: what completions/qbak.bash offers for the last
# word of "qbak WORDS...", one a line (bash-completion's helpers stubbed).
complete_bash() {
    (
        _init_completion() {
            words=("${COMP_WORDS[@]}") cword=$COMP_CWORD
            cur=${words[cword]} prev=${words[cword - 1]}
        }
        _filedir() { COMPREPLY=(FILE); }
        complete() { :; }
        # shellcheck disable=SC1091
        source "$QBAK_SRCDIR/completions/qbak.bash"
        COMP_WORDS=(qbak "$@") COMP_CWORD=$#
        _qbak
        printf '%s\n' "${COMPREPLY[@]}"
    )
}

@test "usage: bash completion knows help, its commands, -f's formats and every option" {
    [ "$(complete_bash he)" = help ] || fail "qbak he<TAB>: $(complete_bash he)"
    [ "$(complete_bash help c)" = copy ] || fail "qbak help c<TAB>: $(complete_bash help c)"
    [ "$(complete_bash info -f '' | sort | tr '\n' ' ')" = "qcow qcow2 raw " ] ||
        fail "qbak info -f <TAB>: $(complete_bash info -f '')"
    [ "$(complete_bash bitmap add --format '' | sort | tr '\n' ' ')" = "qcow qcow2 raw " ] ||
        fail "qbak bitmap add --format <TAB>: $(complete_bash bitmap add --format '')"
    complete_bash copy --freeze | grep -qx -- --freeze-cmd || fail "qbak copy --freeze<TAB>"
    complete_bash copy a --sync '' | grep -qx incremental || fail "qbak copy --sync <TAB>"
}

@test "usage: an s3:// repository without S3 credentials is refused clearly (exit 2), and nothing is made" {
    cd "$BATS_TEST_TMPDIR"
    qemu-img create -q -f qcow2 disk.qcow2 1M
    for args in "backup disk.qcow2 s3://bucket/vm" "list s3://bucket/vm" \
                "restore s3://bucket/vm out" "verify s3://bucket/vm" \
                "prune --keep-last 1 s3://bucket/vm"; do
        run env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY \
            -u AWS_SESSION_TOKEN -u AWS_PROFILE -u AWS_ENDPOINT_URL \
            HOME="$BATS_TEST_TMPDIR/nohome" "$QBAK" $args
        [ "$status" -eq 2 ] || fail "qbak $args: exit $status: $output"
        [[ $output == *"s3://bucket/vm: no S3 credentials: set AWS_ACCESS_KEY_ID"* ]] ||
            fail "qbak $args: $output"
    done
    [ ! -e s3: ] && [ ! -e out ] || fail "a file named after the URL was made"
    qemu-img info --output=json disk.qcow2 | grep -q '"bitmaps"' &&
        fail "the disk got a bitmap" || true
}
