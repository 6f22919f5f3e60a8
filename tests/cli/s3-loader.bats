#!/usr/bin/env bats
# libcurl is loaded only by an S3 repository (common/s3-curl.c): qbak and
# libqbak do not link it, and a command on images or on a folder
# repository never loads it (the dynamic loader's own log, LD_DEBUG=libs,
# is the oracle: it names every library a process loads, dlopen's too).
# When it cannot be loaded, an S3 location fails with one line saying so,
# exit 2, before any request.  The failure is made with QBAK_S3_LIBCURL
# (the library names to try), which exists only in test builds
# (QBAK_FAILPOINTS).  No gateway is needed: nothing may reach one.

bats_require_minimum_version 1.5.0
load helpers

setup() {
    require_common_oracles
    require_qbak
    setup_tmpdir
    qemu-img create -q -f qcow2 d.qcow2 4M
    qemu-io -f qcow2 -c 'write -P 7 0 1M' d.qcow2 >/dev/null
    # Keys, so that the S3 commands get as far as the client; the
    # endpoint is set per test.
    export AWS_ACCESS_KEY_ID=qbak-test AWS_SECRET_ACCESS_KEY=qbak-test-secret
    export AWS_REGION=us-east-1
    unset AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL_S3
    export AWS_SHARED_CREDENTIALS_FILE=$T/none AWS_CONFIG_FILE=$T/none
    # A refused connection is retried: keep the waits short.
    export QBAK_S3_BACKOFF_MS=1
}

teardown() {
    if [ -n "${LISTENER_PID:-}" ]; then
        exec {LISTENER_FD}>&- 2>/dev/null || true
        wait "$LISTENER_PID" 2>/dev/null || true
    fi
}

# libs_loaded CMD...: run qbak CMD... under LD_DEBUG=libs (its log in
# files of its own, so qbak's stderr stays as it is) with $output,
# $stderr and $status as `run --separate-stderr` sets them, and $libs the
# loader's log of every process it ran.
libs_loaded() {
    rm -f "$T"/ld-debug.*
    run --separate-stderr env LD_DEBUG=libs LD_DEBUG_OUTPUT="$T/ld-debug" \
        "$QBAK" "$@"
    libs=$(cat "$T"/ld-debug.* 2>/dev/null || true)
    # The log is there and names what every qbak loads: else finding
    # no libcurl in it would prove nothing.
    [[ $libs == *"libqbak.so.0"* ]] ||
        fail "no loader log naming libqbak.so.0 for qbak $*: LD_DEBUG unsupported?"
}

# no_curl_loaded CMD...: qbak CMD... succeeds and loads no libcurl.
no_curl_loaded() {
    libs_loaded "$@"
    [ "$status" -eq 0 ] || fail "qbak $*: exit $status: $stderr"
    if [[ $libs == *libcurl* ]]; then
        fail "qbak $* loaded libcurl:" \
             "$(grep -m3 libcurl "$T"/ld-debug.*)"
    fi
}

# start_listener: a TCP port on 127.0.0.1 ($PORT) that counts the
# connections made to it until stop_listener, which sets $CONNECTIONS.
start_listener() {
    rm -f "$T/listener.in" "$T/listener.out"
    mkfifo "$T/listener.in"
    python3 -c '
import select, socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(64)
print(s.getsockname()[1], flush=True)
n = 0
while True:
    ready, _, _ = select.select([s, sys.stdin], [], [])
    if s in ready:
        s.accept()[0].close()
        n += 1
    elif sys.stdin.read(1) == "":
        break
# Connections made but not yet taken when the test said stop.
s.setblocking(False)
try:
    while True:
        s.accept()[0].close()
        n += 1
except BlockingIOError:
    pass
print(n, flush=True)
' <"$T/listener.in" >"$T/listener.out" &
    LISTENER_PID=$!
    # (Not fd 3: bats reports through it.)
    exec {LISTENER_FD}>"$T/listener.in"
    for _ in $(seq 100); do
        PORT=$(head -n1 "$T/listener.out")
        [ -n "$PORT" ] && return 0
        sleep 0.05
    done
    fail "the listener did not start"
}

stop_listener() {
    exec {LISTENER_FD}>&-
    wait "$LISTENER_PID"
    LISTENER_PID=
    CONNECTIONS=$(sed -n 2p "$T/listener.out")
    [ -n "$CONNECTIONS" ] || fail "the listener did not report"
}

@test "neither qbak nor libqbak links libcurl" {
    run ldd "$QBAK"
    [ "$status" -eq 0 ]
    [[ $output == *libqbak.so.0* ]] || fail "ldd $QBAK: $output"
    [[ $output != *libcurl* ]] ||
        fail "qbak needs libcurl: $(grep libcurl <<<"$output")"
    local lib
    lib=$(dirname "$QBAK")/libqbak.so.0
    [ -e "$lib" ] || fail "no $lib beside $QBAK"
    run ldd "$lib"
    [ "$status" -eq 0 ]
    [[ $output == *libc.so* ]] || fail "ldd $lib: $output"
    [[ $output != *libcurl* ]] ||
        fail "libqbak needs libcurl: $(grep libcurl <<<"$output")"
}

