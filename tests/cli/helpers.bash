# Shared helpers for qbak's bats CLI tests.
#
# Load from a .bats file with `load helpers`.  The oracles are QEMU's own
# tools (qemu-img, qemu-io, qemu-nbd, qemu-storage-daemon) plus nbdinfo and jq:
# a missing oracle FAILS the test and names the Debian package to install; it
# never skips, because a skip would hide a missing install step.
#
# Environment:
#   QBAK_SRCDIR  repository root (default: computed from this file's location)
#   QBAK         the qbak binary (default: $QBAK_SRCDIR/build/qbak)
#   VG           optional exec prefix for qbak, e.g. "valgrind -q --error-exitcode=99"

QBAK_CLI_TESTDIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
QBAK_SRCDIR=${QBAK_SRCDIR:-$(cd "$QBAK_CLI_TESTDIR/../.." && pwd)}
QBAK=${QBAK:-$QBAK_SRCDIR/build/qbak}
MKIMAGE=$QBAK_SRCDIR/tests/tools/mkimage
COMPARE_MAP=$QBAK_CLI_TESTDIR/compare-map.py
COMPARE_DUMP=$QBAK_CLI_TESTDIR/compare-dump.py
export QBAK_SRCDIR QBAK

# require_oracle CMD PACKAGE: fail (never skip) if CMD is not installed.
# Call it as a plain statement (not under `if`, `&&` or `||`) so that bats'
# errexit turns the failure into a failed test.
require_oracle() {
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "missing test oracle '$1': install the Debian package '$2'" >&2
        return 1
    fi
}

# The oracles every CLI test file needs.
require_common_oracles() {
    require_oracle qemu-img qemu-utils
    require_oracle qemu-io qemu-utils
    require_oracle jq jq
    require_oracle python3 python3
    require_oracle xxhsum xxhash
}

# The oracles for exact bitmap contents and in_use bitmaps.
require_bitmap_oracles() {
    require_oracle qemu-nbd qemu-utils
    require_oracle nbdinfo libnbd-bin
    require_oracle qemu-storage-daemon qemu-system-common
}

# require_qbak: fail if the binary under test has not been built.
require_qbak() {
    if [ ! -x "$QBAK" ]; then
        echo "qbak binary not found at '$QBAK': build it first" \
             "(cmake -S . -B build && cmake --build build) or set QBAK" >&2
        return 1
    fi
}

# qbak ARGS...: run the binary under test, behind the optional $VG prefix.
# $VG is deliberately unquoted: it may hold a command and its options.
qbak() {
    # shellcheck disable=SC2086
    ${VG:-} "$QBAK" "$@"
}

# setup_tmpdir: make the per-test temporary directory ($T) the working
# directory, so images made by relative names stay inside it.  bats removes
# it after the test.
setup_tmpdir() {
    T=$BATS_TEST_TMPDIR
    cd "$T" || return
}

# fail MSG...: print MSG on stderr and return 1.
fail() {
    echo "$*" >&2
    return 1
}

# ---------------------------------------------------------------------
# Background daemons (qemu-nbd, qemu-storage-daemon).  Every pid is
# recorded in a list so that teardown / teardown_file can kill whatever a
# failed test left running.

_daemon_list() {
    echo "${BATS_TEST_TMPDIR:-${BATS_FILE_TMPDIR:-/tmp}}/daemons.pids"
}

track_pid() {
    echo "$1" >>"$(_daemon_list)"
}

# stop_pid PID [SIGNAL]: kill one daemon we started and wait until it is gone.
# Only processes whose command line names a QEMU tool are signalled, so a
# recycled pid is never hit.
stop_pid() {
    local pid=$1 sig=${2:-TERM}
    [ -r "/proc/$pid/cmdline" ] || return 0
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'qemu-' || return 0
    kill -s "$sig" "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do
        [ -d "/proc/$pid" ] || return 0
        # a zombie child of this shell: reap it
        if grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; then
            wait "$pid" 2>/dev/null || true
            return 0
        fi
        sleep 0.05
    done
    kill -s KILL "$pid" 2>/dev/null || true
}

