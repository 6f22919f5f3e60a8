# Shared helpers for the S3 bats tests (tests/s3/*.bats).
#
# Load from a .bats file with `load s3-helpers`, and call s3_start_gateway
# from setup_file.  Under CTest the s3 fixture has already started the
# gateway in $QBAK_RGW_DIR and the call only checks that it answers; run
# by hand, it starts one in $QBAK_RGW_DIR (default: build/rgw).
#
# After s3_start_gateway the environment holds AWS_ACCESS_KEY_ID,
# AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL (from
# $QBAK_RGW_DIR/env) and S3CFG, the s3cmd configuration.  The gateway is
# shared by every test of a `make check`: each test makes its own bucket
# with s3_new_bucket and never assumes the gateway is empty.

QBAK_S3_TESTDIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
QBAK_SRCDIR=${QBAK_SRCDIR:-$(cd "$QBAK_S3_TESTDIR/../.." && pwd)}
QBAK_RGW_DIR=${QBAK_RGW_DIR:-${QBAK_BUILDDIR:-$QBAK_SRCDIR/build}/rgw}
RGW_SH=$QBAK_S3_TESTDIR/rgw.sh
FAULT_PROXY=$QBAK_S3_TESTDIR/fault-proxy.py
export QBAK_SRCDIR QBAK_RGW_DIR

# require_tool CMD PACKAGE: fail (never skip) if CMD is not installed.
require_tool() {
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "missing test tool '$1': install the Debian package '$2'" >&2
        return 1
    fi
}

s3_start_gateway() {
    require_tool s3cmd s3cmd
    require_tool curl curl
    require_tool radosgw radosgw
    "$RGW_SH" start "$QBAK_RGW_DIR" >&2
    # shellcheck disable=SC1091
    . "$QBAK_RGW_DIR/env"
    export S3CFG=$QBAK_RGW_DIR/s3cfg
}

# s3_new_bucket [TAG]: create a bucket no other test uses and print its
# name (lowercase, dashes only, at most 63 characters).
s3_new_bucket() {
    local tag=${1:-t}
    local name
    name=$(printf 'qbak-%s-%s-%s' "$tag" "$$" "$RANDOM" |
           tr 'A-Z_' 'a-z-' | tr -cd 'a-z0-9-' | cut -c1-63)
    s3cmd -c "$S3CFG" mb "s3://$name" >/dev/null
    echo "$name"
}

# s3_remove_bucket NAME: delete a bucket, its objects and its unfinished
# multipart uploads, so that the memstore OSD gives the memory back.
s3_remove_bucket() {
    local upload
    s3cmd -c "$S3CFG" multipart "s3://$1" 2>/dev/null |
        awk '$1 ~ /^[0-9]/ && $2 ~ /^s3:/ {print $2, $3}' |
        while read -r key upload; do
            s3cmd -c "$S3CFG" abortmp "$key" "$upload" >/dev/null || true
        done
    s3cmd -c "$S3CFG" rb --recursive --force "s3://$1" >/dev/null 2>&1 || true
}

# s3curl [CURL ARGS...] PATH: a SigV4-signed request to the gateway (or to
# $S3_ENDPOINT if set, e.g. the fault proxy); PATH is /bucket/key?query,
# pre-encoded.  The payload is sent unsigned, as the header says.
s3curl() {
    local path=${*: -1}
    local args=("${@:1:$#-1}")
    curl -sS --aws-sigv4 "aws:amz:${AWS_REGION}:s3" \
         -u "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
         -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
         "${args[@]}" "${S3_ENDPOINT:-$AWS_ENDPOINT_URL}$path"
}

# s3curl_code [CURL ARGS...] PATH: like s3curl, but print only the HTTP
# status; the body goes to $BATS_TEST_TMPDIR/body.
s3curl_code() {
    s3curl -o "$BATS_TEST_TMPDIR/body" -w '%{http_code}' "$@"
}

# fault_proxy_start: start tests/s3/fault-proxy.py in front of the gateway
# on a free port, its faults read from $FAULT_PROXY_CONTROL (none at
# first).  Sets FAULT_PROXY_URL (the endpoint to give the client),
# FAULT_PROXY_S3CFG (s3cmd through the proxy) and FAULT_PROXY_LOG.  Call
# from setup_file, after s3_start_gateway; stop with fault_proxy_stop.
fault_proxy_start() {
    local dir=${BATS_FILE_TMPDIR:?}
    FAULT_PROXY_CONTROL=$dir/proxy-control.json
    FAULT_PROXY_LOG=$dir/proxy.log
    echo '{"rules": []}' >"$FAULT_PROXY_CONTROL"
    rm -f "$dir/proxy.port"
    # fd 3 closed: bats waits for it to close before it finishes.
    python3 "$FAULT_PROXY" --upstream "$AWS_ENDPOINT_URL" \
        --control "$FAULT_PROXY_CONTROL" --log "$FAULT_PROXY_LOG" \
        --port-file "$dir/proxy.port" "$@" \
        </dev/null >"$dir/proxy.out" 2>&1 3>&- &
    FAULT_PROXY_PID=$!
    for _ in $(seq 300); do
        [ -s "$dir/proxy.port" ] && break
        kill -0 "$FAULT_PROXY_PID" 2>/dev/null ||
            { cat "$dir/proxy.out" >&2; return 1; }
        sleep 0.1
    done
    [ -s "$dir/proxy.port" ] || { echo "fault proxy did not start" >&2; return 1; }
    local port
    port=$(cat "$dir/proxy.port")
    FAULT_PROXY_URL=http://127.0.0.1:$port
    FAULT_PROXY_S3CFG=$dir/proxy.s3cfg
    sed "s/^host_base = .*/host_base = 127.0.0.1:$port/;
         s/^host_bucket = .*/host_bucket = 127.0.0.1:$port/" \
        "$S3CFG" >"$FAULT_PROXY_S3CFG"
    export FAULT_PROXY_CONTROL FAULT_PROXY_LOG FAULT_PROXY_PID \
           FAULT_PROXY_URL FAULT_PROXY_S3CFG
}

fault_proxy_stop() {
    [ -n "${FAULT_PROXY_PID:-}" ] && kill "$FAULT_PROXY_PID" 2>/dev/null
    return 0
}

# fault_proxy_rules JSON: replace the proxy's rules (and restart their
# counters), e.g. '{"seed": 3, "rules": [{"fault": "503", "rate": 0.2}]}'.
# Marks the log so that fault_proxy_log shows only what follows.
fault_proxy_rules() {
    printf '%s\n' "$1" >"$FAULT_PROXY_CONTROL.tmp"
    mv "$FAULT_PROXY_CONTROL.tmp" "$FAULT_PROXY_CONTROL"
    FAULT_PROXY_MARK=$(wc -l <"$FAULT_PROXY_LOG" 2>/dev/null || echo 0)
}

# fault_proxy_log: the proxy's log lines since the last fault_proxy_rules.
fault_proxy_log() {
    tail -n +"$((${FAULT_PROXY_MARK:-0} + 1))" "$FAULT_PROXY_LOG"
}