@test "commands on images and folder repositories load no libcurl" {
    no_curl_loaded --version
    no_curl_loaded info d.qcow2
    [[ $output == *d.qcow2* ]] || fail "qbak info: $output"
    no_curl_loaded backup d.qcow2 repo
    no_curl_loaded list repo
    no_curl_loaded verify repo
    no_curl_loaded __complete points repo
    [ -n "$output" ] || fail "qbak __complete points repo: no point"
    # The oracle sees a library qbak loads itself: an S3 location loads
    # libcurl (and then fails to connect to a port that refuses).
    export AWS_ENDPOINT_URL=http://127.0.0.1:1
    libs_loaded list s3://bucket/prefix
    [ "$status" -eq 1 ] || fail "qbak list s3://: exit $status: $stderr"
    [[ $libs == *libcurl* ]] || fail "an S3 location loaded no libcurl"
}

@test "without libcurl, an S3 location fails in one line, exit 2, before any request" {
    start_listener
    export AWS_ENDPOINT_URL=http://127.0.0.1:$PORT
    export QBAK_S3_LIBCURL=libqbak-no-such-curl.so.4
    local before loc=s3://bucket/some/prefix cmd
    before=$(xxhsum d.qcow2)
    for cmd in "backup d.qcow2 $loc" "list $loc" "verify $loc" \
               "restore $loc out.qcow2"; do
        # shellcheck disable=SC2086
        run --separate-stderr qbak $cmd
        [ "$status" -eq 2 ] || fail "qbak $cmd: exit $status (want 2): $stderr"
        check_error_line
        [[ $stderr == "qbak: $loc: S3 repositories need libcurl, which could not be loaded (libqbak-no-such-curl.so.4: "*"); install libcurl4" ]] ||
            fail "qbak $cmd: $stderr"
        [[ $stderr != *"--help"* ]] || fail "not a command-line error: $stderr"
    done
    stop_listener
    [ "$CONNECTIONS" -eq 0 ] || fail "$CONNECTIONS connections to the endpoint"
    # Nothing was made here either: the disk, and no folder.
    [ "$(xxhsum d.qcow2)" = "$before" ] || fail "d.qcow2 changed"
    run qemu-img info --output=json d.qcow2
    [ "$(jq '."format-specific".data.bitmaps // [] | length' <<<"$output")" -eq 0 ] ||
        fail "a bitmap was added to d.qcow2: $output"
    # (bats keeps $stderr in separate-stderr-* files here.)
    run ls -A
    [ "$(grep -v '^separate-stderr-' <<<"$output")" = \
      "$(printf '%s\n' d.qcow2 listener.in listener.out)" ] ||
        fail "files made: $output"
    # The listener does see a request: with libcurl, the same location
    # connects (and, answered by a closed connection, fails with exit 1).
    unset QBAK_S3_LIBCURL
    start_listener
    export AWS_ENDPOINT_URL=http://127.0.0.1:$PORT
    run --separate-stderr qbak list "$loc"
    stop_listener
    [ "$status" -eq 1 ] || fail "qbak list with libcurl: exit $status: $stderr"
    [ "$CONNECTIONS" -gt 0 ] || fail "the listener saw no connection"
}

@test "the JSON error of a missing libcurl is a usage error naming the location" {
    export AWS_ENDPOINT_URL=http://127.0.0.1:1
    export QBAK_S3_LIBCURL=libqbak-no-such-curl.so.4
    run --separate-stderr qbak list --json s3://bucket/p
    [ "$status" -eq 2 ] || fail "exit $status: $stderr"
    jq -e '.status == "failed" and ."exit-code" == 2 and
           (.error | test("^s3://bucket/p: S3 repositories need libcurl, "))' \
        <<<"$output" >/dev/null || fail "JSON: $output"
}

@test "the next library name is tried when the first cannot be loaded" {
    # The fallback to Debian's other flavours: a missing first name, then
    # the one installed.  The load succeeds, so the command gets as far as
    # connecting (refused: exit 1, the request's error).
    export AWS_ENDPOINT_URL=http://127.0.0.1:1
    export QBAK_S3_LIBCURL=libqbak-no-such-curl.so.4:libcurl.so.4
    run --separate-stderr qbak list s3://bucket/p
    [ "$status" -eq 1 ] || fail "exit $status: $stderr"
    [[ $stderr == *"GET failed after 8 attempts"* ]] || fail "$stderr"
    [[ $stderr != *libcurl* ]] || fail "$stderr"
}
