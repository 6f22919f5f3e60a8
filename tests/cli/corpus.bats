#!/usr/bin/env bats
# The corrupted-image corpus (tests/corpus/make-corrupt-corpus.py): qbak must
# refuse every case with exit code 3 and one line on stderr that names the
# image and the problem, must not touch the image, and the sanitizer builds
# must report nothing.  QEMU's tools are the oracle: they build the base
# images and must agree that each case is broken.
bats_require_minimum_version 1.5.0

setup_file() {
  export QBAK_SRCDIR="${QBAK_SRCDIR:-$(cd "$BATS_TEST_DIRNAME/../.." && pwd)}"
  export QBAK="${QBAK:-$QBAK_SRCDIR/build/qbak}"
  export CORPUS_SCRIPT="$QBAK_SRCDIR/tests/corpus/make-corrupt-corpus.py"
  local tool
  for tool in qemu-img qemu-io python3; do
    if ! command -v "$tool" >/dev/null; then
      case $tool in
        python3) echo "corpus.bats: python3 not found: install the Debian package python3" >&2 ;;
        *) echo "corpus.bats: $tool not found: install the Debian package qemu-utils (QEMU's tools are the oracle)" >&2 ;;
      esac
      return 1
    fi
  done
  export CORPUS="$BATS_FILE_TMPDIR/corpus"
  python3 "$CORPUS_SCRIPT" "$CORPUS" >&2
}

# check_case NAME: run the manifest's command for NAME and check the refusal.
check_case() {
  local name=$1 row file cmd regex qemu img before after
  row=$(awk -F'\t' -v n="$name" '$1 == n' "$CORPUS/cases.tsv")
  if [ -z "$row" ]; then
    echo "case $name is not in $CORPUS/cases.tsv"
    return 1
  fi
  IFS=$'\t' read -r _ file cmd regex qemu <<<"$row"
  img="$CORPUS/$file"
  local -a args
  case $cmd in
    info) args=(info "$img") ;;
    info-qcow2) args=(info -f qcow2 "$img") ;;   # the format named, as qemu-img -f
    map) args=(map "$img") ;;
    bitmap-list) args=(bitmap list "$img") ;;
    bitmap-dump:*) args=(bitmap dump "$img" "${cmd#bitmap-dump:}") ;;
    *) echo "case $name: unknown command '$cmd' in the manifest"; return 1 ;;
  esac
  before=$(sha256sum <"$img")
  run --separate-stderr timeout 120 "$QBAK" "${args[@]}"
  after=$(sha256sum <"$img")
  echo "case:    $name (qemu: $qemu)"
  echo "command: qbak ${args[*]}"
  echo "status:  $status (want 3)"
  echo "stderr:  $stderr"
  echo "want:    one line, 'qbak: ', '$file', /$regex/i"
  [ "$status" -eq 3 ]
  [ -n "$stderr" ]
  [[ $stderr != *$'\n'* ]]               # exactly one line
  [[ $stderr == "qbak: "* ]]
  [[ $stderr == *"$file"* ]]             # names the file
  grep -Eiq -- "$regex" <<<"$stderr"     # names the problem
  [[ $stderr != *Sanitizer* && $stderr != *"runtime error"* ]]
  [ "$before" = "$after" ]               # the image is untouched
}

@test "the corpus has at least 25 cases" {
  local n
  n=$(grep -vc '^#' "$CORPUS/cases.tsv")
  echo "cases: $n"
  [ "$n" -ge 25 ]
}

@test "every case of the corpus has a test here, and every test a case" {
  local listed tested
  listed=$(python3 "$CORPUS_SCRIPT" --list | grep -vx corrupt-bit | sort)
  tested=$(sed -n 's/^  check_case \([^ ]*\)$/\1/p' "$BATS_TEST_FILENAME" | sort)
  diff <(echo "$listed") <(echo "$tested")
  [ "$(grep -vc '^#' "$CORPUS/cases.tsv")" -eq "$(python3 "$CORPUS_SCRIPT" --list | wc -l)" ]
}

@test "QEMU agrees that every case is broken (or tolerates it where noted)" {
  run python3 "$CORPUS_SCRIPT" "$BATS_FILE_TMPDIR/qemu-check" --check-qemu
  echo "$output"
  [ "$status" -eq 0 ]
}

@test "corrupt-bit: info shows the corrupt bit, as qemu-img does" {
  local img="$CORPUS/corrupt-bit.qcow2" before after
  grep -q "^corrupt-bit	corrupt-bit.qcow2	none	" "$CORPUS/cases.tsv"
  before=$(sha256sum <"$img")
  run --separate-stderr timeout 120 "$QBAK" info --json "$img"
  after=$(sha256sum <"$img")
  echo "status: $status"; echo "stdout: $output"; echo "stderr: $stderr"
  [ "$status" -eq 0 ]
  [ -z "$stderr" ]
  jq -e '[.. | objects | select(has("corrupt")) | .corrupt] | any' <<<"$output"
  qemu-img info --output=json "$img" | jq -e '."format-specific".data.corrupt == true'
  [ "$before" = "$after" ]
}

@test "truncated-header" {
  check_case truncated-header
}

@test "bad-magic" {
  check_case bad-magic
}