# kill_daemons: kill every daemon recorded in this context.  Call it from
# teardown (and teardown_file when setup_file starts daemons).
kill_daemons() {
    local list pid
    list=$(_daemon_list)
    [ -f "$list" ] || return 0
    while read -r pid; do
        [ -n "$pid" ] && stop_pid "$pid" KILL
    done <"$list"
    rm -f "$list"
}

# ---------------------------------------------------------------------
# QEMU oracles

# qemu_bitmap_map IMG NAME: print QEMU's view of bitmap NAME of the qcow2 IMG,
# as the JSON array of `nbdinfo --json --map=qemu:dirty-bitmap:NAME` served by
# `qemu-nbd -r --bitmap NAME` on a unix socket (type 1 = dirty, 0 = clean).
qemu_bitmap_map() {
    local img=$1 name=$2 dir pid rc=0
    # unix socket paths are limited to 107 bytes: keep this one short
    dir=$(mktemp -d /tmp/qbak-nbd.XXXXXX)
    if ! qemu-nbd -r -f qcow2 --bitmap "$name" -k "$dir/s" \
             --pid-file "$dir/pid" --fork "$img" </dev/null 3>&- >&2; then
        rm -rf "$dir"
        fail "qemu-nbd could not export bitmap '$name' of $img"
        return 1
    fi
    pid=$(cat "$dir/pid")
    track_pid "$pid"
    nbdinfo --json --map="qemu:dirty-bitmap:$name" "nbd+unix:///?socket=$dir/s" || rc=$?
    stop_pid "$pid"
    rm -rf "$dir"
    return "$rc"
}

# qemu_info IMG [qemu-img info options...]: qemu-img info --output=json -U.
qemu_info() {
    local img=$1
    shift
    qemu-img info -U --output=json "$@" "$img"
}

# qemu_bitmap_names IMG: the names of IMG's persistent bitmaps, one a line.
qemu_bitmap_names() {
    qemu_info "$1" | jq -r '.["format-specific"].data.bitmaps // [] | .[].name'
}

# qemu_size IMG: virtual size according to qemu-img info.
qemu_size() {
    qemu_info "$1" | jq -r '.["virtual-size"]'
}

# qemu_granularity IMG NAME: granularity of bitmap NAME according to qemu-img.
qemu_granularity() {
    qemu_info "$1" |
        jq -r --arg n "$2" '.["format-specific"].data.bitmaps[] | select(.name == $n) | .granularity'
}

# leave_bitmaps_in_use IMG: open the qcow2 IMG read-write in
# qemu-storage-daemon, wait until QEMU has marked its persistent bitmaps
# in_use on disk, then kill -9 the daemon, as a crashed VM would leave it.
leave_bitmaps_in_use() {
    local img=$1 pid
    qemu-storage-daemon \
        --blockdev "driver=file,node-name=f,filename=$img" \
        --blockdev driver=qcow2,node-name=q,file=f \
        </dev/null >"$img.qsd.log" 2>&1 3>&- &
    pid=$!
    track_pid "$pid"
    for _ in $(seq 200); do
        if qemu_info "$img" 2>/dev/null |
                jq -e '[.["format-specific"].data.bitmaps // [] | .[].flags[]] | index("in-use") != null' \
                >/dev/null; then
            stop_pid "$pid" KILL
            return 0
        fi
        if ! [ -d "/proc/$pid" ]; then
            cat "$img.qsd.log" >&2
            fail "qemu-storage-daemon exited before marking bitmaps in_use in $img"
            return 1
        fi
        sleep 0.05
    done
    stop_pid "$pid" KILL
    fail "qemu-storage-daemon did not mark bitmaps in_use in $img within 10 s"
}

