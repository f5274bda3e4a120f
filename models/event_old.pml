/* event_old.pml — Event before commit 3fd93b8 (git show c82aa74:csrc/sync.c):
 * a flag-only protocol. MUST FAIL: it loses a pulse.
 *
 *   set()   = flag = 1, then cproc_wake_waiters(flag, waiters, INT_MAX)
 *   clear() = flag = 0
 *   wait()  = if flag: True; else cproc_wait(flag, event_try = {seen = 0;
 *             ready if flag}); return flag
 * A sleeper woken by set() that finds the flag cleared again sleeps on (and
 * one that has not gone to sleep yet sleeps on the cleared word): set();
 * clear() wakes nobody for good. Same processes and checks as event.pml.
 */
#define NPROC 3
#define W_EV 1
#include "futex.pml"

byte flag;
byte waiters;
byte nsets;
bit w1_waiting, w1_done;
byte ndone;

ltl live { <> (ndone == NPROC) }

inline set()
{
    atomic { flag = 1; nsets++ };
    wake_waiters_all(W_EV, waiters)
}

inline wait(ret)
{
    if
    :: !flag ->
        do
        :: atomic { seen = 0; ok = (flag != 0) };    /* event_try */
            if :: ok -> break :: else fi;
            futex_sleep(flag, W_EV, seen, waiters, 0, false)
        od;
        ret = flag
    :: else -> ret = 1
    fi;
    assert(!ret || nsets > 0)
}

active proctype Setter()
{
    w1_waiting;
    set();
    flag = 0;                    /* clear() */
    w1_done;
    set();
    ndone++
}

active proctype W1()
{
    bit ok, ret, timedout; byte seen;
    atomic { (!flag) -> w1_waiting = 1 };   /* W1 is in wait(), past its first look */
    wait(ret);
    w1_done = 1;
    ndone++
}

active proctype W2()
{
    bit ok, ret, timedout; byte seen;
    wait(ret);
    ndone++
}
