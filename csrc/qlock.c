/* qlock.c — a queue's lock, the repair after a holder's death, and the
 * crash points the tests arm (models/qlock.pml checks this protocol).
 *
 * The lock word (cproc_queue_header.lock) holds the holder's pid, 0 when
 * free; waiters sleep in cproc_wait and look every 100 ms whether the
 * holder died. One that did is replaced by compare-and-swap, and the
 * header is marked: until a repair has finished (queue_repair clears the
 * mark), every holder repairs first, so a repair cut short is done again.
 */
#include "cproc.h"

#include <limits.h>

const char *const cproc_die_point_names[] = {"nowhere", "put:before-tail", "put:before-count",
                                             "get:before-head", "get:before-count", "move:before-switch",
                                             "repair", NULL};
int cproc_die_at, cproc_die_signal;

typedef struct {
    cproc_queue_header *h;
    int took_over;                      /* from a holder that died */
} qlock_ctx;

static int qlock_try(void *ctx, uint32_t *seen)
{
    cproc_queue_header *h = ((qlock_ctx *)ctx)->h;
    uint32_t expected = 0;
    if (atomic_compare_exchange_strong(&h->lock, &expected, (uint32_t)cproc_pid))
        return 1;
    *seen = expected;
    return 0;
}

/* A holder that died inside put or get: take over (queue_repair then makes
 * the counters agree with the ring). */
static int qlock_holder_died(void *ctx)
{
    qlock_ctx *c = ctx;
    uint32_t holder = atomic_load(&c->h->lock);
    if (holder == 0 || holder == (uint32_t)cproc_pid || !cproc_pid_is_dead((pid_t)holder))
        return 0;
    if (!atomic_compare_exchange_strong(&c->h->lock, &holder, (uint32_t)cproc_pid))
        return 0;
    c->took_over = 1;
    return 1;
}

void cproc_qlock_release(cproc_channel *ch)
{
    cproc_queue_header *h = ch->hdr;
    atomic_store(&h->lock, 0);
    cproc_wake_waiters(&h->lock, &h->lock_waiters, 1);
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
    atomic_fetch_add(&h->put_seq, 1);
    atomic_fetch_add(&h->get_seq, 1);
    cproc_wake_waiters(&h->put_seq, &h->get_waiters, INT_MAX);
    cproc_wake_waiters(&h->get_seq, &h->put_waiters, INT_MAX);
    h->needs_repair = 0;
}

int cproc_qlock_acquire(cproc_channel *ch, int64_t deadline)
{
    cproc_queue_header *h = ch->hdr;
    qlock_ctx c = {h, 0};
    uint32_t seen;
    if (!qlock_try(&c, &seen)) {
        int r = cproc_wait(&h->lock, &h->lock_waiters, qlock_try, qlock_holder_died, &c, deadline);
        if (r == CPROC_WAIT_TIMEOUT)
            return 0;
        if (r != CPROC_WAIT_OK)
            return -1;
    }
    if (c.took_over)
        h->needs_repair = 1;
    if (cproc_ring_sync(&ch->ring) < 0) {
        cproc_qlock_release(ch);
        return -1;
    }
    if (h->needs_repair)
        queue_repair(ch);
    return 1;
}
