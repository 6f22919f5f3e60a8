#!/bin/bash
# A throwaway single-node Ceph with a RADOS Gateway on 127.0.0.1, for the
# S3 tests and benchmarks.
#
#   rgw.sh start DIR    start one (or reuse the one from DIR that answers)
#   rgw.sh stop DIR     stop the daemons started from DIR
#   rgw.sh status DIR   exit 0 if the gateway from DIR answers
#
# Everything lives under DIR: the configuration, the monitor's store, the
# OSD (memstore: objects live in memory, so a restart starts empty), pid
# files, admin sockets and logs.  /etc/ceph and /var/lib/ceph are never
# read or written: every ceph command gets -c DIR/ceph.conf.
#
# One monitor, one memstore OSD and radosgw: no manager, no cephx (the
# gateway's own S3 SigV4 checks are what the tests need).  After start,
# DIR/env holds the endpoint and the test user's keys as shell exports and
# DIR/s3cfg is an s3cmd configuration for the same gateway.
#
# Environment:
#   RGW_PORT          gateway port (default 7480; if unset and 7480 is
#                     taken, a free port is chosen and written to DIR/env)
#   RGW_MEMSTORE_MIB  OSD capacity in MiB (default 4096; memory is only
#                     used for what is stored)
#   RGW_TIMEOUT       seconds each daemon gets to come up (default 60)
set -euo pipefail

usage() {
  echo "usage: $0 start|stop|status DIR" >&2
  exit 2
}

