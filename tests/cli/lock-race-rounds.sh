#!/bin/bash
# lock-race-rounds.sh QBAK FIRST LAST 'ARGS A' 'ARGS B'
#
# Rounds FIRST..LAST of two qbak runs started together (lock-race.bats).
# In ARGS, @N@ stands for the round number.  In odd rounds each run has
# the fail point read:1:stop, so it stops with its locks held before
# reading a byte; both are let go only when each has stopped or exited, so
# the two always overlap.  In even rounds one of them (A, then B, in turn)
# stops instead at lock:1, between taking its lock bytes and checking them
# for other holders: the window in which a writer that checked first and
# locked afterwards would let the other one through (both would exit 0).
# That one is let go first, and the other (stopped past its check, its
# locks held, or exited) only once it has exited.
# Prints "N EXIT_A EXIT_B" per round; stderr goes to e.N.a and e.N.b.
# A small script of its own: forking the bats shell for every run would
# cost several times more.
qbak=$1 first=$2 last=$3 tmpl_a=$4 tmpl_b=$5

nap=$(mktemp -u "${TMPDIR:-/tmp}/qbak-nap.XXXXXX")
mkfifo "$nap"
# read -t on a pipe nobody writes: a sleep that starts no process
exec {fd}<>"$nap"
rm -f "$nap"

# settle PID: until PID has stopped at its fail point or exited
settle() {
    local stat state n=0
    while read -r stat 2>/dev/null <"/proc/$1/stat"; do
        state=${stat##*) }
        state=${state%% *}
        case $state in T|t|Z|X) return 0 ;; esac
        read -r -t 0.002 -u "$fd" || true
        n=$((n + 1))
        if [ "$n" -ge 10000 ]; then
            echo "qbak pid $1 neither stopped nor exited" >&2
            return 1
        fi
    done
}

for ((n = first; n <= last; n++)); do
    read -r -a a <<<"${tmpl_a//@N@/$n}"
    read -r -a b <<<"${tmpl_b//@N@/$n}"
    fa=read:1:stop fb=read:1:stop
    case $((n % 4)) in
        2) fa=lock:1:stop ;;
        0) fb=lock:1:stop ;;
    esac
    QBAK_FAILPOINT=$fa "$qbak" "${a[@]}" >/dev/null 2>"e.$n.a" &
    pa=$!
    QBAK_FAILPOINT=$fb "$qbak" "${b[@]}" >/dev/null 2>"e.$n.b" &
    pb=$!
    settle "$pa" && settle "$pb" || { kill -KILL "$pa" "$pb"; exit 1; }
    ra=0 rb=0
    case $((n % 4)) in
        # the writer stopped in its lock window goes on (to its end: it
        # has no other stop) while the other, if it got past its check,
        # still holds its locks; only then is the other let go
        2) kill -CONT "$pa" 2>/dev/null; wait "$pa" || ra=$?
           kill -CONT "$pb" 2>/dev/null; wait "$pb" || rb=$? ;;
        0) kill -CONT "$pb" 2>/dev/null; wait "$pb" || rb=$?
           kill -CONT "$pa" 2>/dev/null; wait "$pa" || ra=$? ;;
        *) kill -CONT "$pa" "$pb" 2>/dev/null
           wait "$pa" || ra=$?
           wait "$pb" || rb=$? ;;
    esac
    echo "$n $ra $rb"
done
