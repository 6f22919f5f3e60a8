#!/usr/bin/env bats
# What a person sees in a terminal: qbak copy and qbak backup run in a
# detached tmux session of 80 and of 40 columns.  A fail point
# (write:N:stop, tests/FAILPOINTS.md, N half of the command's writes)
# stops qbak in the middle of its copy with the bar on screen; the screen is read then, and again after
# SIGCONT when the command has ended:
#   - the bar is one line no longer than the terminal (no line on the
#     screen is longer than the width, none is a wrapped piece of the bar);
#   - at the end the bar is gone, replaced by the summary, which gives the
#     size as qemu-img does ("192 MiB (201326592 bytes)").

bats_require_minimum_version 1.5.0
load helpers

setup_file() {
    require_oracle tmux tmux
    require_common_oracles
    require_qbak
    # 192 MiB of data: half of the writes is in the middle of the copy,
    # after the bar was first drawn.
    qemu-img create -q -f qcow2 "$BATS_FILE_TMPDIR/src.qcow2" 256M
    qemu-io -f qcow2 -c 'write -P 7 0 192M' "$BATS_FILE_TMPDIR/src.qcow2" >/dev/null
}

setup() {
    setup_tmpdir
    # a tmux server of this test's own, on its own socket
    SOCK=$T/tmux.sock
    QBAK_PID=
}

# count_writes ARGS...: how many writes `qbak ARGS` makes (run on a copy
# of the source, which it names src.qcow2 here), into WRITES.
count_writes() {
    cp "$BATS_FILE_TMPDIR/src.qcow2" src.qcow2
    QBAK_FAILPOINT_COUNT=$T/count "$QBAK" "$@" >/dev/null 2>&1 ||
        fail "the counting run failed"
    WRITES=$(awk '$1 == "write" {print $2}' "$T/count")
    [ "$WRITES" -gt 8 ] || fail "only $WRITES writes counted"
    rm -rf src.qcow2 count-target.qcow2 count-repo
}

teardown() {
    if [ -n "$QBAK_PID" ] && [ -d "/proc/$QBAK_PID" ]; then
        kill -CONT "$QBAK_PID" 2>/dev/null || true
    fi
    tmux -S "$SOCK" kill-server 2>/dev/null || true
}

# screen: the pane as it is now, one line per screen row (no joining).
screen() {
    tmux -S "$SOCK" capture-pane -p -t t
}

# run_on_terminal COLUMNS COMMAND...: start COMMAND (qbak's arguments) in
# a COLUMNS wide terminal, stopped at the fail point; sets QBAK_PID.
run_on_terminal() {
    local cols=$1 pane pid
    shift
    printf '%q ' "$QBAK" "$@" >cmd
    # The pane's program is a shell script, not an interactive shell: it
    # prints no prompt and does not take the terminal back when qbak stops.
    cat >run.sh <<EOS
cd '$T'
QBAK_FAILPOINT=write:$((WRITES / 2)):stop $(cat cmd)
echo "EXIT=\$?"
sleep 60
EOS
    tmux -S "$SOCK" -f /dev/null new-session -d -s t -x "$cols" -y 20 \
        "sh '$T/run.sh'"
    pane=$(tmux -S "$SOCK" display-message -p -t t '#{pane_pid}')
    for _ in $(seq 400); do
        pid=$(ps -o pid= --ppid "$pane" | head -1 | tr -d ' ')
        if [ -n "$pid" ] && [[ $(ps -o stat= -p "$pid") == T* ]]; then
            QBAK_PID=$pid
            return 0
        fi
        sleep 0.05
    done
    fail "qbak did not reach write $((WRITES / 2)) within 20 s: $(screen)"
}

