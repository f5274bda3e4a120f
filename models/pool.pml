/* pool.pml — the Pool's waits (csrc/pool.c, channel.c): tasks through the task
 * queue to the workers, results through the result queue to the collector
 * thread, and the caller's wait for a result (ApplyResult.wait/get).
 *
 * A queue's take path (channel.c try_get, cproc_channel_take): seen = put_seq; if
 * count == 0 not ready; else take the lock, take min(count, max) records
 * (none if another got there first: not ready), count -= n, get_seq += n,
 * release; sleepers wait in cproc_wait(put_seq, get_waiters, try_get). A put
 * (try_put): under the lock, count += n, put_seq += n; release; then
 * cproc_wake_waiters(put_seq, get_waiters, n). The queue lock is an atomic
 * test-and-set lock here (its futex protocol is qlock.pml's) and a section
 * under it one step (readers without the lock read put_seq before count, so
 * a partial update either looks ready, rechecked under the lock, or leaves
 * put_seq changed under a sleeper: EAGAIN).
 * A result (pool.c result_finish, try_ready, result_wait_until): the
 * collector stores ready = 1, then wakes every sleeper if waiters != 0;
 * a waiter sleeps in cproc_wait(ready, waiters, try_ready: seen = ready).
 *
 * Processes: the caller puts 2 tasks in one batch (one wake of 2), waits for
 * result 0 (with a timeout, then again without) and result 1, then puts 2
 * STOP records; 2 workers take one record at a time (two getters racing for
 * one record), answer tasks, leave at STOP; the collector takes results in
 * batches and delivers them.
 * Checked: each result delivered once, and a wait returns only when its
 * result is ready; no invalid end state; every process finishes (LTL, weak
 * fairness).
 * -DUNTIMED: the first wait has no timeout (a smaller state space, for the
 * liveness run; the timed wait is checked for safety).
 * Mutant (must fail): -DBUG_CHECK_FIRST: result_finish reads the waiters
 * count before storing ready.
 */
#define NPROC 4
#define W_TQ 1                   /* the task queue's put_seq */
#define W_RQ 2                   /* the result queue's put_seq */
#define W_READY 3                /* + result id: its ready word */
#define TIMEOUTS 1               /* the one timed wait times out at most once */
#include "futex.pml"

byte tq_lock, tq_count, tq_put_seq, tq_get_waiters;
byte rq_lock, rq_count, rq_put_seq, rq_get_waiters;
bit stopping;                    /* the task queue holds STOP records now */
byte next_tid;
bit rq_has[2];                   /* result records in the result queue */
bit ready[2];
byte res_waiters[2];
byte delivered[2];               /* ghost */
byte ndone;

ltl live { <> (ndone == NPROC) }

/* result.wait(timeout): result_wait_until */
inline result_wait(tid, timed)
{
    ok = 0; timedout = 0;
    if
    :: ready[tid] -> ok = 1
    :: else ->
        do
        :: atomic { seen = ready[tid]; ok = (seen != 0) };   /* try_ready */
            if :: ok -> break :: else fi;
            MAYBE_DEADLINE(timed);
            if :: timedout -> break :: else fi;
            futex_sleep(ready[tid], W_READY + tid, seen, res_waiters[tid], timed, false)
        od;
        if :: !ok -> wake_waiters(W_READY + tid, res_waiters[tid], 1) :: else fi
    fi;
    seen = 0;
    assert(!ok || delivered[tid] == 1)
}

active proctype Caller()
{
    byte seen; bit ok, timedout;
    /* pool_submit: one batch of 2 tasks */
    atomic { tq_lock == 0 -> tq_count = tq_count + 2; tq_put_seq = tq_put_seq + 2 };
    wake_waiters(W_TQ, tq_get_waiters, 2);
#ifdef UNTIMED
    result_wait(0, 0);
#else
    result_wait(0, 1);
#endif
    if :: !ok -> result_wait(0, 0) :: else fi;
    assert(ok);
    result_wait(1, 0);
    assert(ok);
    /* close(): a STOP for each worker */
    atomic { tq_lock == 0 -> stopping = 1; tq_count = tq_count + 2; tq_put_seq = tq_put_seq + 2 };
    wake_waiters(W_TQ, tq_get_waiters, 2);
    ndone++
}

active [2] proctype Worker()
{
    byte seen, tid; bit ok, timedout, stop;
    do
    :: /* take 1 record from the task queue: cproc_channel_take -> cproc_wait(try_get) */
        ok = 0;
        do
        :: seen = tq_put_seq;
            if
            :: tq_count > 0 ->
                atomic {
                    tq_lock == 0;
                    if
                    :: tq_count > 0 ->
                        tq_count--; ok = 1; stop = stopping;
                        if :: !stop -> tid = next_tid; next_tid++ :: else fi
                    :: else                          /* another worker took it */
                    fi
                }
            :: else
            fi;
            if :: ok -> seen = 0; break :: else fi;
            futex_sleep(tq_put_seq, W_TQ, seen, tq_get_waiters, 0, false);
            seen = 0
        od;
        if :: stop -> break :: else fi;
        /* the task's result: put 1 record */
        atomic { rq_lock == 0 -> rq_has[tid] = 1; rq_count++; rq_put_seq++ };
        wake_waiters(W_RQ, rq_get_waiters, 1);
        tid = 0
    od;
    ndone++
}

inline deliver(i)
{
    if
    :: got[i] ->
        got[i] = 0; n++;
        delivered[i]++;
        assert(delivered[i] == 1);
#ifdef BUG_CHECK_FIRST
        if
        :: res_waiters[i] != 0 -> ready[i] = 1; futex_wake_all(W_READY + i)
        :: else -> ready[i] = 1
        fi
#else
        ready[i] = 1;
        wake_waiters_all(W_READY + i, res_waiters[i])
#endif
    :: else
    fi
}

active proctype Collector()
{
    byte seen, n; bit ok, timedout, got[2];
    do
    :: n == 2 -> break
    :: else ->
        /* pool_collect -> cproc_queue_take_batch(results, BATCH) */
        ok = 0;
        do
        :: seen = rq_put_seq;
            if
            :: rq_count > 0 ->
                atomic {
                    rq_lock == 0;
                    if
                    :: rq_count > 0 ->              /* take them all */
                        got[0] = rq_has[0]; got[1] = rq_has[1];
                        rq_has[0] = 0; rq_has[1] = 0; rq_count = 0; ok = 1
                    :: else
                    fi
                }
            :: else
            fi;
            if :: ok -> seen = 0; break :: else fi;
            futex_sleep(rq_put_seq, W_RQ, seen, rq_get_waiters, 0, false);
            seen = 0
        od;
        /* deliver -> result_finish, for each result taken */
        deliver(0);
        deliver(1)
    od;
    ndone++
}
