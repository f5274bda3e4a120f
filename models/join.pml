/* join.pml — JoinableQueue.join() and task_done() (csrc/queue.c
 * queue_join, try_join, queue_task_done; put's unfinished += n).
 *
 * The futex word is the counter itself: join waits in cproc_wait(unfinished,
 * join_waiters, try_join: seen = unfinished; ready when 0); task_done CASes
 * v -> v - 1 and, when that made it 0, wakes every joiner; a put adds to it.
 *
 * Processes: one task is unfinished; C calls task_done(), then P puts a new
 * task (never done); J joins. multiprocessing: a join() that has looked at
 * the counter (under its Condition's lock) before it reached 0 is woken by
 * that task_done's notify_all. Ghost `owed`: the counter reached 0 after J
 * looked and before J returned.
 * Checked (LTL, weak fairness): owed -> <> J returns.
 * A bug this model found (fixed): J reads 1, task_done makes it 0 (no
 * sleeper yet: no wake), the put makes it 1 again, J sleeps on 1 (ABA) until
 * the new task is done (the code before; -DBUG_ABA models it and must fail). The fix, modelled by default:
 * task_done bumps a second word, zeros, when it reaches 0 (as Event's pulse
 * count); join reads zeros (z0) first, is done when the counter is 0 or
 * zeros != z0, and sleeps on zeros.
 */
#define NPROC 3
#define W_JOIN 1
#include "futex.pml"

byte unfinished = 1, join_waiters;
byte zeros;                      /* bumped by every task_done that reaches 0 */
bit looked, owed, jdone;         /* ghosts */

ltl live { [] (owed -> <> jdone) }

active proctype J()
{
    byte seen, z0; bit ok, timedout;
    z0 = zeros;
    do
    :: atomic {                                      /* try_join */
#ifndef BUG_ABA
            seen = zeros;
            ok = (unfinished == 0 || zeros != z0);
#else
            seen = unfinished;
            ok = (unfinished == 0);
#endif
            looked = 1
        };
        if :: ok -> break :: else fi;
#ifndef BUG_ABA
        futex_sleep(zeros, W_JOIN, seen, join_waiters, 0, false)
#else
        futex_sleep(unfinished, W_JOIN, seen, join_waiters, 0, false)
#endif
    od;
    atomic { jdone = 1; owed = 0 }
}

active proctype C()
{
    atomic {
        unfinished--;                                /* task_done: 1 -> 0 */
        if :: looked && !jdone -> owed = 1 :: else fi;
#ifndef BUG_ABA
        zeros++
#endif
    };
    wake_waiters_all(W_JOIN, join_waiters)
}

active proctype P()
{
    unfinished++                                     /* put: a new task */
}