@test "version-4" {
  check_case version-4
}

@test "cluster-bits-8" {
  check_case cluster-bits-8
}

@test "cluster-bits-22" {
  check_case cluster-bits-22
}

@test "header-length-96" {
  check_case header-length-96
}

@test "header-length-past-cluster" {
  check_case header-length-past-cluster
}

@test "refcount-order-7" {
  check_case refcount-order-7
}

@test "refcount-table-clusters-0" {
  check_case refcount-table-clusters-0
}

@test "refcount-table-unaligned" {
  check_case refcount-table-unaligned
}

@test "refcount-table-past-eof" {
  check_case refcount-table-past-eof
}

@test "l1-size-huge" {
  check_case l1-size-huge
}

@test "l1-size-too-small" {
  check_case l1-size-too-small
}

@test "l1-offset-unaligned" {
  check_case l1-offset-unaligned
}

@test "l1-offset-past-eof" {
  check_case l1-offset-past-eof
}

@test "incompatible-bit-5" {
  check_case incompatible-bit-5
}

@test "incompatible-bit-20" {
  check_case incompatible-bit-20
}

@test "compression-type-1-no-bit" {
  check_case compression-type-1-no-bit
}

@test "compression-type-2" {
  check_case compression-type-2
}

@test "encryption-aes" {
  check_case encryption-aes
}

@test "encryption-luks" {
  check_case encryption-luks
}

@test "extended-l2-small-clusters" {
  check_case extended-l2-small-clusters
}

@test "data-file-bit-without-name" {
  check_case data-file-bit-without-name
}

@test "extension-past-cluster-end" {
  check_case extension-past-cluster-end
}

@test "backing-offset-past-cluster" {
  check_case backing-offset-past-cluster
}

@test "backing-name-size-1024" {
  check_case backing-name-size-1024
}

@test "backing-missing" {
  check_case backing-missing
}

@test "backing-loop" {
  check_case backing-loop
}

@test "backing-self-loop" {
  check_case backing-self-loop
}

@test "bitmap-ext-length-25" {
  check_case bitmap-ext-length-25
}

@test "bitmap-ext-length-23" {
  check_case bitmap-ext-length-23
}

@test "bitmap-nb-bitmaps-0" {
  check_case bitmap-nb-bitmaps-0
}

@test "bitmap-nb-bitmaps-too-many" {
  check_case bitmap-nb-bitmaps-too-many
}

@test "bitmap-ext-reserved32" {
  check_case bitmap-ext-reserved32
}

@test "bitmap-dir-size-plus-8" {
  check_case bitmap-dir-size-plus-8
}

@test "bitmap-dir-size-minus-8" {
  check_case bitmap-dir-size-minus-8
}

@test "bitmap-dir-offset-unaligned" {
  check_case bitmap-dir-offset-unaligned
}

@test "bitmap-dir-offset-past-eof" {
  check_case bitmap-dir-offset-past-eof
}

@test "bitmap-granularity-8" {
  check_case bitmap-granularity-8
}

@test "bitmap-granularity-32" {
  check_case bitmap-granularity-32
}

@test "bitmap-reserved-flag-bit-3" {
  check_case bitmap-reserved-flag-bit-3
}

@test "bitmap-flag-extra-data-compatible" {
  check_case bitmap-flag-extra-data-compatible
}

@test "bitmap-type-2" {
  check_case bitmap-type-2
}

@test "bitmap-type-0" {
  check_case bitmap-type-0
}

@test "bitmap-extra-data" {
  check_case bitmap-extra-data
}

@test "bitmap-name-size-0" {
  check_case bitmap-name-size-0
}

@test "bitmap-name-size-1024" {
  check_case bitmap-name-size-1024
}

@test "bitmap-duplicate-name" {
  check_case bitmap-duplicate-name
}

@test "bitmap-table-size-0" {
  check_case bitmap-table-size-0
}

@test "bitmap-table-size-mismatch" {
  check_case bitmap-table-size-mismatch
}

@test "bitmap-table-too-small" {
  check_case bitmap-table-too-small
}

@test "bitmap-table-offset-0" {
  check_case bitmap-table-offset-0
}

@test "bitmap-table-offset-unaligned" {
  check_case bitmap-table-offset-unaligned
}

@test "bitmap-table-offset-past-eof" {
  check_case bitmap-table-offset-past-eof
}

@test "bitmap-table-entry-reserved" {
  check_case bitmap-table-entry-reserved
}

@test "bitmap-table-entry-reserved-high" {
  check_case bitmap-table-entry-reserved-high
}

@test "bitmap-table-entry-unaligned" {
  check_case bitmap-table-entry-unaligned
}

@test "bitmap-table-entry-past-eof" {
  check_case bitmap-table-entry-past-eof
}

@test "l2-offset-unaligned" {
  check_case l2-offset-unaligned
}

@test "l2-offset-past-eof" {
  check_case l2-offset-past-eof
}

@test "l1-entry-reserved" {
  check_case l1-entry-reserved
}

@test "data-offset-unaligned" {
  check_case data-offset-unaligned
}

@test "data-offset-past-eof" {
  check_case data-offset-past-eof
}

@test "compressed-offset-past-eof" {
  check_case compressed-offset-past-eof
}
