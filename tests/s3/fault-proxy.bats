#!/usr/bin/env bats
# The fault proxy passes signed S3 traffic through unchanged and injects
# exactly the faults it is told to, at the rate it is told to.  The S3
# tests of qbak build on it to show retries and failures.

load s3-helpers

setup_file() {
    s3_start_gateway
    BUCKET=$(s3_new_bucket proxy)
    export BUCKET
    fault_proxy_start
}

teardown_file() {
    fault_proxy_stop
    s3_remove_bucket "$BUCKET"
}

setup() {
    fault_proxy_rules '{"rules": []}'
}

@test "signed PUT, GET, ranged GET and multipart pass through unchanged" {
    head -c 3000000 /dev/urandom >"$BATS_TEST_TMPDIR/obj"
    # 3 MB: curl sends Expect: 100-continue, which the proxy relays.
    [ "$(S3_ENDPOINT=$FAULT_PROXY_URL s3curl_code -T "$BATS_TEST_TMPDIR/obj" \
         "/$BUCKET/through")" = 200 ]
    [ "$(S3_ENDPOINT=$FAULT_PROXY_URL s3curl_code "/$BUCKET/through")" = 200 ]
    cmp "$BATS_TEST_TMPDIR/obj" "$BATS_TEST_TMPDIR/body"
    [ "$(S3_ENDPOINT=$FAULT_PROXY_URL s3curl_code -r 1000-1999 \
         "/$BUCKET/through")" = 206 ]
    [ "$(stat -c %s "$BATS_TEST_TMPDIR/body")" = 1000 ]
    head -c $((11 << 20)) /dev/urandom >"$BATS_TEST_TMPDIR/big"
    s3cmd -c "$FAULT_PROXY_S3CFG" put --multipart-chunk-size-mb=5 \
        "$BATS_TEST_TMPDIR/big" "s3://$BUCKET/big"
    s3cmd -c "$FAULT_PROXY_S3CFG" get "s3://$BUCKET/big" "$BATS_TEST_TMPDIR/big.back"
    cmp "$BATS_TEST_TMPDIR/big" "$BATS_TEST_TMPDIR/big.back"
    run fault_proxy_log
    [[ "$output" == *"PUT /$BUCKET/through pass 200"* ]]
    [[ "$output" == *"GET /$BUCKET/through pass 206"* ]]
    [[ "$output" == *"PUT /$BUCKET/big?partNumber=3&uploadId="*" pass 200"* ]]
    [[ "$output" != *fault* ]]
}

@test "503 SlowDown at rate 0.3 hits about 30 of 100 requests, on one connection" {
    [ "$(s3curl_code -X PUT --data-binary x "/$BUCKET/rate")" = 200 ]
    fault_proxy_rules '{"seed": 7, "rules": [{"fault": "503", "rate": 0.3}]}'
    args=()
    for i in $(seq 100); do
        args+=(-o /dev/null "$FAULT_PROXY_URL/$BUCKET/rate")
    done
    curl -sS --aws-sigv4 "aws:amz:${AWS_REGION}:s3" \
         -u "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
         -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
         -w '%{http_code} %{num_connects}\n' "${args[@]}" \
         >"$BATS_TEST_TMPDIR/codes"
    n503=$(grep -c '^503 ' "$BATS_TEST_TMPDIR/codes")
    n200=$(grep -c '^200 ' "$BATS_TEST_TMPDIR/codes")
    echo "503: $n503, 200: $n200"
    [ $((n503 + n200)) -eq 100 ]
    # Binomial(100, 0.3): 15..45 is beyond three standard deviations.
    [ "$n503" -ge 15 ] && [ "$n503" -le 45 ]
    [ "$(fault_proxy_log | grep -c 'fault 503$')" -eq "$n503" ]
    # Keep-alive survived the injected errors: one connection for all.
    [ "$(awk '{n += $2} END {print n}' "$BATS_TEST_TMPDIR/codes")" -eq 1 ]
}

@test "the 503 body is S3's SlowDown error" {
    fault_proxy_rules '{"rules": [{"fault": "503"}]}'
    [ "$(S3_ENDPOINT=$FAULT_PROXY_URL s3curl_code "/$BUCKET/rate")" = 503 ]
    grep -q '<Code>SlowDown</Code>' "$BATS_TEST_TMPDIR/body"
    fault_proxy_rules '{"rules": [{"fault": "500"}]}'
    [ "$(S3_ENDPOINT=$FAULT_PROXY_URL s3curl_code "/$BUCKET/rate")" = 500 ]
    grep -q '<Code>InternalError</Code>' "$BATS_TEST_TMPDIR/body"
}