# qemu_bitmap_counts IMG: QEMU's own dirty count of each bitmap, as
# {"NAME": COUNT, ...}: the "count" (dirty bytes, whole granules) that
# query-named-block-nodes reports with the image opened read-only in
# qemu-storage-daemon (read-only, so no bitmap is marked in_use).
qemu_bitmap_counts() {
    python3 - "$1" <<'EOF'
import json, subprocess, sys
img = sys.argv[1]
p = subprocess.Popen(
    ['qemu-storage-daemon',
     '--blockdev', f'driver=file,node-name=f,filename={img},read-only=on',
     '--blockdev', 'driver=qcow2,node-name=q,file=f,read-only=on',
     '--chardev', 'stdio,id=m', '--monitor', 'chardev=m'],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
def reply(cmd, **args):
    p.stdin.write(json.dumps({'execute': cmd, 'arguments': args}) + '\n'); p.stdin.flush()
    for line in p.stdout:
        m = json.loads(line)
        if 'return' in m: return m['return']
        if 'error' in m: sys.exit(f'qemu-storage-daemon: {cmd}: {m["error"]}')
    sys.exit(f'qemu-storage-daemon exited during {cmd}')
try:
    p.stdout.readline()                      # greeting
    reply('qmp_capabilities')
    nodes = reply('query-named-block-nodes', flat=True)
    counts = {b['name']: b['count'] for n in nodes if n['node-name'] == 'q'
              for b in n.get('dirty-bitmaps', [])}
    reply('quit')
finally:
    try: p.wait(timeout=10)
    except subprocess.TimeoutExpired: p.kill()
print(json.dumps(counts))
EOF
}

# set_corrupt_bit IMG: set incompatible feature bit 1 (corrupt) in the qcow2
# header: incompatible_features is the big-endian u64 at offset 72, so bit 1
# is in its last byte, at offset 79.
set_corrupt_bit() {
    python3 - "$1" <<'EOF'
import sys
with open(sys.argv[1], 'r+b') as f:
    f.seek(79); b = f.read(1)[0]
    f.seek(79); f.write(bytes([b | 2]))
EOF
}

# qemu_img_create_luks ARGS...: qemu-img create of a LUKS image (plain or
# inside qcow2), retried: QEMU times a short PBKDF2 run to choose the
# iteration count and gives up with
# "Unable to get accurate CPU usage" when the scheduler has not yet
# accounted any CPU time to it. That depends on the moment, not the image.
qemu_img_create_luks() {
    local i err
    for i in 1 2 3 4 5 6 7 8 9 10; do
        if err=$(qemu-img create -q "$@" 2>&1); then
            return 0
        fi
        [[ $err == *"accurate CPU usage"* ]] || break
    done
    echo "qemu-img create $*: $err" >&2
    return 1
}

# mkimage ARGS...: tests/tools/mkimage (QEMU-made realistic images).
mkimage() {
    python3 "$MKIMAGE" "$@" >/dev/null
}

# qemu_io_fmt FMT IMG CMD...: run each CMD through qemu-io -f FMT on IMG.
qemu_io_fmt() {
    local fmt=$1 img=$2 c args=()
    shift 2
    for c in "$@"; do args+=(-c "$c"); done
    qemu-io -f "$fmt" "${args[@]}" "$img" >/dev/null
}

# ---------------------------------------------------------------------
# Comparisons

# check_map IMG [FMT]: `qbak map IMG --json` must agree with
# `qemu-img map --output=json` on present, zero, data and depth everywhere.
check_map() {
    local img=$1 fmt=${2:-} fopt=()
    [ -n "$fmt" ] && fopt=(-f "$fmt")
    qemu-img map --output=json "${fopt[@]}" "$img" >"$img.qemu-map.json"
    run --separate-stderr qbak map "$img" --json
    if [ "$status" -ne 0 ]; then
        fail "qbak map $img --json: exit $status: $stderr"
        return 1
    fi
    printf '%s\n' "$output" >"$img.qbak-map.json"
    python3 "$COMPARE_MAP" "$img.qbak-map.json" "$img.qemu-map.json"
}

# check_dump IMG NAME: `qbak bitmap dump IMG NAME --json` must equal what
# qemu-nbd + nbdinfo report for the bitmap.
check_dump() {
    local img=$1 name=$2 size gran
    size=$(qemu_size "$img")
    gran=$(qemu_granularity "$img" "$name")
    qemu_bitmap_map "$img" "$name" >"$img.$name.nbdinfo.json"
    run --separate-stderr qbak bitmap dump "$img" "$name" --json
    if [ "$status" -ne 0 ]; then
        fail "qbak bitmap dump $img $name --json: exit $status: $stderr"
        return 1
    fi
    printf '%s\n' "$output" >"$img.$name.qbak-dump.json"
    python3 "$COMPARE_DUMP" --name "$name" --size "$size" --granularity "$gran" \
        "$img.$name.qbak-dump.json" "$img.$name.nbdinfo.json"
}

# check_error_line: $stderr (from run --separate-stderr) is one line that
# starts with "qbak: ".
check_error_line() {
    local n
    n=$(printf '%s\n' "$stderr" | grep -c '')
    if [ "$n" -ne 1 ] || [[ $stderr != "qbak: "* ]]; then
        fail "expected one stderr line starting 'qbak: ', got: $stderr"
        return 1
    fi
}

# Copy the qbak program and the shared libqbak it loads into DIR (tests
# that run qbak as another user: the build folder may be closed to
# others).  The program finds the library beside itself.
copy_qbak() {
    local dir=$1 lib
    cp "$QBAK" "$dir/qbak"
    for lib in "$(dirname "$QBAK")"/libqbak.so*; do
        [ -e "$lib" ] && cp -P "$lib" "$dir/"
    done
    return 0
}

# check_clean [--leaks-ok] IMG: qemu-img check finds IMG consistent: no
# corruption and, unless --leaks-ok, no leaked clusters either.  Both the
# exit status and the JSON counts are checked, so neither can hide the
# other.  --leaks-ok is for images a crash-safe writer may have been
# stopped in: such a writer may leak clusters, never corrupt them.
check_clean() {
    local leaks_ok=false leaks corr
    if [ "$1" = --leaks-ok ]; then
        leaks_ok=true
        shift
    fi
    run --separate-stderr qemu-img check --output=json "$1"
    if [ "$status" -ne 0 ] && { ! $leaks_ok || [ "$status" -ne 3 ]; }; then
        fail "qemu-img check $1: exit $status: $output $stderr"
        return 1
    fi
    leaks=$(jq -r '.leaks // 0' <<<"$output")
    corr=$(jq -r '.corruptions // 0' <<<"$output")
    [ "$corr" -eq 0 ] || { fail "qemu-img check $1: corruptions: $output"; return 1; }
    $leaks_ok || [ "$leaks" -eq 0 ] || { fail "qemu-img check $1: leaks: $output"; return 1; }
}

# same_disk A B: qemu-img compare sees the same guest bytes in A and B
# (formats probed, backing chains followed).
same_disk() {
    run --separate-stderr qemu-img compare "$1" "$2"
    [ "$status" -eq 0 ] || fail "qemu-img compare $1 $2: $output $stderr"
}

# dirty_ranges IMG NAME: QEMU's dirty extents of bitmap NAME (qemu-nbd +
# nbdinfo) as compact JSON [[offset, length], ...]; "[]" when clean.  Any
# extent type other than 0 (clean) and 1 (dirty) is an error, so an
# unexpected answer from the oracle never reads as "clean".
dirty_ranges() {
    local map
    map=$(qemu_bitmap_map "$1" "$2") || return
    jq -ce 'if all(.[]; .type == 0 or .type == 1)
            then [.[] | select(.type == 1) | [.offset, .length]]
            else error("unexpected extent type") end' <<<"$map"
}

# refused_unchanged EXIT IMG QBAK-ARGS...: qbak QBAK-ARGS exits EXIT with
# one "qbak: " line (for exit 2 it may be followed by the usage text, as
# usage.bats expects of usage errors) and leaves IMG byte-identical.
refused_unchanged() {
    local want=$1 img=$2 before after
    shift 2
    before=$(sha256sum <"$img")
    run --separate-stderr qbak "$@"
    [ "$status" -eq "$want" ] || fail "qbak $*: exit $status, expected $want: $stderr"
    if [ "$want" -eq 2 ] && [ "${#stderr_lines[@]}" -gt 1 ] &&
            [[ ${stderr_lines[1]} == Usage:* ]]; then
        [[ ${stderr_lines[0]} == "qbak: "* ]] || fail "first stderr line: ${stderr_lines[0]}"
    else
        check_error_line
    fi
    after=$(sha256sum <"$img")
    [ "$before" = "$after" ] || fail "qbak $* changed $img"
}

# mode_args MODE: the qbak copy options of bitmap mode MODE for an
# incremental copy: on-success is what --sync incremental means.
mode_args() {
    case $1 in
    on-success) echo --sync incremental ;;
    *) echo --sync bitmap --bitmap-mode "$1" ;;
    esac
}