# check_bar COLUMNS: the screen holds the bar on one line that fits.
check_bar() {
    local cols=$1 s bars
    s=$(screen)
    bars=$(grep -c '%' <<<"$s" || true)
    [ "$bars" -eq 1 ] || fail "$bars lines with a '%' (want the bar alone):"$'\n'"$s"
    grep '%' <<<"$s" | grep -Eq '^\[[#.]{10,}\] +[0-9.]+%' ||
        fail "no bar '[###...]  N%' at the start of a line:"$'\n'"$s"
    # a wrapped bar leaves its end ("of", "MiB/s", "ETA", "]") on the next row
    if grep -v '%' <<<"$s" | grep -Eq 'ETA|/s|[#.]{5,}\]| of [0-9]'; then
        fail "pieces of the bar on another line:"$'\n'"$s"
    fi
    long=$(tmux -S "$SOCK" capture-pane -p -J -t t | awk -v w="$cols" 'length($0) > w - 1')
    [ -z "$long" ] || fail "a line longer than $((cols - 1)) columns (wrapped): $long"
}

# finish: let qbak go on; wait for the command's end; its screen in $S.
finish() {
    kill -CONT "$QBAK_PID"
    for _ in $(seq 600); do
        S=$(screen)
        [[ $S == *EXIT=* ]] && break
        sleep 0.05
    done
    QBAK_PID=
    [[ $S == *EXIT=0* ]] || fail "the command failed:"$'\n'"$S"
}

# check_summary COLUMNS PATTERN: the bar is gone, a summary matching
# PATTERN (an ERE) took its place, and no line wrapped.
check_summary() {
    local cols=$1 pattern=$2
    if grep -Eq 'ETA|\[[#.]+\]' <<<"$S"; then
        fail "the bar is still on screen:"$'\n'"$S"
    fi
    grep -Eq "$pattern" <<<"$(tmux -S "$SOCK" capture-pane -p -J -t t)" ||
        fail "no summary /$pattern/:"$'\n'"$S"
    # the summary is on the first line, where the bar was
    [[ $(head -1 <<<"$S") != "" ]] || fail "the first line is empty:"$'\n'"$S"
}

copy_on() {
    count_writes copy src.qcow2 count-target.qcow2 --sync full
    run_on_terminal "$1" copy "$BATS_FILE_TMPDIR/src.qcow2" t.qcow2 --sync full
    check_bar "$1"
    finish
    check_summary "$1" '^t\.qcow2: ok: copied 192 MiB \(201326592 bytes\) in 3072 clusters'
}

backup_on() {
    count_writes backup src.qcow2 count-repo
    run_on_terminal "$1" backup "$BATS_FILE_TMPDIR/src.qcow2" repo
    check_bar "$1"
    finish
    check_summary "$1" '^repo: point [0-9TZ-]+: .*src\.qcow2: copied 192 MiB \(201326592 bytes\) in'
}

@test "terminal: qbak copy at 80 columns: one-line bar, then the summary with qemu-img's size" {
    copy_on 80
}

@test "terminal: qbak copy at 40 columns: the bar still fits one line" {
    copy_on 40
}

@test "terminal: qbak backup at 80 columns: one-line bar, then one summary line per disk" {
    backup_on 80
}

@test "terminal: qbak backup at 40 columns: the bar still fits one line" {
    backup_on 40
}

@test "terminal: -q prints nothing but -p draws the bar into a file" {
    run --separate-stderr qbak copy -q "$BATS_FILE_TMPDIR/src.qcow2" q.qcow2 --sync full
    [ "$status" -eq 0 ] && [ -z "$output" ] && [ -z "$stderr" ] ||
        fail "-q: exit $status, stdout '$output', stderr '$stderr'"
    COLUMNS=40 qbak copy -p "$BATS_FILE_TMPDIR/src.qcow2" p.qcow2 --sync full 2>bar.txt
    grep -q '100.0%' bar.txt || fail "-p drew no bar: $(cat -v bar.txt)"
    # each redraw fits COLUMNS=40 when stderr is no terminal
    tr '\r' '\n' <bar.txt | awk 'length($0) > 39 { bad = 1 } END { exit bad }' ||
        fail "a redraw wider than 39 columns: $(cat -v bar.txt)"
}
