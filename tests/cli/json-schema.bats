#!/usr/bin/env bats
# Every --json output of every command, on success and on failure, is
# valid against docs/qbak-output.schema.json (checked by json-validate.py
# with python3-jsonschema), and a failure is one object on stdout with
# "status", "error" and "exit-code" equal to the exit code, beside the one
# line on stderr: for a usage error after --json, a missing file, a bad
# option and an image another program has locked.

bats_require_minimum_version 1.5.0
load helpers

setup_file() {
    require_common_oracles
    require_oracle python3 python3
    python3 -c 'import jsonschema' 2>/dev/null ||
        { echo "missing python3-jsonschema" >&2; return 1; }
    require_qbak
    cd "$BATS_FILE_TMPDIR" || return
    qemu-img create -q -f qcow2 img.qcow2 16M
    qemu-img bitmap --add img.qcow2 b0
    qemu-img bitmap --add --disable -g 128k img.qcow2 b1
    qemu-io -f qcow2 -c 'write -P 1 0 1M' img.qcow2 >/dev/null
    cp img.qcow2 disk.qcow2
    qbak backup disk.qcow2 repo >/dev/null 2>&1
    qemu-io -f qcow2 -c 'write -P 2 2M 1M' disk.qcow2 >/dev/null
    qbak backup disk.qcow2 repo >/dev/null 2>&1
}

setup() {
    setup_tmpdir
    cp "$BATS_FILE_TMPDIR/img.qcow2" img.qcow2
    cp -r "$BATS_FILE_TMPDIR/repo" repo
    cp "$BATS_FILE_TMPDIR/disk.qcow2" disk.qcow2
}

teardown() {
    kill_daemons
}

