/* lock.pml — the pid-word mutex (csrc/mutex.c) with dead-owner takeover:
 * Lock and RLock, and the internal locks of Condition and Barrier.
 *
 * m->holder holds the holder's pid (here _pid + 1), 0 when free.
 *   acquire  = cproc_mutex_lock: mutex_try, then cproc_wait(holder, waiters,
 *              mutex_try, mutex_take_over)
 *   release  = cproc_mutex_unlock: exchange 0 (the holder's pid comes back),
 *              then cproc_wake_waiters(holder, waiters, 1)
 * RLock's recursion depth (s->count) is touched by its holder only and does
 * not take part in the protocol.
 *
 * Processes: NPROC, each acquiring and releasing ITERS times. The last one
 * acquires with a timeout (it may give up); process 0 may die while it holds
 * the lock (SIGKILL), after which the others must take the lock over.
 * Checked: mutual exclusion among live processes; no invalid end state (no
 * process asleep forever, e.g. while the lock is free); with the LTL claim
 * under weak fairness, every process eventually finishes.
 * Mutants (must fail): -DBUG_WAKE_FIRST wakes before freeing the word (a
 * lost wake-up); -DBUG_NO_POLL drops the dead-owner takeover.
 */
#define NPROC 3
#define ITERS 2
#define W_LOCK 1                 /* futex word id */
#define TIMEOUTS 1               /* the one timed wait times out at most once */
#include "futex.pml"

byte word;                       /* s->word */
byte waiters;                    /* s->waiters */
bit dead[NPROC + 1];             /* by pid (_pid + 1) */
byte incs;                       /* live processes in the critical section */
byte ndone;

ltl live { <> (ndone == NPROC) }

active [NPROC] proctype P()
{
    byte me = _pid + 1, seen, it;
    bit ok, timedout, timed = (_pid == NPROC - 1);

    do
    :: it == ITERS -> break
    :: else ->
        ok = 0; timedout = 0;
        /* cproc_mutex_lock -> cproc_wait */
        do
        :: /* mutex_try: read, then CAS 0 -> pid */
            atomic {
                if
                :: word == 0 -> word = me; ok = 1
                :: else -> seen = word
                fi
            };
            if :: ok -> seen = 0; break :: else fi;
            /* mutex_take_over: read the holder; CAS it to us if it is dead
             * (one step: a CAS after a change fails, as if made later) */
            atomic {
                if
#ifndef BUG_NO_POLL
                :: word != 0 && word != me && dead[word] -> word = me; ok = 1
#endif
                :: else
                fi
            };
            if :: ok -> seen = 0; break :: else fi;
            MAYBE_DEADLINE(timed);
            if :: timedout -> break :: else fi;
            futex_sleep(word, W_LOCK, seen, waiters, timed, (word != 0 && dead[word]));
            seen = 0
        od;
        if :: !ok -> wake_waiters(W_LOCK, waiters, 1) :: else fi;   /* pass it on */

        if
        :: ok ->
            incs++;
            assert(incs == 1);           /* mutual exclusion */
            if
            :: _pid == 0 -> incs--; dead[me] = 1; goto gone   /* SIGKILL while holding */
            :: true
            fi;
            incs--;
            /* cproc_mutex_unlock */
#ifdef BUG_WAKE_FIRST
            wake_waiters(W_LOCK, waiters, 1);   /* mutant: wake before the store */
            word = 0
#else
            word = 0;
            wake_waiters(W_LOCK, waiters, 1)
#endif
        :: else                          /* acquire(timeout=...) returned False */
        fi;
        it++
    od;
gone:
    ndone++
}
