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
# stdout, and prints a usage line on stderr.
check_usage_error() {
    run --separate-stderr qbak "$@"
    [ "$status" -eq 2 ] || fail "qbak $*: exit $status, expected 2; stderr: $stderr"
    [ -z "$output" ] || fail "qbak $*: wrote on stdout: $output"
    grep -qi 'usage:' <<<"$stderr" || fail "qbak $*: no usage line on stderr: $stderr"
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