# make_chain: a 3-deep backing chain in the working directory, base.qcow2
# (4 MiB) <- mid.qcow2 (6 MiB) <- top.qcow2 (8 MiB), with relative backing
# names and each layer larger than the one below; data, compressed, zero
# and discarded clusters, some over data of the layer below, so depth and
# the zero/data flags vary.
make_chain() {
    qemu-img create -q -f qcow2 base.qcow2 4M
    qemu_io_fmt qcow2 base.qcow2 "write -P 1 0 1M" "write -P 1 3M 64k" \
        "write -c -P 1 3584k 64k"
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2 6M
    qemu_io_fmt qcow2 mid.qcow2 "write -P 2 512k 512k" "write -P 2 4M 64k" \
        "write -z 3M 64k"
    qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 8M
    qemu_io_fmt qcow2 top.qcow2 "write -z 0 128k" "write -P 3 7M 64k" \
        "write -P 3 600k 64k" "discard 7M 64k"
}

# as_nobody CMD...: run CMD as uid/gid 65534 with no supplementary groups,
# so permission checks apply as to an unprivileged user even under root.
as_nobody() {
    setpriv --reuid=65534 --regid=65534 --clear-groups "$@"
}

# copy_usage_refused SOURCE TARGET ARGS...: `qbak copy SOURCE TARGET ARGS...`
# exits 2 (a usage error) with nothing on stdout and one "qbak: " line on
# stderr (the usage text may follow it), and leaves neither TARGET nor
# TARGET.part behind.
copy_usage_refused() {
    local src=$1 tgt=$2
    shift 2
    run --separate-stderr qbak copy "$src" "$tgt" "$@"
    [ "$status" -eq 2 ] || fail "qbak copy $*: exit $status, expected 2; stderr: $stderr"
    [ -z "$output" ] || fail "qbak copy $*: wrote on stdout: $output"
    [[ $stderr == "qbak: "* ]] || fail "qbak copy $*: stderr does not start with 'qbak: ': $stderr"
    [ "$(grep -c '^qbak: ' <<<"$stderr")" -eq 1 ] || fail "qbak copy $*: not one 'qbak: ' line: $stderr"
    [ ! -e "$tgt" ] && [ ! -e "$tgt.part" ] || fail "qbak copy $*: left a target"
}

