/* watch.pml — SimpleQueue._reader's pipe (csrc/channel.c watch_notify,
 * watch_drain, cproc_channel_watch_sync, try_put, try_get; qlock.c
 * queue_repair; src/cproc/queues.py _QueueReader).
 *
 * concurrent.futures' manager thread waits with
 * multiprocessing.connection.wait() on the result queue's reader (its
 * fileno() is a pipe), the executor's wake-up pipe and the workers'
 * sentinels, and calls reader.recv() -- SimpleQueue.get(), which sleeps
 * while the queue is empty -- only when the reader's pipe is readable. So
 * the pipe must be readable exactly when the queue holds a record: a pipe
 * left empty beside a record is a lost wake-up, and a byte left in the pipe
 * of an empty queue sends the thread into a get() that sleeps, no longer
 * watching the wake-up pipe: shutdown() then waits for it forever (what
 * CPython 3.13's test_context_manager_shutdown hit, 1 run in ~90, before
 * this protocol).
 *
 * The protocol, modelled by default: under the queue's lock, a put that
 * makes the count leave 0 writes one byte to the watcher's pipe, and a get
 * in the watcher's process that makes it 0 drains the pipe; registering the
 * pipe, and the repair after a holder's death (the next holder takes the
 * lock over), set the pipe from the count: a byte if it is not 0, else
 * drained (by the watcher). Each section under the lock is a sequence of
 * steps here, the lock a test-and-set word, and only the watcher takes
 * records (a get in another process cannot drain the pipe: it may leave a
 * byte, as a second reader of a multiprocessing pipe may leave the
 * watcher's recv() waiting).
 *
 * Processes: two producers put one record each (the watcher's registration
 * races with them); with -DDEATH the first may die after counting its
 * record, before its byte, and the second puts after it (so that someone
 * takes the lock after the death). W registers, then loops: a readable pipe ->
 * recv(); an empty pipe with the wake-up set (once both puts are done or
 * dead) -> leaves. Checked: W's recv() finds a record (assertion), W ends
 * having received every counted record (assertion: no lost wake-up), no
 * process blocks forever.
 * Mutants, which must fail: -DBUG_OLD, the protocol before: every put wrote
 * its byte after releasing the lock, and recv() drained the pipe and re-armed
 * it (a byte if the queue was not empty) after its get. -DBUG_LATE_BYTE with
 * -DDEATH: the byte written after the release, where a death between the two
 * leaves the record unannounced and no repair runs.
 */
#define NPUT 2
#define PIPE_CAP 3                 /* a full pipe: the write fails (EAGAIN), readable anyway */
#define W_PID 0

byte count, pipe, lock;            /* lock: 0 free, else the holder's _pid + 1 */
bit registered, wakeup;
byte received, puts_done;
bit dead[NPUT + 1];

inline pipe_write() { if :: pipe < PIPE_CAP -> pipe++ :: else fi }

/* cproc_qlock_acquire: take the lock, over from a dead holder (then repair:
 * cproc_channel_watch_sync) */
inline lock_acquire()
{
    atomic {
        if
        :: lock == 0 -> lock = _pid + 1; took_over = 0
        :: lock != 0 && dead[lock - 1] -> lock = _pid + 1; took_over = 1
        fi
    };
    if
    :: took_over && count > 0 && registered -> pipe_write()
    :: took_over && count == 0 && _pid == W_PID -> pipe = 0
    :: else
    fi
}
inline lock_release() { lock = 0 }

inline finished()
{
    atomic { puts_done++; if :: puts_done == NPUT -> wakeup = 1 :: else fi }
}

proctype P()
{
    byte old; bit notify, took_over;
#ifdef DEATH
    if :: _pid == 2 -> puts_done > 0 :: else fi;   /* after the first: its lock's next holder */
#endif
    lock_acquire();
    old = count;
    count++;
#ifdef DEATH
    if
    :: _pid == 1 -> atomic { dead[_pid] = 1; finished() }; goto end
    :: true
    fi;
#endif
#if !defined(BUG_OLD) && !defined(BUG_LATE_BYTE)
    if :: old == 0 && registered -> pipe_write() :: else fi;
    lock_release();
#elif defined(BUG_LATE_BYTE)
    notify = old == 0 && registered;
    lock_release();
#ifdef DEATH
    if
    :: _pid == 1 -> atomic { dead[_pid] = 1; finished() }; goto end
    :: true
    fi;
#endif
    if :: notify -> pipe_write() :: else fi;
#else
    notify = registered;
    lock_release();
    if :: notify -> pipe_write() :: else fi;
#endif
    finished();
end:
    skip
}

active proctype W()
{
    bit took_over;
    run P(); run P();
    /* _QueueReader.__init__: queue._watch(wfd, rfd) */
    lock_acquire();
    registered = 1;
    pipe = 0;
    if :: count > 0 -> pipe_write() :: else fi;
    lock_release();
    do
    :: pipe > 0 ->                  /* wait() returned the reader: recv() */
        assert(count > 0);          /* else get() sleeps, deaf to the wake-up pipe */
        count > 0;                  /* get() (sleeps until a record comes) */
        lock_acquire();
        count--;
        received++;
#ifndef BUG_OLD
        if :: count == 0 -> pipe = 0 :: else fi;
        lock_release();
#else
        lock_release();
        pipe = 0;                   /* _rearm: drain, then a byte if not empty */
        if :: count > 0 -> pipe_write() :: else fi;
#endif
    :: pipe == 0 && wakeup -> break
    od;
    assert(count == 0 && received == NPUT)   /* an empty pipe meant an empty queue */
}
