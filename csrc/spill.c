/* spill.c — the blocks that hold a queue's large records outside its ring
 * (the file I/O they use, cproc_file_read/write and cproc_punch_hole, is
 * ring.c's).
 *
 * A record of SPILL_OVER bytes or more is not copied into the ring under the
 * queue's lock: its producer claims one of CPROC_SPILL_SLOTS blocks (under
 * the lock: a few loads and a store), writes the payload into the block with
 * pwrite and the lock released, then publishes a small reference record in
 * the ring. A consumer takes the reference under the lock, marks the block
 * as being read, and preads the payload into its objects after releasing the
 * lock. So a producer and a consumer copy large messages at the same time,
 * and neither holds the lock while it copies.
 *
 * Block i is the file range [SPILL_BASE + i * SPILL_SPAN, + SPILL_SPAN) of
 * the queue's memfd, far beyond any ring region; the file is sparse, so only
 * pages written cost memory. A freed block keeps its pages (the next message
 * written there finds them warm) up to SPILL_KEEP_MAX bytes, and all blocks
 * together up to SPILL_KEEP_TOTAL; the queue gives them back once it has
 * been quiet for a while (cproc_spill_trim, from the ring's shrink check).
 *
 * A slot's word is its state in the low 32 bits and the pid of the process
 * writing or reading it in the high 32: one atomic word, so a claim is one
 * compare-and-swap and freeing is one store (no lock needed). A process
 * killed while it writes or reads a block leaves the slot owned by a dead
 * pid; the next claim that finds no free slot takes such slots back. One
 * killed while it held the queue's lock may leave a block marked as read
 * whose record is still in the ring, or queued with no record: the next
 * holder of the lock puts both right (cproc_spill_repair).
 */
#include "cproc.h"

enum { SLOT_FREE = 0, SLOT_WRITING = 1, SLOT_QUEUED = 2, SLOT_READING = 3 };

#define SPILL_BASE (UINT64_C(1) << 40)
#define SPILL_KEEP_MAX (UINT64_C(8) << 20)     /* a block keeps its pages up to this size */
#define SPILL_KEEP_TOTAL (UINT64_C(64) << 20)  /* and all blocks together up to this */

static inline uint64_t slot_word(uint32_t state, pid_t pid) { return (uint64_t)(uint32_t)pid << 32 | state; }
static inline uint32_t word_state(uint64_t w) { return (uint32_t)w; }
static inline pid_t word_pid(uint64_t w) { return (pid_t)(uint32_t)(w >> 32); }

uint64_t cproc_spill_offset(int slot) { return SPILL_BASE + (uint64_t)slot * CPROC_SPILL_SPAN; }

/* ---- the slots ------------------------------------------------------------ */

static void release_pages(int fd, int slot, uint64_t from, uint64_t to)
{
    if (to > from)
        cproc_punch_hole(fd, cproc_spill_offset(slot) + from, to - from);
}

static void slot_free(cproc_spill_slot *slots, int i, int fd, uint64_t seen)
{
    release_pages(fd, i, 0, slots[i].warm);
    slots[i].warm = 0;
    atomic_compare_exchange_strong(&slots[i].word, &seen, slot_word(SLOT_FREE, 0));
}

/* A slot being written or read is held by a process, as a mutex is
 * (mutex.c): 1 when that process died holding it. */
static int holder_died(uint64_t w)
{
    uint32_t state = word_state(w);
    return (state == SLOT_WRITING || state == SLOT_READING) && cproc_holder_died((uint32_t)word_pid(w));
}

/* Take back slots whose writer or reader died (read, then compare-and-swap
 * the word seen, as the mutex's takeover). Lock held. */
static void reclaim_dead(cproc_spill_slot *slots, int fd)
{
    for (int i = 0; i < CPROC_SPILL_SLOTS; i++) {
        uint64_t w = atomic_load(&slots[i].word);
        if (holder_died(w))
            slot_free(slots, i, fd, w);
    }
}

void cproc_spill_repair(cproc_spill_slot *slots, int fd, const uint8_t *in_ring)
{
    for (int i = 0; i < CPROC_SPILL_SLOTS; i++) {
        uint64_t w = atomic_load(&slots[i].word);
        uint32_t state = word_state(w);
        if (in_ring[i]) {
            /* its reader died before the record left the ring: queued again */
            if (state != SLOT_QUEUED)
                atomic_store(&slots[i].word, slot_word(SLOT_QUEUED, 0));
        } else if (state == SLOT_QUEUED || holder_died(w))
            slot_free(slots, i, fd, w);   /* queued by a put that died before publishing it */
    }
}

int cproc_spill_claim(cproc_spill_slot *slots, int fd, uint64_t size)
{
    if (size > CPROC_SPILL_SPAN)
        return -1;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < CPROC_SPILL_SLOTS; i++) {
            uint64_t free_word = slot_word(SLOT_FREE, 0);
            if (atomic_compare_exchange_strong(&slots[i].word, &free_word, slot_word(SLOT_WRITING, cproc_pid))) {
                if (slots[i].warm < size)
                    slots[i].warm = size;   /* pages that may exist if we die writing */
                return i;
            }
        }
        if (pass == 0)
            reclaim_dead(slots, fd);
    }
    return -1;
}

void cproc_spill_queued(cproc_spill_slot *s)
{
    atomic_store(&s->word, slot_word(SLOT_QUEUED, 0));
}

int cproc_spill_take(cproc_spill_slot *s)
{
    uint64_t queued = slot_word(SLOT_QUEUED, 0);
    return atomic_compare_exchange_strong(&s->word, &queued, slot_word(SLOT_READING, cproc_pid)) ? 0 : -1;
}

void cproc_spill_free(cproc_spill_slot *slots, int slot, int fd, uint64_t size)
{
    cproc_spill_slot *s = &slots[slot];
    uint64_t others = 0;
    for (int i = 0; i < CPROC_SPILL_SLOTS; i++)
        others += i == slot ? 0 : slots[i].warm;
    uint64_t keep = size <= SPILL_KEEP_MAX && others + size <= SPILL_KEEP_TOTAL ? size : 0;
    if (s->warm > keep) {
        release_pages(fd, slot, keep, s->warm);
        s->warm = keep;
    }
    atomic_store(&s->word, slot_word(SLOT_FREE, 0));
}

void cproc_spill_trim(cproc_spill_slot *slots, int fd)
{
    for (int i = 0; i < CPROC_SPILL_SLOTS; i++) {
        uint64_t free_word = slot_word(SLOT_FREE, 0);
        /* own it while its pages go, so no claim writes into them meanwhile */
        if (slots[i].warm > 0 &&
            atomic_compare_exchange_strong(&slots[i].word, &free_word, slot_word(SLOT_WRITING, cproc_pid))) {
            release_pages(fd, i, 0, slots[i].warm);
            slots[i].warm = 0;
            atomic_store(&slots[i].word, free_word);
        }
    }
}

void cproc_spill_usage(const cproc_spill_slot *slots, int *in_use, uint64_t *warm)
{
    *in_use = 0;
    *warm = 0;
    for (int i = 0; i < CPROC_SPILL_SLOTS; i++) {
        *in_use += word_state(atomic_load(&slots[i].word)) != SLOT_FREE;
        *warm += slots[i].warm;
    }
}