# nbd_bitmap_map IMG NAME: the same JSON as qemu_bitmap_map, from a single
# nbdinfo that starts qemu-nbd itself (socket activation: `nbdinfo -- [ CMD ]`)
# and has stopped it by the time it returns, so no socket directory, pid
# file or polling for the daemon's end: two processes per map instead of
# about ten, for loops that map a bitmap hundreds of times.
nbd_bitmap_map() {
    nbdinfo --json --map="qemu:dirty-bitmap:$2" -- \
        [ qemu-nbd -r -f qcow2 --bitmap "$2" "$1" ] </dev/null 3>&-
}

# no_debug_trap: switch off bats' DEBUG trap for the rest of the test.  It
# records a stack trace before every simple command, which costs more than
# the commands themselves in loops of a few thousand; a loop that calls it
# must report its failures itself, naming the case: bats then places a
# failure at the no_debug_trap call, the last line it traced.
no_debug_trap() {
    trap - DEBUG
}

# wait_past_repo REPO: wait until the clock has left the last second in
# which anything in the folder REPO was written (a finished run's records,
# or what a killed run left), so that the next `qbak backup` into it runs
# in a second of its own and its point id and time differ from every
# earlier run's.  A fixed `sleep 1` before each run did the same, but
# waited a whole second where what is left of one is enough; the runs,
# restores and checks in between usually use most of it.  A repository
# that is not there yet needs no wait.
wait_past_repo() {
    local t newest=0
    [ -d "$1" ] || return 0
    while read -r t; do
        t=${t%.*}
        [ "$t" -le "$newest" ] || newest=$t
    done < <(find "$1" -printf '%T@\n')
    while [ "$EPOCHSECONDS" -le "$newest" ]; do sleep 0.05; done
}
