/* semaphore.pml — Semaphore and BoundedSemaphore (csrc/semlock.c).
 *
 * s->sem.value is the counter.
 *   acquire = cproc_semlock_acquire: semaphore_try (CAS v -> v - 1 while
 *             v > 0; else seen = 0), then cproc_wait(value, waiters,
 *             semaphore_try, no poll)
 *   release = cproc_semlock_release: CAS v -> v + 1, then
 *             cproc_wake_waiters(value, waiters, 1)
 *
 * Processes: a producer releasing RELEASES times into a Semaphore(0); a
 * consumer acquiring once, blocking; a consumer trying once with a timeout
 * and, if that gave up, once more without. Two sleepers and back-to-back
 * releases: each release must wake a sleeper of its own.
 * Checked: the counter equals releases - acquires; no invalid end state;
 * every process finishes (LTL, weak fairness).
 * Mutant (must fail): -DBUG_WAKE_FIRST wakes before raising the counter.
 */
#define NPROC 3
#define RELEASES 2
#define W_SEM 1
#define TIMEOUTS 1               /* the one timed wait times out at most once */
#include "futex.pml"

byte word;
byte waiters;
byte acquired, released;
byte ndone;

ltl live { <> (ndone == NPROC) }

/* one acquire(); ok tells whether it got the semaphore */
inline acquire(timed)
{
    ok = 0; timedout = 0;
    do
    :: atomic {                          /* semlock_try */
            if
            :: word > 0 -> word--; acquired++; ok = 1
            :: else -> seen = 0
            fi
        };
        if :: ok -> break :: else fi;
        MAYBE_DEADLINE(timed);
        if :: timedout -> break :: else fi;
        futex_sleep(word, W_SEM, seen, waiters, timed, false)
    od;
    if :: !ok -> wake_waiters(W_SEM, waiters, 1) :: else fi;   /* pass it on */
    assert(word == released - acquired)
}

active proctype Producer()
{
    byte i;
    do
    :: i == RELEASES -> break
    :: else ->
#ifdef BUG_WAKE_FIRST
        wake_waiters(W_SEM, waiters, 1);
        atomic { word++; released++ };
#else
        atomic { word++; released++ };  /* the CAS loop */
        wake_waiters(W_SEM, waiters, 1);
#endif
        i++
    od;
    ndone++
}

active proctype Consumer()
{
    byte seen; bit ok, timedout;
    acquire(0);
    assert(ok);
    ndone++
}

active proctype TimedConsumer()
{
    byte seen; bit ok, timedout;
    acquire(1);
    if
    :: !ok -> acquire(0); assert(ok)
    :: else
    fi;
    ndone++
}
