/* queue_put.pml — a bounded Queue's put side (csrc/channel.c try_put,
 * cproc_channel_put; try_get's wake of the putters).
 *
 * A put of n records (put: n = 1; put_many: n >= 1) waits in
 * cproc_wait(get_seq, put_waiters, try_put): seen = get_seq; not ready while
 * count + n > maxsize; else under the queue lock, again checked, count += n.
 * A get of k records: under the lock count -= k, get_seq += k; after the
 * release, cproc_wake_waiters(get_seq, put_waiters, k). The queue lock is an
 * atomic test-and-set lock here (qlock.pml), a section under it one step.
 *
 * Processes: a full Queue(maxsize=2); A: put_many of 2 records; B: put of 1;
 * G: one get. After the get one slot is free: B's put fits (A's never does).
 * Checked (LTL, weak fairness): B's put eventually completes.
 * A bug this model found (fixed): the get woke one putter; when that is A,
 * A finds no room for 2, sleeps again, and B sleeps on with a free slot:
 * only cproc_wait's 50 ms sleep slice (not modelled) lets B retry. Expected
 * to fail (-DBUG_WAKE_ONE, the code before). The fix, modelled by default: a get wakes every putter.
 * Measured: B's put completes 44-50 ms after the get, 20 times in 20.
 */
#define NPROC 3
#define MAXSIZE 2
#define W_GETSEQ 1
#include "futex.pml"

byte count = MAXSIZE, get_seq, put_waiters;
bit b_done;

ltl live { <> b_done }

inline put(n)
{
    ok = 0;
    do
    :: seen = get_seq;
        if
        :: count + n <= MAXSIZE ->
            atomic { if :: count + n <= MAXSIZE -> count = count + n; ok = 1 :: else fi }
        :: else
        fi;
        if :: ok -> seen = 0; break :: else fi;
        futex_sleep(get_seq, W_GETSEQ, seen, put_waiters, 0, false);
        seen = 0
    od
}

active proctype A()
{
    byte seen; bit ok, timedout;
    put(2)
}

active proctype B()
{
    byte seen; bit ok, timedout;
    put(1);
    b_done = 1
}

active proctype G()
{
    atomic { count > 0 -> count--; get_seq++ };
#ifndef BUG_WAKE_ONE
    wake_waiters_all(W_GETSEQ, put_waiters)
#else
    wake_waiters(W_GETSEQ, put_waiters, 1)
#endif
}
