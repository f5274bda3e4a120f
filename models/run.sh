#!/usr/bin/env bash
# models/run.sh — model-check every futex protocol of the C core with Spin.
#
# Each model (models/*.pml) is checked twice:
#   safety:   assertions and invalid end states (a process asleep forever),
#             the LTL claim left out (pan -DSAFETY -DNOCLAIM);
#   hang:     the same without the assertions (pan -A): invalid end states only;
#   asserts:  the assertions only (pan -E), for scenarios that may hang legitimately;
#   liveness: the model's LTL claim "every process eventually finishes" under
#             weak fairness (pan -a -f).
# The correct protocols must pass; the buggy ones (mutants of the correct
# models, and the OLD Condition and Event protocols) must fail: that shows the
# checker sees the bug each model is about. One line per check, then
# "N passed, N failed"; exit status 1 on any unexpected verdict.
# Needs spin and gcc (Debian: apt-get install -y spin); installs nothing.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if ! command -v spin >/dev/null 2>&1; then
    echo "models/run.sh: spin is not installed (Debian/Ubuntu: apt-get install -y spin)" >&2
    exit 2
fi
if ! command -v gcc >/dev/null 2>&1; then
    echo "models/run.sh: gcc is not installed" >&2
    exit 2
fi
work=$(mktemp -d /tmp/cproc-models.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp "$here"/*.pml "$work"/

passed=0
failed=0

# [OPT=2] check MODEL MODE EXPECT [SPIN -D FLAGS...]
#   MODE: safety | hang | asserts | liveness; EXPECT: pass | fail; OPT: gcc -O level
#   for pan (0 compiles fastest; 2 for the largest state spaces)
check() {
    local model=$1 mode=$2 expect=$3
    shift 3
    local name="$model${*:+ $*}"
    local dir="$work/$model.$mode.${*// /_}"
    mkdir -p "$dir" && cp "$work"/*.pml "$dir"/
    local cflags pflags
    if [ "$mode" = safety ]; then
        cflags="-DSAFETY -DNOCLAIM"; pflags=""
    elif [ "$mode" = hang ]; then     # safety with the assertions ignored:
        cflags="-DSAFETY -DNOCLAIM"; pflags="-A"     # does a process sleep forever?
    elif [ "$mode" = asserts ]; then  # the assertions only (pan -E)
        cflags="-DSAFETY -DNOCLAIM"; pflags="-E"
    else
        cflags="-DNFAIR=3"; pflags="-a -f"
    fi
    local t0=$(date +%s.%N) out verdict errors states
    if ! (cd "$dir" && spin -a "$@" "$model.pml" >spin.log 2>&1); then
        echo "FAIL  $name [$mode]: spin -a failed: $(tail -n 3 "$dir/spin.log" | tr '\n' ' ')"
        failed=$((failed + 1)); return
    fi
    if ! (cd "$dir" && gcc -O${OPT:-0} -w -DMEMLIM=2048 $cflags -o pan pan.c >gcc.log 2>&1); then
        echo "FAIL  $name [$mode]: gcc failed: $(tail -n 3 "$dir/gcc.log" | tr '\n' ' ')"
        failed=$((failed + 1)); return
    fi
    out=$(cd "$dir" && ./pan -m1000000 $pflags 2>&1)
    local t1=$(date +%s.%N)
    errors=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' <<<"$out" | head -n 1)
    states=$(sed -n 's/^ *\([0-9.e+]*\) states, stored.*/\1/p' <<<"$out" | head -n 1)
    if [ -z "$errors" ]; then
        verdict="no verdict"
    elif grep -q "search not completed\|max search depth too small" <<<"$out" && [ "$errors" = 0 ]; then
        verdict="incomplete"
    elif [ "$errors" = 0 ]; then
        verdict="pass"
    else
        verdict="fail ($(sed -n 's/^pan:[0-9]*: *\(.*\) (at depth.*/\1/p' <<<"$out" | head -n 1))"
    fi
    local secs=$(awk "BEGIN{printf \"%.1f\", $t1 - $t0}")
    local line="$name [$mode]: $verdict, ${states:-?} states, ${secs}s (expected $expect)"
    if [ "${verdict%% *}" = "$expect" ]; then
        echo "ok    $line"; passed=$((passed + 1))
    else
        echo "FAIL  $line"; failed=$((failed + 1))
        grep -E "^pan|error" <<<"$out" | head -n 5 | sed 's/^/      /'
    fi
}

# The correct protocols: both checks must pass.
for mode in safety liveness; do
    check lock $mode pass
    check semaphore $mode pass
    OPT=2 check barrier $mode pass
    OPT=2 check qlock $mode pass
    check event $mode pass
    for scenario in 1 2 3; do
        check condition $mode pass -DSCENARIO=$scenario -DTIMED
    done
    check condition $mode pass -DSCENARIO=3
done
OPT=2 check pool safety pass
OPT=2 check pool liveness pass -DUNTIMED

# The bugs each model is about: each must be found.
check event_old safety fail
check event_old liveness fail
for scenario in 1 2 3; do
    check condition_old safety fail -DSCENARIO=$scenario
done
for scenario in 1 2; do
    check condition_old hang fail -DSCENARIO=$scenario
done
check condition safety fail -DSCENARIO=3 -DBUG_WAKE_K
check lock safety fail -DBUG_WAKE_FIRST
check lock liveness fail -DBUG_NO_POLL
check semaphore safety fail -DBUG_WAKE_FIRST
check barrier safety fail -DBUG_WAKE_FIRST
check qlock safety fail -DBUG_NO_MARK
check pool safety fail -DBUG_CHECK_FIRST

# Barrier.wait() after reset() and a later break (a bug this model found,
# fixed: each round's outcome is recorded, barrier.pml).
OPT=2 check barrier asserts pass -DRESET
# A get wakes every putter (a bug this model found, fixed: a get woke one, and
# a put_many that could not fit absorbed the wake a single put could use).
# The old code must fail:
check queue_put liveness fail -DBUG_WAKE_ONE
check queue_put liveness pass
# join() sleeps on the zeros word (a bug this model found, fixed: it slept on
# the counter and missed a moment the count was 0 when a put raised it again
# before join slept, ABA). The old code must fail:
check join liveness fail -DBUG_ABA
check join liveness pass
# SimpleQueue._reader's pipe says whether the queue holds a record (a bug
# CPython's concurrent.futures tests found, fixed: a put's byte came after a
# get had drained the pipe, and concurrent.futures' manager thread went into
# a get() on an empty queue). The old protocol, and a byte written after the
# lock's release when a producer dies between the two, must fail:
check watch safety pass
check watch safety pass -DDEATH
check watch safety fail -DBUG_OLD
check watch safety fail -DBUG_LATE_BYTE -DDEATH

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
