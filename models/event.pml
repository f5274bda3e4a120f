/* event.pml — Event (csrc/event.c event_set, event_clear, event_wait,
 * event_try).
 *
 * One futex word w = (pulses << 1) | flag, and a sleepers count.
 *   set()   = if the flag is clear: w = ((pulses + 1) << 1) | 1 (CAS loop),
 *             then wake every sleeper (cproc_wake_waiters(w, INT_MAX))
 *   clear() = fetch_and(w, ~1), no wake
 *   wait()  = w0 = w; if flag: True; else cproc_wait(w, try = {x = w;
 *             ready if (x & 1) or x != w0; seen = x}); return w & 1
 *
 * Processes: a setter that pulses (set(); clear()) once W1 waits, then, once
 * W1 has returned, sets for good; W1 waiting from before the pulse; W2
 * waiting from any moment. Checked: the pulse wakes W1 (else the setter never
 * gets to its final set: an invalid end state / unfinished run); wait()
 * returns True only after a set(); every process finishes (LTL, weak
 * fairness). event_old.pml is the flag-only protocol it replaces.
 */
#define NPROC 3
#define W_EV 1
#include "futex.pml"

byte w;
byte sleepers;
byte nsets;                      /* ghost */
bit w1_waiting, w1_done;         /* ghost: W1 has read w0 / has returned */
byte ndone;

ltl live { <> (ndone == NPROC) }

inline set()
{
    atomic {
        if
        :: !(w & 1) -> w = ((w >> 1) + 1) * 2 + 1; nsets++
        :: else
        fi
    };
    wake_waiters_all(W_EV, sleepers)
}

inline wait(ret)
{
    if
    :: !(w0 & 1) ->
        do
        :: atomic { seen = w; ok = ((seen & 1) || seen != w0) };    /* the try */
            if :: ok -> seen = 0; break :: else fi;
            futex_sleep(w, W_EV, seen, sleepers, 0, false);
            seen = 0
        od;
        ret = w & 1
    :: else -> ret = 1
    fi;
    assert(!ret || nsets > 0)
}

active proctype Setter()
{
    w1_waiting;
    set();
    w = w & 254;                 /* clear() */
    w1_done;
    set();
    ndone++
}

active proctype W1()
{
    byte w0, seen; bit ok, ret, timedout;
    atomic { w0 = w; w1_waiting = 1 };
    wait(ret);
    w1_done = 1;
    ndone++
}

active proctype W2()
{
    byte w0, seen; bit ok, ret, timedout;
    w0 = w;
    wait(ret);
    ndone++
}
