#!/usr/bin/env bats
# qbak info, checked against `qemu-img info --output=json` with jq.

bats_require_minimum_version 1.5.0
load helpers

M=$((1 << 20))

setup() {
    require_common_oracles
    require_qbak
    setup_tmpdir
}

teardown() {
    kill_daemons
}

# qbak_info IMG: run `qbak info IMG --json`, require exit 0, leave the JSON
# in $output and in the file info.json.
qbak_info() {
    run --separate-stderr qbak info "$1" --json
    [ "$status" -eq 0 ] || fail "qbak info $1 --json: exit $status: $stderr"
    printf '%s\n' "$output" >info.json
    jq -e 'type == "object"' info.json >/dev/null || fail "not a JSON object: $output"
}

# same_json WHAT QBAK_JSON QEMU_JSON: the two JSON values are equal.
same_json() {
    local a b
    a=$(printf '%s\n' "$2" | jq -S .)
    b=$(printf '%s\n' "$3" | jq -S .)
    [ "$a" = "$b" ] || fail "$1 differs:" $'\n'"qbak:     $a" $'\n'"qemu-img: $b"
}

@test "info: has every documented member with the documented type" {
    qemu-img create -q -f qcow2 a.qcow2 8M
    qbak_info a.qcow2
    jq -e '(.filename | type == "string") and (.format | type == "string")
        and (.["virtual-size"] | type == "number") and (.["actual-size"] | type == "number")
        and (.["cluster-size"] | type == "number")
        and (.["format-specific"] | type == "object")
        and (.corrupt | type == "boolean")
        and (.["backing-chain"] | type == "array") and (.bitmaps | type == "array")' \
        info.json >/dev/null || fail "missing or mistyped member: $output"
}

@test "info: format is detected by content: a qcow2 named foo.raw is qcow2" {
    qemu-img create -q -f qcow2 foo.raw 8M
    qbak_info foo.raw
    same_json format "$(jq .format info.json)" "$(qemu_info foo.raw | jq .format)"
    jq -e '.format == "qcow2"' info.json >/dev/null
}

@test "info: format is detected by content: a raw file named x.qcow2 is raw" {
    truncate -s 8M x.qcow2
    qbak_info x.qcow2
    same_json format "$(jq .format info.json)" "$(qemu_info x.qcow2 2>/dev/null | jq .format)"
    jq -e '.format == "raw"' info.json >/dev/null
}

@test "info: filename is the name given on the command line" {
    mkdir sub
    qemu-img create -q -f qcow2 sub/a.qcow2 8M
    qbak_info sub/a.qcow2
    same_json filename "$(jq .filename info.json)" "$(qemu_info sub/a.qcow2 | jq .filename)"
}

@test "info: virtual-size agrees with qemu-img info" {
    qemu-img create -q -f qcow2 a.qcow2 $((100 * M + 1536))
    qbak_info a.qcow2
    same_json virtual-size "$(jq '.["virtual-size"]' info.json)" \
        "$(qemu_info a.qcow2 | jq '.["virtual-size"]')"
}

@test "info: virtual-size after qemu-img resize --shrink agrees with qemu-img info" {
    qemu-img create -q -f qcow2 a.qcow2 64M
    qemu-img resize -q --shrink a.qcow2 $((40 * M + 512))
    qbak_info a.qcow2
    same_json virtual-size "$(jq '.["virtual-size"]' info.json)" \
        "$(qemu_info a.qcow2 | jq '.["virtual-size"]')"
}

@test "info: actual-size agrees with qemu-img info" {
    mkimage a.qcow2 --size 32M --fill 1M --dirty 2% --seed 21
    qbak_info a.qcow2
    same_json actual-size "$(jq '.["actual-size"]' info.json)" \
        "$(qemu_info a.qcow2 | jq '.["actual-size"]')"
}

@test "info: cluster-size 512 B agrees with qemu-img info" {
    qemu-img create -q -f qcow2 -o cluster_size=512 a.qcow2 8M
    qbak_info a.qcow2
    same_json cluster-size "$(jq '.["cluster-size"]' info.json)" \
        "$(qemu_info a.qcow2 | jq '.["cluster-size"]')"
}

@test "info: cluster-size 64 KiB agrees with qemu-img info" {
    qemu-img create -q -f qcow2 -o cluster_size=64k a.qcow2 8M
    qbak_info a.qcow2
    same_json cluster-size "$(jq '.["cluster-size"]' info.json)" \
        "$(qemu_info a.qcow2 | jq '.["cluster-size"]')"
}

@test "info: cluster-size 2 MiB agrees with qemu-img info" {
    qemu-img create -q -f qcow2 -o cluster_size=2M a.qcow2 8M
    qbak_info a.qcow2
    same_json cluster-size "$(jq '.["cluster-size"]' info.json)" \
        "$(qemu_info a.qcow2 | jq '.["cluster-size"]')"
}

