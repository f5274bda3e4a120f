/* qlock.pml — the queue lock (csrc/qlock.c cproc_qlock_acquire and
 * cproc_qlock_release on the pid-word mutex, csrc/mutex.c) and the repair
 * after a holder's death.
 *
 * h->lock.holder holds the holder's pid (here _pid + 1), 0 when free.
 *   cproc_qlock_acquire = cproc_mutex_lock: mutex_try (read, then CAS
 *                   0 -> pid), then cproc_wait(holder, waiters, mutex_try,
 *                   mutex_take_over); taken over from a dead holder
 *                   (CPROC_MUTEX_TAKEN_OVER): needs_repair = 1; then, while
 *                   needs_repair, queue_repair (which clears it at its end)
 *   cproc_qlock_release = cproc_mutex_unlock: exchange 0, then
 *                   cproc_wake_waiters(holder, waiters, 1)
 * `consistent` stands for the ring and counters: a put or get leaves them
 * inconsistent while it runs; queue_repair makes them consistent again.
 *
 * Processes: NPROC, ITERS operations each under the lock. Process 0 may die
 * in the middle of an operation, process 1 in the middle of a repair;
 * mapping the ring (ring_sync) may fail after a takeover, releasing the lock
 * unrepaired; the
 * last one takes the lock with a deadline (a get with a timeout).
 * Checked: mutual exclusion among live processes; no operation starts on an
 * inconsistent queue (a cut-short repair is redone); no invalid end state;
 * every process finishes (LTL, weak fairness).
 * Mutant (must fail): -DBUG_NO_MARK repairs only in the process that took
 * the lock over (no mark in the header: a repair that did not happen is lost).
 */
#define NPROC 3
#define ITERS 2
#define W_LOCK 1
#define TIMEOUTS 1               /* the one timed wait times out at most once */
#include "futex.pml"

byte lock;
byte lock_waiters;
bit needs_repair;
bit consistent = 1;
bit dead[NPROC + 1];
byte incs;
byte ndone;

ltl live { <> (ndone == NPROC) }

active [NPROC] proctype P()
{
    byte me = _pid + 1, seen, it;
    bit ok, timedout, took_over, timed = (_pid == NPROC - 1);

    do
    :: it == ITERS -> break
    :: else ->
        ok = 0; timedout = 0; took_over = 0;
        do
        :: atomic {                                  /* mutex_try: read, then CAS */
                if
                :: lock == 0 -> lock = me; ok = 1
                :: else -> seen = lock
                fi
            };
            if :: ok -> seen = 0; break :: else fi;
            atomic {                                 /* mutex_take_over */
                if
                :: lock != 0 && lock != me && dead[lock] -> lock = me; ok = 1; took_over = 1
                :: else
                fi
            };
            if :: ok -> seen = 0; break :: else fi;
            MAYBE_DEADLINE(timed);
            if :: timedout -> seen = 0; break :: else fi;
            futex_sleep(lock, W_LOCK, seen, lock_waiters, timed, (lock != 0 && dead[lock]));
            seen = 0
        od;
        if :: !ok -> wake_waiters(W_LOCK, lock_waiters, 1) :: else fi;

        if
        :: ok ->
            incs++;
            assert(incs == 1);
#ifndef BUG_NO_MARK
            if :: took_over -> needs_repair = 1 :: else fi;
#endif
            if
            :: took_over || needs_repair ->                  /* ring_sync fails (mmap): */
                if
                :: incs--; lock = 0; wake_waiters(W_LOCK, lock_waiters, 1); goto next
                :: true
                fi
            :: else
            fi;
#ifdef BUG_NO_MARK
            if :: took_over -> consistent = 1 :: else fi;    /* repair */
#else
            if
            :: needs_repair ->                               /* queue_repair */
                if
                :: _pid == 1 -> incs--; dead[me] = 1; goto gone   /* killed mid-repair */
                :: true
                fi;
                consistent = 1;
                needs_repair = 0
            :: else
            fi;
#endif
            assert(consistent);                              /* the put or get */
            consistent = 0;
            if
            :: _pid == 0 -> incs--; dead[me] = 1; goto gone   /* killed mid-operation */
            :: true
            fi;
            consistent = 1;
            incs--;
            lock = 0;                                        /* cproc_qlock_release */
            wake_waiters(W_LOCK, lock_waiters, 1)
        :: else
        fi;
next:
        took_over = 0;
        it++
    od;
gone:
    ndone++
}