@test "a 503 on one multipart part is retried by s3cmd and the upload completes" {
    fault_proxy_rules '{"rules": [{"fault": "503", "match": "^PUT .*partNumber=2&", "count": 1}]}'
    head -c $((11 << 20)) /dev/urandom >"$BATS_TEST_TMPDIR/big"
    s3cmd -c "$FAULT_PROXY_S3CFG" put --multipart-chunk-size-mb=5 \
        "$BATS_TEST_TMPDIR/big" "s3://$BUCKET/retried"
    run fault_proxy_log
    echo "$output"
    [ "$(grep -c 'partNumber=2&.* fault 503$' <<<"$output")" -eq 1 ]
    [ "$(grep -c 'partNumber=2&.* pass 200$' <<<"$output")" -eq 1 ]
    [ "$(grep -c 'fault' <<<"$output")" -eq 1 ]
    s3cmd -c "$S3CFG" get "s3://$BUCKET/retried" "$BATS_TEST_TMPDIR/back"
    cmp "$BATS_TEST_TMPDIR/big" "$BATS_TEST_TMPDIR/back"
}

@test "drop-request closes before the gateway sees the request" {
    fault_proxy_rules '{"rules": [{"fault": "drop-request", "match": "^PUT "}]}'
    S3_ENDPOINT=$FAULT_PROXY_URL run s3curl -X PUT --data-binary lost \
        "/$BUCKET/dropped-req"
    [ "$status" -ne 0 ]
    [[ "$(fault_proxy_log)" == *"PUT /$BUCKET/dropped-req fault drop-request"* ]]
    [ "$(s3curl_code "/$BUCKET/dropped-req")" = 404 ]
}

@test "drop-response: the gateway stored the object, the client saw a broken reply" {
    head -c 100000 /dev/urandom >"$BATS_TEST_TMPDIR/obj"
    [ "$(s3curl_code -T "$BATS_TEST_TMPDIR/obj" "/$BUCKET/dropped-resp")" = 200 ]
    fault_proxy_rules '{"rules": [{"fault": "drop-response", "match": "^GET "}]}'
    S3_ENDPOINT=$FAULT_PROXY_URL run s3curl -o "$BATS_TEST_TMPDIR/half" \
        "/$BUCKET/dropped-resp"
    # curl: 18, transfer closed with bytes remaining.
    [ "$status" -eq 18 ]
    [ "$(stat -c %s "$BATS_TEST_TMPDIR/half")" = 50000 ]
    cmp -n 50000 "$BATS_TEST_TMPDIR/obj" "$BATS_TEST_TMPDIR/half"

    fault_proxy_rules '{"rules": [{"fault": "drop-response", "match": "^PUT "}]}'
    S3_ENDPOINT=$FAULT_PROXY_URL run s3curl -X PUT --data-binary stored \
        "/$BUCKET/put-unanswered"
    [ "$status" -ne 0 ]
    [ "$(s3curl "/$BUCKET/put-unanswered")" = stored ]
}

@test "cut after 3 requests: the first 3 pass, every later one is closed unanswered" {
    [ "$(s3curl_code -X PUT --data-binary x "/$BUCKET/cut")" = 200 ]
    fault_proxy_rules '{"rules": [{"fault": "cut", "after": 3}]}'
    codes=""
    for i in 1 2 3 4 5; do
        code=$(S3_ENDPOINT=$FAULT_PROXY_URL s3curl_code "/$BUCKET/cut") || true
        codes="$codes $code"
    done
    [ "$codes" = " 200 200 200 000 000" ]
    [ "$(fault_proxy_log | grep -c 'fault cut$')" -eq 2 ]
}

@test "delay holds a request for the given time, then passes it" {
    fault_proxy_rules '{"rules": [{"fault": "delay", "seconds": 1.5}]}'
    start=$(date +%s%N)
    [ "$(S3_ENDPOINT=$FAULT_PROXY_URL s3curl_code "/$BUCKET/cut")" = 200 ]
    elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
    [ "$elapsed_ms" -ge 1500 ]
    [[ "$(fault_proxy_log)" == *"GET /$BUCKET/cut fault delay pass 200"* ]]
}

@test "a changed control file takes effect at the next request" {
    fault_proxy_rules '{"rules": [{"fault": "500"}]}'
    [ "$(S3_ENDPOINT=$FAULT_PROXY_URL s3curl_code "/$BUCKET/cut")" = 500 ]
    fault_proxy_rules '{"rules": []}'
    [ "$(S3_ENDPOINT=$FAULT_PROXY_URL s3curl_code "/$BUCKET/cut")" = 200 ]
}