[ $# -eq 2 ] || usage
cmd=$1
mkdir -p "$2"
DIR=$(cd "$2" && pwd)
CONF=$DIR/ceph.conf
LOGS=$DIR/log
RUN=$DIR/run
TIMEOUT=${RGW_TIMEOUT:-60}

# The test user.  Fixed keys: the gateway is bound to 127.0.0.1 and holds
# nothing but test data.
RGW_UID=qbak-test
ACCESS_KEY=QBAKTESTACCESSKEY000
SECRET_KEY=qbaktestsecretkey000000000000000000000000

DAEMONS="mon.a osd.0 client.rgw.qbak"

die() {
  echo "rgw.sh: $*" >&2
  exit 1
}

# A start that fails, wherever it fails, stops what it started (the logs
# stay for a look).
STARTING=0
trap '[ "$STARTING" = 0 ] || stop_daemons' EXIT

# log_tail NAME: show the end of a daemon's log when it failed.
log_tail() {
  local f
  for f in "$LOGS/$1.log" "$LOGS/$1.out"; do
    if [ -s "$f" ]; then
      echo "---- last lines of $f ----" >&2
      tail -n 40 "$f" >&2
    fi
  done
}

pid_of() {
  local f=$RUN/$1.pid
  [ -s "$f" ] || return 1
  local pid
  pid=$(cat "$f")
  kill -0 "$pid" 2>/dev/null || return 1
  # A stale pid file (after a reboot) may name somebody else's process:
  # ours were started with -c DIR/ceph.conf.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "-c $CONF" ||
    return 1
  echo "$pid"
}

# wait_for WHAT SECONDS "NAME..." CMD...: retry CMD until it succeeds;
# fail with the daemons' log tails if one of them exits or SECONDS pass.
wait_for() {
  local what=$1 limit=$2 names=$3 name
  shift 3
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    for name in $names; do
      if ! pid_of "$name" >/dev/null; then
        log_tail "$name"
        die "$name exited before $what (logs in $LOGS)"
      fi
    done
    if [ "$SECONDS" -ge "$deadline" ]; then
      for name in $names; do
        log_tail "$name"
      done
      die "no $what within ${limit}s (logs in $LOGS)"
    fi
    sleep 0.5
  done
}

port_free() {
  python3 - "$1" <<'EOF'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
EOF
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# s3_answers ENDPOINT: an anonymous ListBuckets gets an S3 reply
# (AccessDenied or a bucket list) from a gateway, not a refusal.
s3_answers() {
  local code
  code=$(curl -s -o /dev/null -m 5 -w '%{http_code}' "$1/") || return 1
  [ "$code" = 200 ] || [ "$code" = 403 ]
}

# The gateway from DIR answers: its daemons are ours and alive, and the
# endpoint recorded in DIR/env replies.
running() {
  [ -s "$DIR/env" ] || return 1
  local d
  for d in $DAEMONS; do
    pid_of "$d" >/dev/null || return 1
  done
  local endpoint
  endpoint=$(sed -n 's/.*AWS_ENDPOINT_URL=\([^ ]*\).*/\1/p' "$DIR/env")
  [ -n "$endpoint" ] && s3_answers "$endpoint"
}

# Every daemon is killed outright: nothing they hold is kept (the next
# start begins from an empty cluster), a memstore OSD that stops cleanly
# first writes every object it holds to its data directory, and radosgw
# takes seconds to drain on SIGTERM.
stop_daemons() {
  local d pid pids=""
  for d in $DAEMONS; do
    if pid=$(pid_of "$d"); then
      kill -KILL "$pid" 2>/dev/null || true
      pids="$pids $pid"
    fi
  done
  for pid in $pids; do
    while kill -0 "$pid" 2>/dev/null; do
      sleep 0.1
    done
  done
  for d in $DAEMONS; do
    rm -f "$RUN/$d.pid"
  done
}

ceph_cli() {
  timeout "$((TIMEOUT + 10))" ceph -c "$CONF" --connect-timeout "$TIMEOUT" "$@"
}

# start_daemon NAME PROGRAM ARGS...: run the daemon in the foreground of
# its own session (a Ctrl-C or the end of the calling test leaves it
# running until `stop`), its pid in RUN/NAME.pid, its stray output in
# LOGS/NAME.out.
start_daemon() {
  local name=$1
  shift
  setsid "$@" -f -c "$CONF" </dev/null >>"$LOGS/$name.out" 2>&1 9>&- &
  echo $! >"$RUN/$name.pid"
  disown
}

write_conf() {
  local mon_port=$1 rgw_port=$2 fsid
  fsid=$(cat /proc/sys/kernel/random/uuid)
  cat >"$CONF" <<EOF
# Written by rgw.sh for a throwaway test cluster; see that script.
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$mon_port
mon initial members = a
public addr = 127.0.0.1
ms bind ipv4 = true
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
# Without these the gateway's monitor session fails with -13 (EACCES) and
# radosgw hangs during start.
ms mon client mode = crc
ms client mode = crc
keyring = $DIR/keyring
run dir = $RUN
admin socket = $RUN/\$name.asok
log file = $LOGS/\$name.log
mon cluster log file = $LOGS/cluster.log
log to stderr = false
err to stderr = true
crash dir = $DIR/crash
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool delete = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000

[mon.a]
mon data = $DIR/mon
mon data avail crit = 0
mon data avail warn = 0

[osd.0]
osd data = $DIR/osd
osd journal = $DIR/osd/journal
osd objectstore = memstore
memstore device bytes = $(( ${RGW_MEMSTORE_MIB:-4096} * 1048576 ))
osd class load list = *
osd class default list = *

[client.rgw.qbak]
# Without tcp_nodelay a small ranged GET on a kept-alive connection waits
# ~50 ms (Nagle meeting delayed ACKs); with it, ~5 ms.
rgw frontends = beast endpoint=127.0.0.1:$rgw_port tcp_nodelay=1
rgw data = $DIR/rgw
rgw thread pool size = 64
rgw enable usage log = false
# Deleted objects leave memory soon, for benchmarks that write and
# delete gigabytes in rounds.
rgw gc obj min wait = 30
rgw gc processor period = 30
EOF
}

start() {
  if running; then
    echo "rgw.sh: gateway from $DIR already answers"
    return 0
  fi
  local prog
  for prog in ceph-mon ceph-osd radosgw radosgw-admin ceph monmaptool; do
    command -v "$prog" >/dev/null ||
      die "$prog not found: run .ci/install-deps (Debian packages ceph-mon ceph-osd radosgw ceph-common)"
  done
  local t0=$SECONDS
  STARTING=1

  # Leftovers of an earlier run from DIR (daemons killed, machine
  # rebooted): stop what still runs and start from nothing.
  stop_daemons
  rm -rf "$DIR/mon" "$DIR/osd" "$DIR/rgw" "$RUN" "$LOGS" "$DIR/crash" \
         "$DIR/env" "$DIR/s3cfg" "$CONF" "$DIR/keyring" "$DIR/monmap"
  mkdir -p "$DIR/mon" "$DIR/osd" "$DIR/rgw" "$RUN" "$LOGS" "$DIR/crash"
  : >"$DIR/keyring"

  local rgw_port
  if [ -n "${RGW_PORT:-}" ]; then
    rgw_port=$RGW_PORT
    port_free "$rgw_port" || die "port $rgw_port (RGW_PORT) is in use"
  elif port_free 7480; then
    rgw_port=7480
  else
    rgw_port=$(free_port)
    echo "rgw.sh: port 7480 is in use; the gateway gets port $rgw_port (see $DIR/env)"
  fi
  local mon_port
  mon_port=$(free_port)
  write_conf "$mon_port" "$rgw_port"

  local fsid
  fsid=$(sed -n 's/^fsid = //p' "$CONF")
  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" \
    "$DIR/monmap" >"$LOGS/monmap.out" 2>&1 ||
    { cat "$LOGS/monmap.out" >&2; die "monmaptool failed"; }
  ceph-mon -c "$CONF" -i a --mkfs --monmap "$DIR/monmap" --keyring /dev/null \
    >"$LOGS/mon.a.out" 2>&1 || { log_tail mon.a; die "ceph-mon --mkfs failed"; }
  start_daemon mon.a ceph-mon -i a

  # The ceph command waits for the monitor (up to TIMEOUT).  The OSD puts
  # itself into the CRUSH map when it starts.
  local id
  if ! id=$(ceph_cli osd create 2>"$LOGS/osd-create.out"); then
    cat "$LOGS/osd-create.out" >&2
    log_tail mon.a
    die "ceph osd create failed: is the monitor up? (logs in $LOGS)"
  fi
  [ "$id" = 0 ] || die "ceph osd create gave osd.$id, expected osd.0"
  echo "rgw.sh: monitor up after $((SECONDS - t0))s"
  ceph-osd -c "$CONF" -i 0 --mkjournal --mkfs \
    >"$LOGS/osd.0.out" 2>&1 || { log_tail osd.0; die "ceph-osd --mkfs failed"; }
  start_daemon osd.0 ceph-osd -i 0

  # radosgw creates its pools as soon as the OSD is up; the wait covers
  # both daemons, so it gets a TIMEOUT each.
  start_daemon client.rgw.qbak radosgw -n client.rgw.qbak
  wait_for "S3 replies on 127.0.0.1:$rgw_port" $((2 * TIMEOUT)) \
    "mon.a osd.0 client.rgw.qbak" s3_answers "http://127.0.0.1:$rgw_port"

  timeout "$TIMEOUT" radosgw-admin -c "$CONF" user create --uid "$RGW_UID" \
    --display-name "qbak tests" --access-key "$ACCESS_KEY" \
    --secret-key "$SECRET_KEY" >"$LOGS/user-create.out" 2>&1 ||
    { tail -n 20 "$LOGS/user-create.out" >&2; die "radosgw-admin user create failed"; }

  cat >"$DIR/s3cfg" <<EOF
[default]
access_key = $ACCESS_KEY
secret_key = $SECRET_KEY
host_base = 127.0.0.1:$rgw_port
host_bucket = 127.0.0.1:$rgw_port
use_https = False
signature_v2 = False
bucket_location = default
check_ssl_certificate = False
EOF
  # AWS_DEFAULT_REGION too: older clients read only that name.  The
  # gateway's zonegroup is "default"; SigV4 signatures carry the region.
  cat >"$DIR/env.tmp" <<EOF
export AWS_ACCESS_KEY_ID=$ACCESS_KEY AWS_SECRET_ACCESS_KEY=$SECRET_KEY AWS_REGION=default AWS_DEFAULT_REGION=default AWS_ENDPOINT_URL=http://127.0.0.1:$rgw_port
EOF
  mv "$DIR/env.tmp" "$DIR/env"
  STARTING=0
  echo "rgw.sh: gateway on http://127.0.0.1:$rgw_port up in $((SECONDS - t0))s (env: $DIR/env)"
}

case $cmd in
start)
  exec 9>"$DIR/lock"
  flock 9
  start
  ;;
stop)
  exec 9>"$DIR/lock"
  flock 9
  stop_daemons
  # The memstore OSD held the data; nothing on disk is worth keeping
  # except the logs.
  rm -rf "$DIR/osd" "$DIR/env"
  echo "rgw.sh: stopped the gateway from $DIR"
  ;;
status)
  if running; then
    sed -n 's/.*AWS_ENDPOINT_URL=\([^ ]*\).*/rgw.sh: answers on \1/p' "$DIR/env"
  else
    echo "rgw.sh: no gateway from $DIR answers"
    exit 1
  fi
  ;;
*)
  usage
  ;;
esac