@test "info: bitmaps (name, granularity, in-use, auto) agree with qemu-img info" {
    require_bitmap_oracles
    qemu-img create -q -f qcow2 a.qcow2 32M
    qemu-img bitmap --add -g 64k a.qcow2 crashed
    leave_bitmaps_in_use a.qcow2
    qemu-img bitmap --add -g 512 a.qcow2 small
    qemu-img bitmap --add -g 2M a.qcow2 big
    qemu-img bitmap --add -g 1M a.qcow2 off
    qemu-img bitmap --disable a.qcow2 off
    qemu_io_fmt qcow2 a.qcow2 "write -P 1 0 1M"
    qbak_info a.qcow2
    same_json bitmaps \
        "$(jq '[.bitmaps[] | {name, granularity, flags}] | sort_by(.name)' info.json)" \
        "$(qemu_info a.qcow2 | jq '[.["format-specific"].data.bitmaps[] |
            {name, granularity, flags}] | sort_by(.name)')"
    # format-specific is qemu-img's, keys, nesting and order of bitmaps,
    # with qbak's one addition
    same_json format-specific \
        "$(jq -S '.["format-specific"] | del(.data["bitmaps-consistent"])' info.json)" \
        "$(qemu_info a.qcow2 | jq -S '.["format-specific"]')"
}

@test "info: in_use bitmap shows in-use true and no dirty-bytes" {
    require_bitmap_oracles
    qemu-img create -q -f qcow2 a.qcow2 32M
    qemu-img bitmap --add a.qcow2 crashed
    qemu_io_fmt qcow2 a.qcow2 "write -P 1 0 1M"
    leave_bitmaps_in_use a.qcow2
    qbak_info a.qcow2
    jq -e '.bitmaps[] | select(.name == "crashed") | .flags == ["in-use", "auto"] and .["dirty-bytes"] == null' \
        info.json >/dev/null || fail "bitmap 'crashed': $(jq -c .bitmaps info.json)"
}

@test "info: image without bitmaps has an empty bitmaps array" {
    qemu-img create -q -f qcow2 a.qcow2 8M
    qbak_info a.qcow2
    jq -e '.bitmaps == []' info.json >/dev/null || fail "bitmaps: $(jq -c .bitmaps info.json)"
}

@test "info: backing-filename, full-backing-filename, backing-filename-format agree with qemu-img info" {
    make_chain
    qbak_info top.qcow2
    same_json backing \
        "$(jq '{"backing-filename", "full-backing-filename", "backing-filename-format"}' info.json)" \
        "$(qemu_info top.qcow2 | jq '{"backing-filename", "full-backing-filename", "backing-filename-format"}')"
}

@test "info: full-backing-filename is resolved relative to the image's directory" {
    mkdir sub
    (cd sub && make_chain)
    qbak_info sub/top.qcow2
    same_json full-backing-filename "$(jq '.["full-backing-filename"]' info.json)" \
        "$(qemu_info sub/top.qcow2 | jq '.["full-backing-filename"]')"
}

@test "info: backing-chain lists the images below the top, in order, as qemu-img does" {
    make_chain
    qbak_info top.qcow2
    same_json backing-chain \
        "$(jq '[.["backing-chain"][] | {filename, format, "virtual-size"}]' info.json)" \
        "$(qemu_info top.qcow2 --backing-chain | jq '.[1:] | [.[] | {filename, format, "virtual-size"}]')"
}

@test "info: backing-chain of a qcow2 over a raw backing file names format raw" {
    truncate -s 2M base.raw
    qemu-img create -q -f qcow2 -b base.raw -F raw top.qcow2 4M
    qbak_info top.qcow2
    same_json backing-chain \
        "$(jq '[.["backing-chain"][] | {filename, format, "virtual-size"}]' info.json)" \
        "$(qemu_info top.qcow2 --backing-chain | jq '.[1:] | [.[] | {filename, format, "virtual-size"}]')"
}

@test "info: image without a backing file has no backing-filename and an empty backing-chain" {
    qemu-img create -q -f qcow2 a.qcow2 8M
    qbak_info a.qcow2
    jq -e '.["backing-filename"] == null and .["backing-chain"] == []' info.json >/dev/null ||
        fail "unexpected backing members: $output"
}

@test "info: corrupt is true when incompatible bit 1 is set, as qemu-img info -U says" {
    qemu-img create -q -f qcow2 a.qcow2 8M
    qemu_io_fmt qcow2 a.qcow2 "write -P 1 0 64k"
    set_corrupt_bit a.qcow2
    qemu_info a.qcow2 | jq -e '.["format-specific"].data.corrupt == true' >/dev/null ||
        fail "oracle: qemu-img info -U does not show the image corrupt"
    qbak_info a.qcow2
    jq -e '.corrupt == true' info.json >/dev/null || fail "corrupt: $(jq .corrupt info.json)"
}