# Every document a test printed is kept as N.json and checked at the end
# of the test by one run of json-validate.py (loading jsonschema is slow).
DOCS=()
keep_doc() {
    local f=$((${#DOCS[@]} / 2)).json
    printf '%s\n' "$output" >"$f"
    DOCS+=("$1" "$f")
}

# validate_all: every kept document is valid as its definition.
validate_all() {
    python3 "$QBAK_SRCDIR/tests/cli/json-validate.py" \
        "$QBAK_SRCDIR/docs/qbak-output.schema.json" "${DOCS[@]}"
}

# ok DEF ARGS...: `qbak ARGS...` exits 0 with one document, to be valid as
# DEF and not a failure.
ok() {
    local def=$1
    shift
    run --separate-stderr qbak "$@"
    [ "$status" -eq 0 ] || fail "qbak $*: exit $status: $stderr"
    jq -e 'if type == "object" then (.["exit-code"] // 0) == 0 else true end' <<<"$output" >/dev/null ||
        fail "qbak $*: not one JSON document with exit-code 0: $output"
    keep_doc "$def+ok"
}

# fails DEF CODE ARGS...: `qbak ARGS...` exits CODE with one line on stderr
# and one document on stdout, to be valid as DEF, whose "exit-code" is CODE
# and whose "error" is that line's message.
fails() {
    local def=$1 code=$2
    shift 2
    run --separate-stderr qbak "$@"
    [ "$status" -eq "$code" ] || fail "qbak $*: exit $status, want $code: $stderr"
    [ "$(jq '.["exit-code"]' <<<"$output")" -eq "$code" ] ||
        fail "qbak $*: exit-code $(jq '.["exit-code"]' <<<"$output"), exit $code"
    [ "$(jq -r .status <<<"$output")" != ok ] || fail "qbak $*: status ok: $output"
    [ "${#stderr_lines[@]}" -eq 1 ] || fail "qbak $*: stderr is not one line: $stderr"
    local msg
    msg=$(jq -r .error <<<"$output")
    [ -n "$msg" ] && [[ $stderr == *"$msg"* ]] ||
        fail "qbak $*: error '$msg' is not the stderr line '$stderr'"
    keep_doc "$def+failed"
}

@test "json-schema: the schema itself is valid draft 2020-12" {
    python3 -c 'import json, sys, jsonschema
jsonschema.Draft202012Validator.check_schema(json.load(open(sys.argv[1])))' \
        "$QBAK_SRCDIR/docs/qbak-output.schema.json"
}

@test "json-schema: info, map, bitmap list, dump and the bitmap changes" {
    ok info info --json img.qcow2
    ok map map --json img.qcow2
    ok bitmap-list bitmap list --json img.qcow2
    ok bitmap-dump bitmap dump --json img.qcow2 b0
    for sub in "add x" "disable x" "enable x" "clear x" "merge x b0" "remove x"; do
        # shellcheck disable=SC2086
        ok bitmap-change bitmap ${sub%% *} --json img.qcow2 ${sub#* }
    done
    ok bitmap-change bitmap add --json --image img.qcow2 --image disk.qcow2 y
    qemu-img create -q -f qcow2 -b img.qcow2 -F qcow2 top.qcow2
    ok info info --json top.qcow2
    [ "$(jq '.["backing-chain"] | length' <<<"$output")" -eq 1 ]
    validate_all
}

@test "json-schema: copy with one job and with several --job share one shape" {
    ok copy copy --json img.qcow2 one.qcow2 --sync full
    local one=$output
    ok copy copy --json --job src=img.qcow2,target=a.qcow2 \
        --job src=disk.qcow2,target=b.qcow2 --sync full
    jq -e '.status == "ok" and .["exit-code"] == 0 and (.jobs | length) == 2' \
        <<<"$output" >/dev/null || fail "two jobs: $output"
    jq -e '.status == "ok" and .["exit-code"] == 0 and (.jobs | length) == 1
           and .jobs[0].target == "one.qcow2"' <<<"$one" >/dev/null ||
        fail "one job: $one"
    # the same keys in a job of either
    [ "$(jq -c '.jobs[0] | keys' <<<"$one")" = "$(jq -c '.jobs[1] | keys' <<<"$output")" ] ||
        fail "job keys differ: $(jq -c '.jobs[0] | keys' <<<"$one") vs $(jq -c '.jobs[1] | keys' <<<"$output")"
    # a job that fails is the same object, with the failure's keys
    fails copy 2 copy --json img.qcow2 one.qcow2 --sync full
    jq -e '.jobs[0].error != null' <<<"$output" >/dev/null || fail "$output"
    fails copy 2 copy --json --job src=img.qcow2,target=a.qcow2 --sync full
    validate_all
}

@test "json-schema: backup, list, verify, prune, protect, restore" {
    ok backup backup --json disk.qcow2 repo
    ok list list --json repo
    [ "$(jq '.points | length' <<<"$output")" -eq 3 ]
    local id
    id=$(jq -r '.points[0].id' <<<"$output")
    ok list list --json --keep-last 1 repo
    ok verify verify --json repo
    ok list list --json repo
    jq -e '.points[0].verify.state == "ok"' <<<"$output" >/dev/null || fail "$output"
    ok protect protect --json repo "$id"
    ok protect unprotect --json repo "$id"
    ok prune prune --json --dry-run --keep-last 2 repo
    ok prune prune --json --keep-last 2 repo
    [ "$(jq '[.points[] | select(.action == "remove")] | length' <<<"$output")" -eq 1 ]
    ok restore restore --json repo out.qcow2
    ok restore restore --json --disk disk -O raw repo out.raw
    validate_all
}

@test "json-schema: a missing file gives the failure object for every command" {
    fails info 3 info --json nope.qcow2
    fails map 3 map --json nope.qcow2
    fails bitmap-list 3 bitmap list --json nope.qcow2
    fails bitmap-dump 3 bitmap dump --json nope.qcow2 b0
    fails bitmap-dump 3 bitmap dump --json img.qcow2 nope
    fails bitmap-change 3 bitmap add --json nope.qcow2 x
    fails copy 3 copy --json nope.qcow2 t.qcow2 --sync full
    fails backup 3 backup --json nope.qcow2 repo
    # a repository that does not exist was named wrong: a usage error
    fails list 2 list --json nope
    fails verify 2 verify --json nope
    fails prune 2 prune --json --keep-last 1 nope
    fails protect 2 protect --json nope 20260101T000000Z
    fails protect 2 unprotect --json nope 20260101T000000Z
    fails restore 2 restore --json nope out.qcow2
    validate_all
}

@test "json-schema: a usage error after --json gives the failure object, exit 2" {
    fails info 2 info --json --bogus img.qcow2
    fails info 2 info --json
    fails map 2 map --json img.qcow2 extra
    fails bitmap-list 2 bitmap --json
    fails bitmap-dump 2 bitmap dump --json img.qcow2
    fails bitmap-change 2 bitmap add --json -g nonsense img.qcow2 x
    fails copy 2 copy --json img.qcow2
    fails copy 2 copy --json img.qcow2 t.qcow2 --sync sideways
    fails backup 2 backup --json disk.qcow2
    fails list 2 list --json --keep-last
    fails verify 2 verify --json --sample lots repo
    fails prune 2 prune --json repo --keep-bogus 1
    fails protect 2 protect --json repo
    fails restore 2 restore --json --overlay repo out.qcow2
    # before --json, a usage error is the plain line alone
    run --separate-stderr qbak info --bogus --json img.qcow2
    [ "$status" -eq 2 ] && [ -z "$output" ] || fail "exit $status, stdout: $output"
    validate_all
}

@test "json-schema: an image another program holds gives the failure object, exit 4" {
    qemu-storage-daemon --blockdev "driver=file,node-name=f,filename=$T/img.qcow2" \
        --blockdev driver=qcow2,node-name=q,file=f </dev/null >qsd.log 2>&1 3>&- &
    track_pid $!
    for _ in $(seq 200); do
        qemu-img info img.qcow2 >/dev/null 2>&1 || break
        sleep 0.05
    done
    fails info 4 info --json img.qcow2
    fails bitmap-change 4 bitmap add --json img.qcow2 x
    fails copy 4 copy --json img.qcow2 t.qcow2 --sync full
    validate_all
}
