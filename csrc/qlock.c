/* qlock.c — a queue's lock, the repair after a holder's death, and the
 * crash points the tests arm (models/qlock.pml checks this protocol).
 *
 * The lock is the pid-word mutex (mutex.c): a waiter takes it over from a
 * holder that died. A takeover marks the header: until a repair has
 * finished (queue_repair clears the mark), every holder repairs first, so a
 * repair cut short is done again.
 */
#include "cproc.h"

#include <limits.h>

const char *const cproc_die_point_names[] = {"nowhere", "put:before-tail", "put:before-count",
                                             "get:before-head", "get:before-count", "move:before-switch",
                                             "repair", NULL};
int cproc_die_at, cproc_die_signal;

void cproc_qlock_release(cproc_channel *ch)
{
    (void)cproc_mutex_unlock(&ch->hdr->lock);
}

/* The lock was taken over from a process that died holding it, somewhere in
 * a put, a get or a move of the ring. A record is in the ring once the tail
 * has passed it and out once the head has (each one store), and a move is
 * one store too, so the ring itself is whole; what can lag behind it is the
 * record count, the states of the spill blocks and the sequence words that
 * sleepers wait on. Recount, put the blocks right, give back the pages of
 * any ring region a move left behind, and wake every sleeper to look again.
 * Lock held, ring synced; doing it twice does no harm. */
static void queue_repair(cproc_channel *ch)
{
    cproc_queue_header *h = ch->hdr;
    uint8_t in_ring[CPROC_SPILL_SLOTS] = {0};
    atomic_store(&h->count, cproc_records_scan(&ch->ring, in_ring));
    cproc_crash_point(CPROC_DIE_REPAIR);
    cproc_spill_repair(h->spill, ch->mem.fd, in_ring);
    cproc_ring_release_others(&ch->ring);
    cproc_channel_watch_sync(ch);     /* the watcher's pipe, from the new count */
    atomic_fetch_add(&h->put_seq, 1);
    atomic_fetch_add(&h->get_seq, 1);
    cproc_wake_waiters(&h->put_seq, &h->get_waiters, INT_MAX);
    cproc_wake_waiters(&h->get_seq, &h->put_waiters, INT_MAX);
    h->needs_repair = 0;
}

int cproc_qlock_acquire(cproc_channel *ch, int64_t deadline)
{
    cproc_queue_header *h = ch->hdr;
    /* Not CPROC_NOWAIT for a caller that does not wait (get_nowait): a
     * deadline already past still spins briefly and takes the lock over from
     * a dead holder, so a queue used only that way recovers too. */
    int r = cproc_mutex_lock(&h->lock, deadline == CPROC_NOWAIT ? 1 : deadline, NULL);
    if (r == CPROC_MUTEX_ERROR)
        return -1;
    if (r == CPROC_MUTEX_TIMEOUT)
        return 0;
    if (r == CPROC_MUTEX_TAKEN_OVER)
        h->needs_repair = 1;
    if (cproc_ring_sync(&ch->ring) < 0) {
        cproc_qlock_release(ch);
        return -1;
    }
    if (h->needs_repair)
        queue_repair(ch);
    return 1;
}