@test "info: corrupt is false for a clean image" {
    qemu-img create -q -f qcow2 a.qcow2 8M
    qbak_info a.qcow2
    jq -e '.corrupt == false' info.json >/dev/null || fail "corrupt: $(jq .corrupt info.json)"
}

@test "info: unknown incompatible feature bit exits 3 (qemu-img refuses it too)" {
    qemu-img create -q -f qcow2 a.qcow2 8M
    python3 -c 'import sys; f=open(sys.argv[1],"r+b"); f.seek(72); f.write(b"\x80"); f.close()' a.qcow2
    run qemu-img info a.qcow2
    [ "$status" -ne 0 ] || fail "oracle: qemu-img info opened the image"
    run --separate-stderr qbak info a.qcow2 --json
    [ "$status" -eq 3 ] || fail "exit $status, expected 3; stderr: $stderr"
}

@test "info: raw image has format raw and qemu-img's virtual-size" {
    truncate -s $((5 * M + 512)) r.raw
    dd if=/dev/urandom of=r.raw bs=64k seek=3 count=2 conv=notrunc status=none
    qbak_info r.raw
    same_json format-and-size "$(jq '{format, "virtual-size"}' info.json)" \
        "$(qemu_info r.raw -f raw | jq '{format, "virtual-size"}')"
}

@test "info: qcow v1 image has format qcow and qemu-img's virtual-size" {
    qemu-img create -q -f qcow v1.qcow 4M
    qemu_io_fmt qcow v1.qcow "write -P 1 0 64k" "write -P 2 1M 4k"
    qbak_info v1.qcow
    same_json format-and-size "$(jq '{format, "virtual-size"}' info.json)" \
        "$(qemu_info v1.qcow | jq '{format, "virtual-size"}')"
}

@test "info: missing file fails with one 'qbak: ' line naming it" {
    run --separate-stderr qbak info nosuch.qcow2 --json
    [ "$status" -ne 0 ] && [ "$status" -ne 2 ] || fail "exit $status; stderr: $stderr"
    check_error_line
    [[ $stderr == *nosuch.qcow2* ]] || fail "error does not name the file: $stderr"
}

@test "info: virtual size and disk size read as qemu-img info's lines" {
    local s
    for s in 1M 1000K 1023K 1G 1025M 7T; do
        qemu-img create -q -f qcow2 "s$s.qcow2" "$s"
        qemu_io_fmt qcow2 "s$s.qcow2" "write -P 1 0 512k"
        run --separate-stderr qbak info "s$s.qcow2"
        [ "$status" -eq 0 ] || fail "exit $status: $stderr"
        for key in "virtual size" "disk size"; do
            [ "$(grep "^$key: " <<<"$output")" = \
              "$(qemu-img info "s$s.qcow2" | grep "^$key: ")" ] ||
                fail "$s: qbak '$(grep "^$key: " <<<"$output")'," \
                     "qemu-img '$(qemu-img info "s$s.qcow2" | grep "^$key: ")'"
        done
    done
}

@test "info: tables say when they are empty: bitmap list, list, prune" {
    qemu-img create -q -f qcow2 a.qcow2 1M
    run --separate-stderr qbak bitmap list a.qcow2
    [ "$status" -eq 0 ] || fail "exit $status: $stderr"
    [ "${lines[0]}" = "$(printf '%-4s %11s %-8s %s' NAME GRANULARITY FLAGS DIRTY)" ] &&
        [ "${lines[1]}" = "(no bitmaps)" ] && [ "${#lines[@]}" -eq 2 ] ||
        fail "bitmap list: $output"
    # a repository with no point: its zone was set, the backup failed
    run --separate-stderr qbak backup --tz UTC nosuch.qcow2 repo
    [ "$status" -ne 0 ] && [ -d repo ] || fail "exit $status: $stderr"
    run --separate-stderr qbak list repo
    [ "$status" -eq 0 ] || fail "list: exit $status: $stderr"
    [[ ${lines[0]} == POINT*TIME*DISK*LEVEL*COPIED*VERIFIED*REASON ]] &&
        [ "${lines[1]}" = "(no points in repo)" ] || fail "list: $output"
    run --separate-stderr qbak prune --dry-run --keep-last 1 repo
    [ "$status" -eq 0 ] || fail "prune: exit $status: $stderr"
    [[ ${lines[0]} == POINT*ACTION*REASONS ]] &&
        [ "${lines[1]}" = "(no points in repo)" ] || fail "prune: $output"
}
