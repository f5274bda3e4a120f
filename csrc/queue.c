/* queue.c — Queue, JoinableQueue and SimpleQueue: a ring of variable-size
 * records in shared memory, shared by any number of producers and consumers.
 *
 * One memfd per queue holds a header page (futex words, counters, where the
 * ring is) and the ring. Every process that has the queue keeps the memfd
 * open, so what was put stays there after its producer exits.
 *
 * put pickles in the caller (no feeder thread), takes the queue's lock, copies
 * the record to the tail and publishes it; get copies the record at the head
 * out under the lock and unpickles after releasing it. The lock word holds
 * the holder's pid. A record enters the ring when one store moves the tail
 * past it and leaves when one store moves the head, each after its copy is
 * complete; a process killed anywhere inside put or get therefore leaves the
 * records whole, and the process that takes the lock over from it recounts
 * them and puts the spill blocks right (queue_repair).
 *
 * The ring never refuses a record: when one does not fit in the free space
 * the ring grows in place (the file is sparse: only what is used costs
 * memory); an emptied ring much larger than its traffic of the last second
 * moves to a smaller region and gives the old one's pages back, and the pages
 * of a huge record are released as soon as it is taken. The header describes
 * the ring twice: a change of place or size fills in the spare description
 * and switches to it with one store of the generation number, by which every
 * process also notices that it must map the ring again.
 *
 * Sleepers wait on sequence words (cproc_wait, futex.c); a put or get wakes
 * only when someone sleeps. A process may also watch a queue with select()
 * (SimpleQueue._reader, for concurrent.futures): it registers a pipe in the
 * header, and every put then writes a byte to that pipe. The GIL is released while waiting and while
 * copying records of NOGIL_COPY bytes or more.
 *
 * Records: a record_header, then for pickles with out-of-band buffers (pickle
 * protocol 5: NumPy arrays, memoryviews) a table of buffer lengths, the pickle
 * stream and the buffers. Exact bytes and bytearray objects travel raw, small
 * plain data (plain.c) in its own compact encoding.
 *
 * A record of SPILL_OVER bytes or more goes to a block of its own (spill.c)
 * when one is free: the ring then holds a K_SPILLED record (a spill_ref and
 * the buffer table) and the block the stream and the buffers. Its producer
 * writes the block before taking the lock, its consumer reads it after
 * releasing the lock, so large messages are copied in parallel, not in turn.
 */
#include "cproc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <linux/falloc.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define QUEUE_MAGIC 0x43505155u        /* "CPQU" */
#define HEADER_BYTES 4096u
#define INITIAL_CAPACITY (1u << 20)
#define NOGIL_COPY (256u << 10)
#define FILE_WRITE_OVER (64u << 10)
#define SPILL_OVER (256u << 10)         /* a payload this large goes to a block of its own */
#define SPILL_MAX_BUFFERS 64            /* (one pwrite/pread each: more stay in the ring) */
#define RELEASE_OVER (8u << 20)         /* a record this large frees its pages once taken */
#define SHRINK_WINDOW_NS (1000000000LL)
#define MAXSIZE_LIMIT INT_MAX           /* multiprocessing's bound for maxsize */
#define PLAIN_MAX_BYTES 4096           /* larger plain data goes through pickle */

enum { K_PICKLE = 1, K_BYTES = 2, K_BYTEARRAY = 3, K_PLAIN = 4, K_SPILLED = 5 };
enum { BUF_READONLY = 1 };
enum { Q_QUEUE = 0, Q_JOINABLE = 1, Q_SIMPLE = 2 };

typedef struct {
    uint64_t size;                      /* payload bytes after this header */
    uint32_t kind;                      /* K_* */
    uint32_t nbuf;                      /* out-of-band buffers (K_PICKLE) */
    uint64_t tag;                       /* the Pool's task or result id; 0 for queues */
} record_header;

typedef struct {
    uint64_t len;
    uint64_t flags;                     /* BUF_READONLY */
} buffer_entry;

/* A K_SPILLED record's payload: this, then the buffer table (nbuf entries);
 * the block holds the stream (or raw bytes) and then the buffers. */
typedef struct {
    uint32_t slot;
    uint32_t kind;                      /* the message's own K_* */
    uint64_t bytes;                     /* in the block */
} spill_ref;

/* Where the ring is and what it holds. The header keeps two: the current one
 * is ring[ring_gen & 1]; moving the ring fills in the other and then bumps
 * ring_gen, one store, so a process killed while it moves the ring leaves the
 * old ring whole. Guarded by the queue's lock. */
typedef struct {
    uint64_t off;                       /* file offset of the ring, page aligned */
    uint64_t capacity;                  /* bytes, a multiple of the page size */
    uint64_t head, tail;                /* byte positions; tail - head <= capacity */
    uint64_t touched;                   /* ring bytes [0, touched) have been written */
} ring_desc;

typedef struct {
    uint32_t magic;
    int32_t maxsize;                    /* 0: unbounded */
    _Atomic uint32_t lock;              /* pid of the holder, 0 when free */
    _Atomic uint32_t lock_waiters;
    _Atomic uint32_t put_seq;           /* bumped by every put; getters sleep on it */
    _Atomic uint32_t get_waiters;
    _Atomic uint32_t get_seq;           /* bumped by every get; putters of a full queue sleep on it */
    _Atomic uint32_t put_waiters;
    _Atomic uint32_t unfinished;        /* JoinableQueue: put and not yet task_done() */
    _Atomic uint32_t zeros;             /* bumped each time unfinished reaches 0; join() sleeps on it */
    _Atomic uint32_t join_waiters;
    _Atomic uint64_t count;             /* records in the ring */
    _Atomic uint32_t ring_gen;          /* bumped when the ring moves; ring[ring_gen & 1] is current */
    uint32_t kind;                      /* Q_*: the class that created it */
    /* guarded by lock */
    ring_desc ring[2];
    uint64_t peak;                      /* most bytes held since window_start */
    int64_t window_start;               /* CLOCK_MONOTONIC ns */
    uint32_t spilled_recently;          /* a block was claimed since window_start */
    uint32_t needs_repair;              /* a holder died: queue_repair before anything else */
    /* the watcher (SimpleQueue._reader): a pipe every put writes a byte to */
    uint32_t watch_pid;                 /* the process holding its write end; 0: none */
    int32_t watch_fd;                   /* the write end's number there */
    uint64_t watch_ino;                 /* the pipe's inode */
    uint32_t watch_gen;                 /* bumped at every change of watcher */
    cproc_spill_slot spill[CPROC_SPILL_SLOTS];
} queue_header;

_Static_assert(sizeof(queue_header) <= HEADER_BYTES, "the queue header must fit its page");

typedef struct {
    PyObject_HEAD
    int fd;                             /* our own descriptor of the memfd */
    queue_header *hdr;                  /* NULL until initialised */
    char *ring;                         /* this process's mapping of the ring */
    uint64_t ring_cap;
    uint32_t ring_gen;                  /* generation of that mapping, 0: none */
    dev_t dev;
    ino_t ino;
    pid_t origin_pid;                   /* the process whose fd we opened */
    int origin_fd;
    int closed;
    pid_t put_pid;                      /* the last process that put through this object */
    int kind;                           /* Q_* */
    PyObject *pending;                  /* list of popped records a failed get_many left */
    PyObject *reader;                   /* SimpleQueue._reader, made on first use */
    int watch_wfd;                      /* our registered watch pipe's write end, -1: none */
    int notify_fd;                      /* our descriptor of the watcher's pipe, -1: none */
    uint32_t notify_gen;                /* the watch_gen notify_fd was opened for */
    PyObject *weakreflist;
} QueueObject;

/* A popped record, not yet turned into the object it holds. Taken under the
 * queue lock, so only objects that cannot start the garbage collector (which
 * could run a __del__ that uses this queue): bytes and bytearray. */
typedef struct {
    uint32_t kind;
    uint32_t nbuf;
    uint64_t tag;
    PyObject *data;                     /* bytes / bytearray / pickle stream */
    PyObject **buffers;                 /* PyMem array of nbuf out-of-band buffers */
    int spill;                          /* 1 + the block to read data and buffers from; 0: read */
    uint64_t spill_bytes;
} popped;

/* An object ready to be written: its pickle (or itself) and buffer views. */
typedef struct {
    uint32_t kind;
    uint64_t tag;
    PyObject *obj;
    Py_buffer data;
    PyObject *buffer_list;
    Py_ssize_t nbuf;
    Py_buffer *bufs;
    uint64_t size;                      /* payload bytes */
    int spill;                          /* 1 + the block holding the payload; 0: none */
    int spill_queued;                   /* its record is published: the block is the queue's */
} message;

static PyObject *Empty, *Full;          /* queue.Empty, queue.Full */
static PyObject *pickle_loads, *str_buffers;
static PyObject *py_dumps;              /* cproc.queues._dumps, imported on first use */
static size_t page_size;

/* ---- crash points, for the tests ----------------------------------------
 * The tests kill a process at each instant where a death leaves work for
 * queue_repair, or stop it there holding the lock: Queue._die_at(name,
 * signum=SIGKILL) arms one in this process. */

enum { DIE_NOWHERE, DIE_PUT_BEFORE_TAIL, DIE_PUT_BEFORE_COUNT, DIE_GET_BEFORE_HEAD, DIE_GET_BEFORE_COUNT,
       DIE_MOVE_BEFORE_SWITCH, DIE_REPAIR };
static const char *const die_point_names[] = {"nowhere", "put:before-tail", "put:before-count",
                                              "get:before-head", "get:before-count", "move:before-switch",
                                              "repair", NULL};
static int die_at, die_signal;

static inline void crash_point(int point)
{
    if (die_at == point)
        (void)raise(die_signal);
}

static inline uint64_t align8(uint64_t n) { return (n + 7) & ~(uint64_t)7; }
static inline uint64_t page_round(uint64_t n) { return (n + page_size - 1) / page_size * page_size; }

/* ---- copying ------------------------------------------------------------ */

static void copy_bytes(void *dst, const void *src, size_t n)
{
    if (n >= NOGIL_COPY) {
        Py_BEGIN_ALLOW_THREADS
        memcpy(dst, src, n);
        Py_END_ALLOW_THREADS
    } else
        memcpy(dst, src, n);
}

/* The ring as it is now, and the spare descriptor a move fills in. Lock held. */
static inline ring_desc *ring_now(queue_header *h)
{
    return &h->ring[atomic_load_explicit(&h->ring_gen, memory_order_relaxed) & 1];
}

static inline ring_desc *ring_spare(queue_header *h)
{
    return &h->ring[(atomic_load_explicit(&h->ring_gen, memory_order_relaxed) + 1) & 1];
}

/* Copy n bytes to (writing) or from the ring at byte position pos. Ring
 * pages nobody has touched yet are written with pwrite on the memfd
 * (cproc_file_write) rather than through the mapping: the kernel then fills
 * the fresh pages without zeroing them first and without a page fault each.
 * Pages already written (below touched) are copied to directly, which is
 * much faster. */
static int ring_copy(QueueObject *q, int writing, uint64_t pos, char *buf, size_t n)
{
    ring_desc *r = ring_now(q->hdr);
    uint64_t cap = q->ring_cap;
    while (n > 0) {
        uint64_t i = pos % cap;
        size_t piece = n < cap - i ? n : (size_t)(cap - i);
        if (!writing)
            copy_bytes(buf, q->ring + i, piece);
        else {
            size_t warm = r->touched <= i ? 0 : r->touched - i < piece ? (size_t)(r->touched - i) : piece;
            copy_bytes(q->ring + i, buf, warm);
            if (piece - warm >= FILE_WRITE_OVER) {
                if (cproc_file_write(q->fd, buf + warm, piece - warm, r->off + i + warm) < 0)
                    return -1;
            } else
                memcpy(q->ring + i + warm, buf + warm, piece - warm);
            if (i + piece > r->touched)
                r->touched = i + piece;
        }
        pos += piece;
        buf += piece;
        n -= piece;
    }
    return 0;
}

static inline int ring_put(QueueObject *q, uint64_t pos, const void *src, size_t n)
{
    return ring_copy(q, 1, pos, (char *)src, n);
}

static inline int ring_take(QueueObject *q, uint64_t pos, void *dst, size_t n)
{
    return ring_copy(q, 0, pos, dst, n);
}

/* Unmap a ring mapping; a large one with the GIL released (tearing down its
 * page tables takes a while). */
static void ring_unmap(char *ring, uint64_t size)
{
    if (ring == NULL)
        return;
    if (size >= NOGIL_COPY) {
        Py_BEGIN_ALLOW_THREADS
        (void)munmap(ring, size);
        Py_END_ALLOW_THREADS
    } else
        (void)munmap(ring, size);
}

/* ---- the lock ----------------------------------------------------------- */

typedef struct {
    queue_header *h;
    int took_over;                      /* from a holder that died */
} qlock_ctx;

static int qlock_try(void *ctx, uint32_t *seen)
{
    queue_header *h = ((qlock_ctx *)ctx)->h;
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

static void qlock_release(queue_header *h)
{
    atomic_store(&h->lock, 0);
    cproc_wake_waiters(&h->lock, &h->lock_waiters, 1);
}

/* Map the ring where the header says it is now. Lock held. */
static int ring_sync(QueueObject *q)
{
    queue_header *h = q->hdr;
    uint32_t gen = atomic_load(&h->ring_gen);
    if (q->ring_gen == gen)
        return 0;
    ring_desc *r = ring_now(h);
    void *m = mmap(NULL, r->capacity, PROT_READ | PROT_WRITE, MAP_SHARED, q->fd, (off_t)r->off);
    if (m == MAP_FAILED) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    ring_unmap(q->ring, q->ring_cap);
    q->ring = m;
    q->ring_cap = r->capacity;
    q->ring_gen = gen;
    return 0;
}

static void queue_repair(QueueObject *q);

/* Take the lock, waiting until `deadline` as every primitive does, and map
 * the current ring. A lock taken over from a process that died holding it
 * (in the middle of a put or a get) gets the queue repaired first; the mark
 * stays in the header until a repair has finished, so a repair cut short is
 * done again by the next holder. 1: taken; 0: timed out; -1: error. */
static int qlock_acquire(QueueObject *q, int64_t deadline)
{
    queue_header *h = q->hdr;
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
    if (ring_sync(q) < 0) {
        qlock_release(h);
        return -1;
    }
    if (h->needs_repair)
        queue_repair(q);
    return 1;
}

/* ---- moving the ring ---------------------------------------------------- */

/* Make the memfd at least `end` bytes long (the ring is mapped from it),
 * never shorter: spill blocks may lie beyond. Ring regions stay below the
 * first block. */
static int file_extend(int fd, uint64_t end)
{
    struct stat st;
    if (end > cproc_spill_offset(0)) {
        PyErr_NoMemory();
        return -1;
    }
    if (fstat(fd, &st) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if ((uint64_t)st.st_size >= end)
        return 0;
    if (ftruncate(fd, (off_t)end) != 0) {
        PyErr_SetFromErrno(errno == EFBIG || errno == ENOSPC ? PyExc_MemoryError : PyExc_OSError);
        return -1;
    }
    return 0;
}

/* Map the spare descriptor, just filled in, and make it the current ring:
 * one store publishes the move. Lock held. */
static int ring_switch(QueueObject *q)
{
    queue_header *h = q->hdr;
    ring_desc *next = ring_spare(h);
    char *m = mmap(NULL, next->capacity, PROT_READ | PROT_WRITE, MAP_SHARED, q->fd, (off_t)next->off);
    if (m == MAP_FAILED) {
        PyErr_SetFromErrno(errno == ENOMEM ? PyExc_MemoryError : PyExc_OSError);
        return -1;
    }
    crash_point(DIE_MOVE_BEFORE_SWITCH);
    atomic_fetch_add(&h->ring_gen, 1);
    /* Other processes may still have the old region mapped: they map the new
     * one (ring_sync) before they touch the ring again. */
    ring_unmap(q->ring, q->ring_cap);
    q->ring = m;
    q->ring_cap = next->capacity;
    q->ring_gen = atomic_load(&h->ring_gen);
    return 0;
}

/* Move the records to a region of `new_cap` bytes that does not overlap the
 * current one: at the start of the file when it fits below the ring, else
 * just after it, so ring regions stay within about twice the largest ring.
 * The old region's pages are given back. Lock held, ring synced. */
static int ring_relocate(QueueObject *q, uint64_t new_cap)
{
    ring_desc *cur = ring_now(q->hdr), *next = ring_spare(q->hdr);
    uint64_t used = cur->tail - cur->head, old_off = cur->off, old_cap = cur->capacity;
    uint64_t new_off = HEADER_BYTES + new_cap <= old_off ? HEADER_BYTES : old_off + old_cap;
    if (file_extend(q->fd, new_off + new_cap) < 0)
        return -1;
    /* the records, in order, to the start of the new region */
    for (uint64_t done = 0; done < used;) {
        uint64_t i = (cur->head + done) % old_cap;
        uint64_t piece = used - done < old_cap - i ? used - done : old_cap - i;
        if (cproc_file_write(q->fd, q->ring + i, (size_t)piece, new_off + done) < 0)
            return -1;
        done += piece;
    }
    *next = (ring_desc){.off = new_off, .capacity = new_cap, .head = 0, .tail = used, .touched = used};
    if (ring_switch(q) < 0)
        return -1;
    cproc_punch_hole(q->fd, old_off, old_cap);
    return 0;
}

/* The ring has just been emptied. If, for the last SHRINK_WINDOW_NS, it never
 * held more than a quarter of its size, move it to a region twice its peak
 * (at least INITIAL_CAPACITY), giving the rest of its pages back; a ring sized
 * for its traffic keeps its warm pages. Failing to shrink is harmless. Spill
 * blocks give back the pages they keep when none was used in the window. */
static void ring_maybe_shrink(QueueObject *q)
{
    queue_header *h = q->hdr;
    int64_t now = cproc_monotonic_ns();
    if (now - h->window_start < SHRINK_WINDOW_NS)
        return;
    uint64_t peak = h->peak;
    h->peak = 0;
    h->window_start = now;
    if (!h->spilled_recently)
        cproc_spill_trim(h->spill, q->fd);
    h->spilled_recently = 0;
    uint64_t capacity = ring_now(h)->capacity;
    if (capacity <= INITIAL_CAPACITY || capacity / 4 < peak)
        return;
    uint64_t cap = page_round(2 * peak);
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    if (ring_relocate(q, cap < INITIAL_CAPACITY ? INITIAL_CAPACITY : cap) < 0)
        PyErr_Clear();
    PyErr_Restore(et, ev, tb);
}

/* A huge record was taken from [pos, pos + size): give the whole pages it
 * covered back to the kernel now rather than keep them for the ring's next
 * turn. Lock held. */
static void ring_release_pages(QueueObject *q, uint64_t pos, uint64_t size)
{
    ring_desc *r = ring_now(q->hdr);
    uint64_t cap = r->capacity;
    while (size > 0) {
        uint64_t i = pos % cap;
        uint64_t n = size < cap - i ? size : cap - i;
        uint64_t start = page_round(i), end = (i + n) / page_size * page_size;
        if (end > start)
            cproc_punch_hole(q->fd, r->off + start, end - start);
        pos += n;
        size -= n;
    }
}

/* Extend the ring to new_cap bytes where it is (nothing else lives after
 * it below the spill blocks): its pages stay; only records that wrapped
 * around the old end move, to just after it. Lock held, ring synced. */
static int ring_grow_in_place(QueueObject *q, uint64_t new_cap)
{
    ring_desc *cur = ring_now(q->hdr), *next = ring_spare(q->hdr);
    uint64_t old_cap = cur->capacity, used = cur->tail - cur->head;
    uint64_t first = cur->head % old_cap;
    uint64_t wrapped = first + used > old_cap ? first + used - old_cap : 0;
    if (cur->off > (uint64_t)INT64_MAX - new_cap) {
        PyErr_NoMemory();
        return -1;
    }
    if (file_extend(q->fd, cur->off + new_cap) < 0)
        return -1;
    if (wrapped > 0 && cproc_file_write(q->fd, q->ring, (size_t)wrapped, cur->off + old_cap) < 0)
        return -1;
    *next = (ring_desc){.off = cur->off, .capacity = new_cap, .head = first, .tail = first + used,
                        .touched = wrapped > 0 ? old_cap + wrapped : cur->touched};
    return ring_switch(q);
}

/* Make room for `need` more bytes. Lock held. */
static int ring_reserve(QueueObject *q, uint64_t need)
{
    ring_desc *r = ring_now(q->hdr);
    uint64_t used = r->tail - r->head;
    if (need <= r->capacity - used)
        return 0;
    if (need > (uint64_t)INT64_MAX / 4) {
        PyErr_NoMemory();
        return -1;
    }
    uint64_t cap = r->capacity * 2;
    if (cap < used + need)
        cap = page_round(used + need);
    return ring_grow_in_place(q, cap);
}

/* ---- repairing after a death ------------------------------------------- */

/* The lock was taken over from a process that died holding it, somewhere in
 * a put, a get or a move of the ring. A record is in the ring once the tail
 * has passed it and out once the head has (each one store), and a move is
 * one store too, so the ring itself is whole; what can lag behind it is the
 * record count, the states of the spill blocks and the sequence words that
 * sleepers wait on. Recount, put the blocks right, give back the pages of
 * any ring region a move left behind, and wake every sleeper to look again.
 * Lock held, ring synced; doing it twice does no harm. */
static void queue_repair(QueueObject *q)
{
    queue_header *h = q->hdr;
    ring_desc *r = ring_now(h);
    uint8_t in_ring[CPROC_SPILL_SLOTS] = {0};
    uint64_t n = 0;
    for (uint64_t pos = r->head; pos < r->tail; n++) {
        record_header rh;
        (void)ring_take(q, pos, &rh, sizeof rh);
        uint64_t size = sizeof rh + align8(rh.size);
        if (rh.kind < K_PICKLE || rh.kind > K_SPILLED || rh.size > r->tail - pos || size > r->tail - pos) {
            r->tail = pos;              /* not a record: cannot happen, but never loop on it */
            break;
        }
        if (rh.kind == K_SPILLED && rh.size >= sizeof(spill_ref)) {
            spill_ref ref;
            (void)ring_take(q, pos + sizeof rh, &ref, sizeof ref);
            if (ref.slot < CPROC_SPILL_SLOTS)
                in_ring[ref.slot] = 1;
        }
        pos += size;
    }
    atomic_store(&h->count, n);
    crash_point(DIE_REPAIR);
    cproc_spill_repair(h->spill, q->fd, in_ring);
    cproc_punch_hole(q->fd, HEADER_BYTES, r->off - HEADER_BYTES);
    cproc_punch_hole(q->fd, r->off + r->capacity, cproc_spill_offset(0) - (r->off + r->capacity));
    atomic_fetch_add(&h->put_seq, 1);
    atomic_fetch_add(&h->get_seq, 1);
    cproc_wake_waiters(&h->put_seq, &h->get_waiters, INT_MAX);
    cproc_wake_waiters(&h->get_seq, &h->put_waiters, INT_MAX);
    h->needs_repair = 0;
}

/* ---- messages: objects to records --------------------------------------- */

static void message_clear(message *m)
{
    if (m->obj != NULL)
        PyBuffer_Release(&m->data);
    for (Py_ssize_t i = 0; i < m->nbuf; i++)
        PyBuffer_Release(&m->bufs[i]);
    PyMem_Free(m->bufs);
    Py_CLEAR(m->obj);
    Py_CLEAR(m->buffer_list);
    m->bufs = NULL;
    m->nbuf = 0;
}

/* Pickle `obj` (or take it as it is: bytes, bytearray) with `dumps`, a
 * function returning (pickle stream, out-of-band buffers); NULL: the queues'
 * own, cproc.queues._dumps. */
static int message_init(message *m, PyObject *obj, PyObject *dumps)
{
    memset(m, 0, sizeof *m);
    PyObject *data;
    char small[PLAIN_MAX_BYTES];
    Py_ssize_t n;
    if (PyBytes_CheckExact(obj) || PyByteArray_CheckExact(obj)) {
        m->kind = PyBytes_CheckExact(obj) ? K_BYTES : K_BYTEARRAY;
        data = Py_NewRef(obj);
    } else if ((n = cproc_plain_encode(obj, small, sizeof small)) != 0) {
        if (n < 0)
            return -1;
        m->kind = K_PLAIN;
        data = PyBytes_FromStringAndSize(small, n);
        if (data == NULL)
            return -1;
    } else {
        m->kind = K_PICKLE;
        if (dumps == NULL && py_dumps == NULL) {
            PyObject *mod = PyImport_ImportModule("cproc.queues");
            if (mod == NULL)
                return -1;
            py_dumps = PyObject_GetAttrString(mod, "_dumps");
            Py_DECREF(mod);
            if (py_dumps == NULL)
                return -1;
        }
        PyObject *pair = PyObject_CallOneArg(dumps ? dumps : py_dumps, obj);
        if (pair == NULL)
            return -1;
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 ||
            (PyTuple_GET_ITEM(pair, 1) != Py_None && !PyList_Check(PyTuple_GET_ITEM(pair, 1)))) {
            Py_DECREF(pair);
            PyErr_SetString(PyExc_SystemError, "cproc.queues._dumps must return (data, buffers)");
            return -1;
        }
        data = Py_NewRef(PyTuple_GET_ITEM(pair, 0));
        PyObject *buffers = PyTuple_GET_ITEM(pair, 1);
        if (buffers != Py_None && PyList_GET_SIZE(buffers) > 0)
            m->buffer_list = Py_NewRef(buffers);
        Py_DECREF(pair);
    }
    if (PyObject_GetBuffer(data, &m->data, PyBUF_SIMPLE) < 0) {
        Py_DECREF(data);
        return -1;
    }
    m->obj = data;
    m->size = (uint64_t)m->data.len;
    if (m->buffer_list != NULL) {
        Py_ssize_t n = PyList_GET_SIZE(m->buffer_list);
        m->bufs = PyMem_Calloc((size_t)n, sizeof(Py_buffer));
        if (m->bufs == NULL) {
            PyErr_NoMemory();
            message_clear(m);
            return -1;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            if (PyObject_GetBuffer(PyList_GET_ITEM(m->buffer_list, i), &m->bufs[i], PyBUF_ANY_CONTIGUOUS) < 0) {
                message_clear(m);
                return -1;
            }
            m->nbuf = i + 1;
            m->size += sizeof(buffer_entry) + (uint64_t)m->bufs[i].len;
        }
        if (n > UINT32_MAX) {
            PyErr_SetString(PyExc_ValueError, "too many out-of-band buffers");
            message_clear(m);
            return -1;
        }
    }
    return 0;
}

/* The size of its record in the ring: the whole payload, or for a message
 * in a spill block its spill_ref and buffer table. */
static inline uint64_t message_ring_payload(const message *m)
{
    return m->spill ? sizeof(spill_ref) + (uint64_t)m->nbuf * sizeof(buffer_entry) : m->size;
}

static inline uint64_t message_record_bytes(const message *m)
{
    return sizeof(record_header) + align8(message_ring_payload(m));
}

/* Write the record at *at (space reserved) and advance *at past it. Lock
 * held; the caller publishes the new tail. */
static int message_write(QueueObject *q, const message *m, uint64_t *at)
{
    uint64_t pos = *at;
    record_header rh = {message_ring_payload(m), m->spill ? K_SPILLED : m->kind, (uint32_t)m->nbuf, m->tag};
    if (ring_put(q, pos, &rh, sizeof rh) < 0)
        return -1;
    pos += sizeof rh;
    if (m->spill) {
        spill_ref ref = {(uint32_t)(m->spill - 1), m->kind, m->size - (uint64_t)m->nbuf * sizeof(buffer_entry)};
        if (ring_put(q, pos, &ref, sizeof ref) < 0)
            return -1;
        pos += sizeof ref;
    }
    for (Py_ssize_t i = 0; i < m->nbuf; i++) {
        buffer_entry e = {(uint64_t)m->bufs[i].len, m->bufs[i].readonly ? BUF_READONLY : 0};
        if (ring_put(q, pos, &e, sizeof e) < 0)
            return -1;
        pos += sizeof e;
    }
    if (m->spill == 0) {
        if (ring_put(q, pos, m->data.buf, (size_t)m->data.len) < 0)
            return -1;
        pos += (uint64_t)m->data.len;
        for (Py_ssize_t i = 0; i < m->nbuf; i++) {
            if (ring_put(q, pos, m->bufs[i].buf, (size_t)m->bufs[i].len) < 0)
                return -1;
            pos += (uint64_t)m->bufs[i].len;
        }
    }
    *at += message_record_bytes(m);
    return 0;
}

/* ---- messages in spill blocks (spill.c) --------------------------------- */

/* Move a large message's stream and buffers to a free block, written with
 * the queue's lock released; a message that stays in the ring (none free,
 * too small or too large, or made of many small buffers) is left as it is. */
static int message_spill(QueueObject *q, message *m)
{
    uint64_t bytes = m->size - (uint64_t)m->nbuf * sizeof(buffer_entry);
    if (bytes < SPILL_OVER || bytes > CPROC_SPILL_SPAN || m->nbuf > SPILL_MAX_BUFFERS)
        return 0;
    if (qlock_acquire(q, CPROC_FOREVER) < 0)
        return -1;
    int slot = cproc_spill_claim(q->hdr->spill, q->fd, bytes);
    q->hdr->spilled_recently = 1;
    qlock_release(q->hdr);
    if (slot < 0)
        return 0;
    uint64_t off = cproc_spill_offset(slot);
    int r = cproc_file_write(q->fd, m->data.buf, (size_t)m->data.len, off);
    off += (uint64_t)m->data.len;
    for (Py_ssize_t i = 0; r == 0 && i < m->nbuf; i++) {
        r = cproc_file_write(q->fd, m->bufs[i].buf, (size_t)m->bufs[i].len, off);
        off += (uint64_t)m->bufs[i].len;
    }
    if (r < 0) {
        cproc_spill_free(q->hdr->spill, slot, q->fd, 0);
        if (!PyErr_ExceptionMatches(PyExc_OSError))
            return -1;
        /* e.g. EFBIG under a file size limit (ulimit -f) below the blocks'
         * offsets: the ring, low in the file, takes the message instead */
        PyErr_Clear();
        return 0;
    }
    m->spill = slot + 1;
    return 0;
}

/* A put that did not publish its message frees the message's block. */
static void message_unspill(QueueObject *q, message *m)
{
    if (m->spill && !m->spill_queued)
        cproc_spill_free(q->hdr->spill, m->spill - 1, q->fd, 0);
    m->spill = 0;
}

/* ---- records back to objects -------------------------------------------- */

static void popped_unspill(QueueObject *q, popped *p)
{
    if (p->spill)
        cproc_spill_free(q->hdr->spill, p->spill - 1, q->fd, p->spill_bytes);
    p->spill = 0;
}

static void popped_clear(popped *p)
{
    Py_CLEAR(p->data);
    for (uint32_t i = 0; p->buffers != NULL && i < p->nbuf; i++)
        Py_XDECREF(p->buffers[i]);
    PyMem_Free(p->buffers);
    p->buffers = NULL;
    p->nbuf = 0;
}

static PyObject *new_buffer_object(uint32_t kind_or_flags_readonly, uint64_t len)
{
    if (len > (uint64_t)PY_SSIZE_T_MAX)
        return PyErr_NoMemory();
    return kind_or_flags_readonly ? PyBytes_FromStringAndSize(NULL, (Py_ssize_t)len)
                                  : PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)len);
}

static char *buffer_object_data(PyObject *o)
{
    return PyBytes_Check(o) ? PyBytes_AS_STRING(o) : PyByteArray_AS_STRING(o);
}

static Py_ssize_t buffer_object_size(PyObject *o)
{
    return PyBytes_Check(o) ? PyBytes_GET_SIZE(o) : PyByteArray_GET_SIZE(o);
}

static int corrupted(void)
{
    PyErr_SetString(PyExc_RuntimeError, "cproc queue: corrupted record in shared memory");
    return 0;
}

/* Copy the record at `pos` (at or after the head) into Python objects. Lock
 * held. Returns the record's size in the ring, 0 on error (MemoryError; the
 * record stays). A record whose data is in a spill block gets its objects
 * allocated and the block marked as ours (p->spill); popped_fill copies the
 * data after the lock is released. */
static uint64_t record_read(QueueObject *q, uint64_t pos, popped *p)
{
    queue_header *h = q->hdr;
    record_header rh;
    if (ring_take(q, pos, &rh, sizeof rh) < 0)
        return 0;
    uint64_t total = sizeof rh + align8(rh.size);
    uint64_t table = (uint64_t)rh.nbuf * sizeof(buffer_entry);
    if (total > ring_now(h)->tail - pos || rh.kind < K_PICKLE || rh.kind > K_SPILLED || table > rh.size)
        return corrupted();
    pos += sizeof rh;
    uint32_t kind = rh.kind;
    uint64_t data_len = rh.size - table;        /* the stream and the buffers */
    spill_ref ref = {0};
    if (rh.kind == K_SPILLED) {
        if (rh.size != sizeof ref + table)
            return corrupted();
        if (ring_take(q, pos, &ref, sizeof ref) < 0)
            return 0;
        pos += sizeof ref;
        if (ref.slot >= CPROC_SPILL_SLOTS || ref.kind < K_PICKLE || ref.kind > K_BYTEARRAY ||
            ref.bytes > CPROC_SPILL_SPAN)
            return corrupted();
        kind = ref.kind;
        data_len = ref.bytes;
    }
    if (kind != K_PICKLE && rh.nbuf != 0)
        return corrupted();
    p->kind = kind;
    p->tag = rh.tag;
    p->buffers = NULL;
    p->nbuf = 0;
    p->spill = 0;
    if (rh.nbuf > 0) {
        buffer_entry *entries = PyMem_Malloc(table);
        if (entries == NULL) {
            PyErr_NoMemory();
            return 0;
        }
        if (ring_take(q, pos, entries, table) < 0) {
            PyMem_Free(entries);
            return 0;
        }
        pos += table;
        p->buffers = PyMem_Calloc(rh.nbuf, sizeof(PyObject *));
        int ok = p->buffers != NULL;
        if (!ok)
            PyErr_NoMemory();
        for (uint32_t i = 0; ok && i < rh.nbuf; i++) {
            if (entries[i].len > data_len) {
                ok = corrupted();
                break;
            }
            data_len -= entries[i].len;
            p->buffers[i] = new_buffer_object(entries[i].flags & BUF_READONLY, entries[i].len);
            ok = p->buffers[i] != NULL;
            p->nbuf = i + 1;
        }
        PyMem_Free(entries);
        if (!ok) {
            popped_clear(p);
            return 0;
        }
    }
    p->data = new_buffer_object(kind != K_BYTEARRAY, data_len);
    if (p->data == NULL) {
        popped_clear(p);
        return 0;
    }
    if (rh.kind == K_SPILLED) {
        if (cproc_spill_take(&h->spill[ref.slot]) < 0) {
            popped_clear(p);
            return corrupted();
        }
        p->spill = (int)ref.slot + 1;
        p->spill_bytes = ref.bytes;
        return total;
    }
    if (ring_take(q, pos, buffer_object_data(p->data), (size_t)data_len) < 0) {
        popped_clear(p);
        return 0;
    }
    pos += data_len;
    for (uint32_t i = 0; i < p->nbuf; i++) {
        PyObject *b = p->buffers[i];
        Py_ssize_t len = buffer_object_size(b);
        if (ring_take(q, pos, buffer_object_data(b), (size_t)len) < 0) {
            popped_clear(p);
            return 0;
        }
        pos += (uint64_t)len;
    }
    return total;
}

/* Copy a popped record's data and buffers out of its spill block (lock not
 * held), then free the block. */
static int popped_fill(QueueObject *q, popped *p)
{
    if (p->spill == 0)
        return 0;
    uint64_t off = cproc_spill_offset(p->spill - 1);
    Py_ssize_t len = buffer_object_size(p->data);
    int r = cproc_file_read(q->fd, buffer_object_data(p->data), (size_t)len, off);
    off += (uint64_t)len;
    for (uint32_t i = 0; r == 0 && i < p->nbuf; i++) {
        len = buffer_object_size(p->buffers[i]);
        r = cproc_file_read(q->fd, buffer_object_data(p->buffers[i]), (size_t)len, off);
        off += (uint64_t)len;
    }
    popped_unspill(q, p);
    return r;
}

/* The object a popped record holds. */
static PyObject *popped_decode(popped *p)
{
    PyObject *result;
    if (p->kind == K_PLAIN)
        result = cproc_plain_decode(PyBytes_AS_STRING(p->data), PyBytes_GET_SIZE(p->data));
    else if (p->kind != K_PICKLE)
        result = Py_NewRef(p->data);
    else if (p->nbuf == 0)
        result = PyObject_CallOneArg(pickle_loads, p->data);
    else {
        PyObject *list = PyList_New(p->nbuf);
        if (list == NULL)
            return NULL;
        for (uint32_t i = 0; i < p->nbuf; i++)
            PyList_SET_ITEM(list, i, Py_NewRef(p->buffers[i]));
        PyObject *args[2] = {p->data, list};
        PyObject *kw = PyTuple_Pack(1, str_buffers);
        result = kw ? PyObject_Vectorcall(pickle_loads, args, 1, kw) : NULL;
        Py_XDECREF(kw);
        Py_DECREF(list);
    }
    return result;
}

/* ---- the operations ------------------------------------------------------ */

static int check_ready(QueueObject *q)
{
    if (q->hdr != NULL)
        return 0;
    PyErr_Format(PyExc_ValueError, "%s object is not initialised", Py_TYPE(q)->tp_name);
    return -1;
}

static int check_open(QueueObject *q)
{
    if (check_ready(q) < 0)
        return -1;
    if (!q->closed)
        return 0;
    if (q->kind == Q_SIMPLE)
        PyErr_SetString(PyExc_OSError, "handle is closed");
    else
        PyErr_Format(PyExc_ValueError, "Queue %R is closed", (PyObject *)q);
    return -1;
}

/* ---- the watcher's pipe ------------------------------------------------- */

/* Open the watcher's pipe through /proc/<pid>/fd/<fd>, for writing without
 * blocking; -1 if that process no longer has it. */
static int watch_pipe_open(pid_t pid, int fd, uint64_t ino)
{
    char path[64], target[64], expect[64];
    snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)pid, fd);
    snprintf(expect, sizeof expect, "pipe:[%llu]", (unsigned long long)ino);
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n < 0)
        return -1;
    target[n] = '\0';
    if (strcmp(target, expect) != 0)    /* a recycled fd number: never open it */
        return -1;
    int myfd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (myfd < 0)
        return -1;
    struct stat st;
    if (fstat(myfd, &st) != 0 || !S_ISFIFO(st.st_mode) || (uint64_t)st.st_ino != ino) {
        close(myfd);
        return -1;
    }
    return myfd;
}

/* After a put: one byte to the watcher's pipe (read under the lock into
 * pid/fd/ino/gen). A full pipe is readable already; a watcher gone is
 * forgotten until the next one registers. */
static void watch_notify(QueueObject *q, uint32_t pid, int32_t fd, uint64_t ino, uint32_t gen)
{
    if (pid == 0)
        return;
    if (q->notify_gen != gen || q->notify_fd < 0) {
        if (q->notify_fd >= 0)
            close(q->notify_fd);
        q->notify_fd = q->notify_gen == gen ? -1 : watch_pipe_open((pid_t)pid, fd, ino);
        q->notify_gen = gen;
    }
    if (q->notify_fd < 0)
        return;
    ssize_t r;
    do
        r = write(q->notify_fd, "", 1);
    while (r < 0 && errno == EINTR);
    if (r < 0 && errno != EAGAIN) {     /* EPIPE: the watcher closed it */
        close(q->notify_fd);
        q->notify_fd = -1;
    }
}

typedef struct {
    QueueObject *q;
    message *msgs;
    Py_ssize_t n;
    int error;
} put_ctx;

/* Write the messages if there is room for all of them (bounded queues). */
static int try_put(void *ctx, uint32_t *seen)
{
    put_ctx *c = ctx;
    queue_header *h = c->q->hdr;
    uint64_t n = (uint64_t)c->n;
    *seen = atomic_load(&h->get_seq);
    if (h->maxsize > 0 && atomic_load(&h->count) + n > (uint64_t)h->maxsize)
        return 0;
    /* As multiprocessing's put: only a full queue makes it wait or fail, so
     * the lock is waited for as long as its holder copies. */
    if (qlock_acquire(c->q, CPROC_FOREVER) < 0) {
        c->error = 1;
        return 1;
    }
    if (h->maxsize > 0 && atomic_load(&h->count) + n > (uint64_t)h->maxsize) {
        qlock_release(h);
        return 0;
    }
    if (c->q->kind == Q_JOINABLE && atomic_load(&h->unfinished) + n > (uint64_t)MAXSIZE_LIMIT) {
        qlock_release(h);
        PyErr_SetString(PyExc_ValueError, "JoinableQueue: too many unfinished tasks");
        c->error = 1;
        return 1;
    }
    uint64_t need = 0;
    for (Py_ssize_t i = 0; i < c->n; i++)
        need += message_record_bytes(&c->msgs[i]);
    if (ring_reserve(c->q, need) < 0) {
        qlock_release(h);
        c->error = 1;
        return 1;
    }
    ring_desc *r = ring_now(h);
    uint64_t tail = r->tail;
    for (Py_ssize_t i = 0; i < c->n; i++)
        if (message_write(c->q, &c->msgs[i], &tail) < 0) {
            qlock_release(h);           /* nothing of this batch was published */
            c->error = 1;
            return 1;
        }
    for (Py_ssize_t i = 0; i < c->n; i++)
        if (c->msgs[i].spill) {
            cproc_spill_queued(&h->spill[c->msgs[i].spill - 1]);
            c->msgs[i].spill_queued = 1;
        }
    crash_point(DIE_PUT_BEFORE_TAIL);
    r->tail = tail;                     /* published: a death from here on is repaired */
    crash_point(DIE_PUT_BEFORE_COUNT);
    if (r->tail - r->head > h->peak)
        h->peak = r->tail - r->head;
    if (c->q->kind == Q_JOINABLE)
        atomic_fetch_add(&h->unfinished, (uint32_t)n);
    atomic_fetch_add(&h->count, n);
    atomic_fetch_add(&h->put_seq, (uint32_t)n);
    uint32_t watch_pid = h->watch_pid, watch_gen = h->watch_gen;
    int32_t watch_fd = h->watch_fd;
    uint64_t watch_ino = h->watch_ino;
    qlock_release(h);
    cproc_wake_waiters(&h->put_seq, &h->get_waiters, n > INT_MAX ? INT_MAX : (int)n);
    watch_notify(c->q, watch_pid, watch_fd, watch_ino, watch_gen);
    return 1;
}

static int put_messages(QueueObject *q, message *msgs, Py_ssize_t n, int blocking, int64_t deadline)
{
    put_ctx c = {q, msgs, n, 0};
    uint32_t seen;
    int r = CPROC_WAIT_OK;
    /* Large messages go to spill blocks first, unless a bounded queue has no
     * room for them now (they then wait in this process and are copied into
     * the ring once there is). */
    queue_header *h = q->hdr;
    if (h->maxsize == 0 || atomic_load(&h->count) + (uint64_t)n <= (uint64_t)h->maxsize)
        for (Py_ssize_t i = 0; r == CPROC_WAIT_OK && i < n; i++)
            if (message_spill(q, &msgs[i]) < 0)
                r = CPROC_WAIT_ERROR;
    if (r != CPROC_WAIT_OK)
        ;
    else if (try_put(&c, &seen))
        r = CPROC_WAIT_OK;
    else if (!blocking)
        r = CPROC_WAIT_TIMEOUT;
    else
        r = cproc_wait(&h->get_seq, &h->put_waiters, try_put, NULL, &c, deadline);
    for (Py_ssize_t i = 0; i < n; i++)
        message_unspill(q, &msgs[i]);
    if (r == CPROC_WAIT_ERROR || c.error)
        return -1;
    if (r == CPROC_WAIT_TIMEOUT) {
        PyErr_SetNone(Full);
        return -1;
    }
    q->put_pid = cproc_pid;
    return 0;
}

typedef struct {
    QueueObject *q;
    Py_ssize_t max;
    popped *out;                        /* PyMem array, allocated under the lock */
    Py_ssize_t n;
    int64_t deadline;
    int error;
    int timed_out;                      /* waiting for the lock */
    _Atomic uint64_t *claim;            /* gets the first record's tag before it leaves the ring */
    cproc_poll_fn stop_fn;              /* while sleeping: 1 gives up the wait */
    void *stop_ctx;
    int stopped;
} get_ctx;

static int try_get(void *ctx, uint32_t *seen)
{
    get_ctx *c = ctx;
    queue_header *h = c->q->hdr;
    *seen = atomic_load(&h->put_seq);
    if (atomic_load(&h->count) == 0)
        return 0;
    int locked = qlock_acquire(c->q, c->deadline);
    if (locked <= 0) {
        c->error = locked < 0;
        c->timed_out = locked == 0;
        return 1;
    }
    uint64_t avail = atomic_load(&h->count);
    Py_ssize_t want = avail < (uint64_t)c->max ? (Py_ssize_t)avail : c->max;
    if (want == 0) {
        qlock_release(h);
        return 0;
    }
    c->out = PyMem_Calloc((size_t)want, sizeof(popped));
    if (c->out == NULL) {
        qlock_release(h);
        PyErr_NoMemory();
        c->error = 1;
        return 1;
    }
    Py_ssize_t n = 0;
    ring_desc *r = ring_now(h);
    uint64_t head = r->head;
    int huge = 0;
    while (n < want) {
        uint64_t size = record_read(c->q, head, &c->out[n]);
        if (size == 0)
            break;
        huge |= size >= RELEASE_OVER;
        head += size;
        n++;
    }
    if (n > 0 && c->claim != NULL) {
        /* A process killed from here on has the record in its claim. */
        atomic_store(c->claim, c->out[0].tag);
        atomic_thread_fence(memory_order_seq_cst);
    }
    /* Publish what was taken (a MemoryError part way keeps the rest queued);
     * a death from here on is repaired. */
    uint64_t old_head = r->head;
    crash_point(DIE_GET_BEFORE_HEAD);
    r->head = head;
    crash_point(DIE_GET_BEFORE_COUNT);
    atomic_fetch_sub(&h->count, (uint64_t)n);
    atomic_fetch_add(&h->get_seq, (uint32_t)n);
    for (uint64_t pos = old_head; huge && pos < head;) {
        record_header rh;
        if (ring_take(c->q, pos, &rh, sizeof rh) < 0)
            break;
        uint64_t size = sizeof rh + align8(rh.size);
        if (size >= RELEASE_OVER)
            ring_release_pages(c->q, pos, size);
        pos += size;
    }
    if (atomic_load(&h->count) == 0 && n > 0)
        ring_maybe_shrink(c->q);
    qlock_release(h);
    if (n == 0) {
        PyMem_Free(c->out);
        c->out = NULL;
        c->error = 1;                   /* record_read set the exception */
        return 1;
    }
    PyErr_Clear();                      /* a MemoryError after some records: return those */
    c->n = n;
    /* Every putter: one woken for n freed slots may be a put_many that still
     * does not fit, and would keep the wake from a put that does
     * (models/queue_put.pml). */
    if (h->maxsize > 0)
        cproc_wake_waiters(&h->get_seq, &h->put_waiters, INT_MAX);
    return 1;
}

static int get_stop(void *ctx)
{
    get_ctx *c = ctx;
    return c->stopped = c->stop_fn(c->stop_ctx);
}

/* Take up to `max` records (at least one, or fail with Empty); c->claim,
 * c->stop_fn and c->stop_ctx set by the caller. Returns 1 (nothing taken)
 * when c->stop_fn ended the wait. */
static int get_records(QueueObject *q, Py_ssize_t max, int blocking, int64_t deadline, get_ctx *c)
{
    c->q = q;
    c->max = max;
    c->out = NULL;
    c->n = 0;
    c->deadline = blocking ? deadline : 0;
    c->error = 0;
    c->timed_out = 0;
    c->stopped = 0;
    uint32_t seen;
    int r;
    if (try_get(c, &seen))
        r = CPROC_WAIT_OK;
    else if (!blocking)
        r = CPROC_WAIT_TIMEOUT;
    else
        r = cproc_wait(&q->hdr->put_seq, &q->hdr->get_waiters, try_get,
                       c->stop_fn ? get_stop : NULL, c, deadline);
    if (r == CPROC_WAIT_ERROR || c->error)
        return -1;
    if (c->stopped)
        return 1;
    if (r == CPROC_WAIT_TIMEOUT || c->timed_out) {
        PyErr_SetNone(Empty);
        return -1;
    }
    /* Records in spill blocks: copied now that the lock is free. A failure
     * here (pread on our own memfd: not expected) loses what was taken. */
    for (Py_ssize_t i = 0; i < c->n; i++)
        if (popped_fill(q, &c->out[i]) < 0) {
            for (Py_ssize_t j = 0; j < c->n; j++) {
                popped_unspill(q, &c->out[j]);
                popped_clear(&c->out[j]);
            }
            PyMem_Free(c->out);
            c->out = NULL;
            c->n = 0;
            return -1;
        }
    return 0;
}


/* ---- records a failed get_many left behind ------------------------------ */

/* Put popped records back in front of q->pending, as (kind, data, buffers). */
static int pending_push_front(QueueObject *q, popped *p, Py_ssize_t n)
{
    if (n == 0)
        return 0;
    if (q->pending == NULL && (q->pending = PyList_New(0)) == NULL)
        return -1;
    PyObject *items = PyList_New(n);
    if (items == NULL)
        return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *bufs = PyTuple_New(p[i].nbuf);
        for (uint32_t k = 0; bufs != NULL && k < p[i].nbuf; k++)
            PyTuple_SET_ITEM(bufs, k, Py_NewRef(p[i].buffers[k]));
        PyObject *t = bufs ? Py_BuildValue("(ION)", p[i].kind, p[i].data, bufs) : NULL;
        if (t == NULL) {
            Py_DECREF(items);
            return -1;
        }
        PyList_SET_ITEM(items, i, t);
    }
    int r = PyList_SetSlice(q->pending, 0, 0, items);
    Py_DECREF(items);
    return r;
}

/* Take up to `max` records from q->pending into a new popped array. */
static popped *pending_take(QueueObject *q, Py_ssize_t max, Py_ssize_t *n)
{
    Py_ssize_t have = PyList_GET_SIZE(q->pending);
    *n = have < max ? have : max;
    popped *p = PyMem_Calloc((size_t)*n, sizeof(popped));
    if (p == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < *n; i++) {
        PyObject *t = PyList_GET_ITEM(q->pending, i);
        p[i].kind = (uint32_t)PyLong_AsUnsignedLong(PyTuple_GET_ITEM(t, 0));
        p[i].data = Py_NewRef(PyTuple_GET_ITEM(t, 1));
        PyObject *bufs = PyTuple_GET_ITEM(t, 2);
        p[i].nbuf = (uint32_t)PyTuple_GET_SIZE(bufs);
        if (p[i].nbuf > 0) {
            p[i].buffers = PyMem_Calloc(p[i].nbuf, sizeof(PyObject *));
            if (p[i].buffers == NULL) {
                p[i].nbuf = 0;
                PyErr_NoMemory();
                for (Py_ssize_t j = 0; j <= i; j++)
                    popped_clear(&p[j]);
                PyMem_Free(p);
                return NULL;
            }
            for (uint32_t k = 0; k < p[i].nbuf; k++)
                p[i].buffers[k] = Py_NewRef(PyTuple_GET_ITEM(bufs, k));
        }
    }
    if (PyList_SetSlice(q->pending, 0, *n, NULL) < 0) {
        for (Py_ssize_t i = 0; i < *n; i++)
            popped_clear(&p[i]);
        PyMem_Free(p);
        return NULL;
    }
    return p;
}

/* Decode n popped records: the object (want_list 0, n == 1) or a list. When
 * one fails to unpickle, the objects before it are returned and the failing
 * record and the rest wait in q->pending; the next get raises its error.
 * Nothing taken from the shared queue is ever dropped. Frees p. */
static PyObject *decode_all(QueueObject *q, popped *p, Py_ssize_t n, int want_list)
{
    PyObject *result = want_list ? PyList_New(0) : NULL;
    Py_ssize_t i = 0;
    if (want_list && result == NULL)
        goto done;
    for (; i < n; i++) {
        PyObject *obj = popped_decode(&p[i]);
        if (obj == NULL) {
            if (want_list && PyList_GET_SIZE(result) > 0) {
                PyErr_Clear();
                if (pending_push_front(q, p + i, n - i) < 0)
                    Py_CLEAR(result);
            } else {
                PyObject *et, *ev, *tb;
                PyErr_Fetch(&et, &ev, &tb);
                if (pending_push_front(q, p + i + 1, n - i - 1) < 0) {
                    Py_XDECREF(et);
                    Py_XDECREF(ev);
                    Py_XDECREF(tb);
                } else
                    PyErr_Restore(et, ev, tb);
                Py_CLEAR(result);
            }
            goto done;
        }
        if (!want_list) {
            result = obj;
            continue;
        }
        int r = PyList_Append(result, obj);
        Py_DECREF(obj);
        if (r < 0) {
            Py_CLEAR(result);
            goto done;
        }
    }
done:
    for (Py_ssize_t j = 0; j < n; j++)
        popped_clear(&p[j]);
    PyMem_Free(p);
    return result;
}

static PyObject *take(QueueObject *q, Py_ssize_t max, int blocking, int64_t deadline, int want_list)
{
    if (q->pending != NULL && PyList_GET_SIZE(q->pending) > 0) {
        Py_ssize_t n;
        popped *p = pending_take(q, max, &n);
        return p ? decode_all(q, p, n, want_list) : NULL;
    }
    get_ctx c = {0};
    if (get_records(q, max, blocking, deadline, &c) < 0)
        return NULL;
    return decode_all(q, c.out, c.n, want_list);
}

/* ---- methods ------------------------------------------------------------- */

/* block and timeout as multiprocessing reads them: block goes to a
 * semaphore's acquire() (up to 3.11 an int), except in a get that waits
 * without a timeout (`if block and timeout is None`), where any true value
 * will do. */
static int parse_block_timeout(PyObject *block, PyObject *timeout, int *blocking, int64_t *deadline,
                               int getting)
{
    *blocking = 1;
    if (block != NULL) {
        int no_timeout = timeout == NULL || timeout == Py_None;
        if (getting && (*blocking = PyObject_IsTrue(block)) < 0)
            return -1;
        if (!(getting && *blocking && no_timeout) && (*blocking = cproc_blocking_arg(block)) < 0)
            return -1;
    }
    return cproc_deadline_from_timeout(timeout, deadline);
}

static PyObject *queue_put(QueueObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"obj", "block", "timeout", NULL};
    PyObject *a[3];
    int blocking;
    int64_t deadline;
    if (cproc_parse_args("put", args, nargs, kwnames, names, 1, a) < 0 ||
        parse_block_timeout(a[1], a[2], &blocking, &deadline, 0) < 0 || check_open(self) < 0)
        return NULL;
    message m;
    if (message_init(&m, a[0], NULL) < 0)
        return NULL;
    int r = put_messages(self, &m, 1, blocking, deadline);
    message_clear(&m);
    if (r < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *put_nowait(QueueObject *self, PyObject *obj)
{
    if (check_open(self) < 0)
        return NULL;
    message m;
    if (message_init(&m, obj, NULL) < 0)
        return NULL;
    int r = put_messages(self, &m, 1, 0, 0);
    message_clear(&m);
    if (r < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *queue_put_many(QueueObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"iterable", "block", "timeout", NULL};
    PyObject *a[3];
    int blocking;
    int64_t deadline;
    if (cproc_parse_args("put_many", args, nargs, kwnames, names, 1, a) < 0 ||
        parse_block_timeout(a[1], a[2], &blocking, &deadline, 0) < 0 || check_open(self) < 0)
        return NULL;
    PyObject *items = PySequence_Fast(a[0], "put_many() argument must be iterable");
    if (items == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(items);
    int32_t maxsize = self->hdr->maxsize;
    if (maxsize > 0 && n > maxsize) {
        PyErr_Format(PyExc_ValueError, "put_many() of %zd items can never fit a queue of maxsize %d",
                     n, (int)maxsize);
        Py_DECREF(items);
        return NULL;
    }
    message *msgs = PyMem_Calloc(n > 0 ? (size_t)n : 1, sizeof(message));
    int r = msgs == NULL ? (PyErr_NoMemory(), -1) : 0;
    Py_ssize_t ready = 0;               /* messages initialised (a failed one clears itself) */
    while (r == 0 && ready < n && message_init(&msgs[ready], PySequence_Fast_GET_ITEM(items, ready), NULL) == 0)
        ready++;
    if (r == 0 && ready < n)
        r = -1;
    if (r == 0 && n > 0)
        r = put_messages(self, msgs, n, blocking, deadline);
    for (Py_ssize_t i = 0; i < ready; i++)
        message_clear(&msgs[i]);
    PyMem_Free(msgs);
    Py_DECREF(items);
    if (r < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *queue_get(QueueObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"block", "timeout", NULL};
    PyObject *a[2];
    int blocking;
    int64_t deadline;
    if (cproc_parse_args("get", args, nargs, kwnames, names, 0, a) < 0 ||
        parse_block_timeout(a[0], a[1], &blocking, &deadline, 1) < 0 || check_open(self) < 0)
        return NULL;
    return take(self, 1, blocking, deadline, 0);
}

static PyObject *queue_get_nowait(QueueObject *self, PyObject *unused)
{
    (void)unused;
    if (check_open(self) < 0)
        return NULL;
    return take(self, 1, 0, 0, 0);
}

static PyObject *queue_get_many(QueueObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"max_items", "block", "timeout", NULL};
    PyObject *a[3];
    int blocking;
    int64_t deadline;
    if (cproc_parse_args("get_many", args, nargs, kwnames, names, 1, a) < 0)
        return NULL;
    Py_ssize_t max = PyNumber_AsSsize_t(a[0], PyExc_OverflowError);
    if (max == -1 && PyErr_Occurred())
        return NULL;
    if (max < 1) {
        PyErr_SetString(PyExc_ValueError, "max_items must be at least 1");
        return NULL;
    }
    if (parse_block_timeout(a[1], a[2], &blocking, &deadline, 1) < 0 || check_open(self) < 0)
        return NULL;
    return take(self, max, blocking, deadline, 1);
}

static PyObject *simplequeue_get(QueueObject *self, PyObject *unused)
{
    (void)unused;
    if (check_open(self) < 0)
        return NULL;
    return take(self, 1, 1, CPROC_FOREVER, 0);
}

static PyObject *simplequeue_put(QueueObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"obj", NULL};
    PyObject *obj;
    if (cproc_parse_args("put", args, nargs, kwnames, names, 1, &obj) < 0 || check_open(self) < 0)
        return NULL;
    return put_nowait(self, obj);
}

static PyObject *queue_put_nowait(QueueObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"obj", NULL};
    PyObject *obj;
    if (cproc_parse_args("put_nowait", args, nargs, kwnames, names, 1, &obj) < 0)
        return NULL;
    return put_nowait(self, obj);
}

static PyObject *queue_qsize(QueueObject *self, PyObject *unused)
{
    (void)unused;
    if (check_ready(self) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(atomic_load(&self->hdr->count));
}

static PyObject *queue_empty(QueueObject *self, PyObject *unused)
{
    (void)unused;
    if ((self->kind == Q_SIMPLE ? check_open(self) : check_ready(self)) < 0)
        return NULL;
    /* multiprocessing: a put starts the process's feeder thread, which closes
     * the reader once close() stops it; empty() then polls a closed handle */
    if (self->closed && self->put_pid == cproc_pid) {
        PyErr_SetString(PyExc_OSError, "handle is closed");
        return NULL;
    }
    int has_pending = self->pending != NULL && PyList_GET_SIZE(self->pending) > 0;
    return PyBool_FromLong(atomic_load(&self->hdr->count) == 0 && !has_pending);
}

static PyObject *queue_full(QueueObject *self, PyObject *unused)
{
    (void)unused;
    if (check_ready(self) < 0)
        return NULL;
    int32_t maxsize = self->hdr->maxsize;
    return PyBool_FromLong(maxsize > 0 && atomic_load(&self->hdr->count) >= (uint64_t)maxsize);
}

static PyObject *queue_close(QueueObject *self, PyObject *unused)
{
    (void)unused;
    self->closed = 1;
    if (self->reader != NULL) {         /* as multiprocessing's close() closes _reader */
        PyObject *r = PyObject_CallMethod(self->reader, "close", NULL);
        if (r == NULL)
            return NULL;
        Py_DECREF(r);
    }
    Py_RETURN_NONE;
}

/* ---- the watcher (SimpleQueue._reader, cproc.queues._QueueReader) -------- */

/* Stop the puts writing to our pipe, if it is still the registered one. */
static int queue_unwatch(QueueObject *q)
{
    if (q->hdr == NULL || q->watch_wfd < 0)
        return 0;
    queue_header *h = q->hdr;
    int locked = qlock_acquire(q, CPROC_FOREVER);
    if (locked < 0)
        return -1;
    if (h->watch_pid == (uint32_t)cproc_pid && h->watch_fd == q->watch_wfd) {
        h->watch_pid = 0;
        h->watch_gen++;
    }
    qlock_release(h);
    q->watch_wfd = -1;
    return 0;
}

static PyObject *queue_watch(QueueObject *self, PyObject *arg)
{
    if (check_open(self) < 0)
        return NULL;
    long v = PyLong_AsLong(arg);
    if (v == -1 && PyErr_Occurred())
        return NULL;
    if (v < 0 || v > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "invalid file descriptor");
        return NULL;
    }
    int fd = (int)v;
    struct stat st;
    if (fstat(fd, &st) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    if (!S_ISFIFO(st.st_mode)) {
        PyErr_SetString(PyExc_ValueError, "the watch descriptor must be a pipe's write end");
        return NULL;
    }
    queue_header *h = self->hdr;
    if (qlock_acquire(self, CPROC_FOREVER) < 0)
        return NULL;
    h->watch_pid = (uint32_t)cproc_pid;
    h->watch_fd = fd;
    h->watch_ino = (uint64_t)st.st_ino;
    h->watch_gen++;
    qlock_release(h);
    self->watch_wfd = fd;
    Py_RETURN_NONE;
}

static PyObject *queue_unwatch_method(QueueObject *self, PyObject *unused)
{
    (void)unused;
    if (queue_unwatch(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* cproc.queues.<name>(self, closed) */
static PyObject *queue_end(QueueObject *self, const char *name)
{
    PyObject *mod = PyImport_ImportModule("cproc.queues");
    if (mod == NULL)
        return NULL;
    PyObject *end = PyObject_CallMethod(mod, name, "OO", (PyObject *)self, self->closed ? Py_True : Py_False);
    Py_DECREF(mod);
    return end;
}

static PyObject *queue_get_reader(QueueObject *self, void *closure)
{
    (void)closure;
    if (self->reader == NULL) {
        if (self->closed)               /* as multiprocessing's: a closed Connection */
            return queue_end(self, "_QueueReader");
        PyObject *reader = queue_end(self, "_QueueReader");
        if (reader == NULL)
            return NULL;
        if (self->reader != NULL)       /* made meanwhile by another thread */
            Py_DECREF(reader);
        else
            self->reader = reader;
    }
    return Py_NewRef(self->reader);
}

/* SimpleQueue._writer: only its `closed` (multiprocessing's is the pipe's
 * write end; put() is the way to write). */
static PyObject *queue_get_writer(QueueObject *self, void *closure)
{
    (void)closure;
    return queue_end(self, "_QueueWriter");
}

static PyGetSetDef simple_getset[] = {
    {"_writer", (getter)queue_get_writer, NULL,
     "The write end as multiprocessing's SimpleQueue has it: `closed` tells whether close() ran.",
     NULL},
    {"_reader", (getter)queue_get_reader, NULL,
     "A connection-like reader that multiprocessing.connection.wait() can wait on: readable "
     "when the queue holds an item; recv() is get() (as multiprocessing's SimpleQueue._reader).",
     NULL},
    {NULL}
};

static PyObject *queue_join_thread(QueueObject *self, PyObject *unused)
{
    (void)unused;
    if (!self->closed) {
        PyErr_Format(PyExc_AssertionError, "Queue %R not closed", (PyObject *)self);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *queue_cancel_join_thread(QueueObject *self, PyObject *unused)
{
    (void)self; (void)unused;
    Py_RETURN_NONE;
}

static PyObject *queue_task_done(QueueObject *self, PyObject *unused)
{
    (void)unused;
    if (check_ready(self) < 0)
        return NULL;
    queue_header *h = self->hdr;
    uint32_t v = atomic_load(&h->unfinished);
    do {
        if (v == 0) {
            PyErr_SetString(PyExc_ValueError, "task_done() called too many times");
            return NULL;
        }
    } while (!atomic_compare_exchange_weak(&h->unfinished, &v, v - 1));
    if (v == 1) {
        atomic_fetch_add(&h->zeros, 1);
        cproc_wake_waiters(&h->zeros, &h->join_waiters, INT_MAX);
    }
    Py_RETURN_NONE;
}

/* join() is done when no task is unfinished, or when the count reached 0
 * since it began (a put may have raised it again before we slept: sleeping
 * on the count itself would miss that moment, models/join.pml). */
typedef struct {
    queue_header *h;
    uint32_t zeros;       /* h->zeros when join() began */
} join_ctx;

static int try_join(void *arg, uint32_t *seen)
{
    join_ctx *ctx = arg;
    *seen = atomic_load(&ctx->h->zeros);
    return *seen != ctx->zeros || atomic_load(&ctx->h->unfinished) == 0;
}

static PyObject *queue_join(QueueObject *self, PyObject *unused)
{
    (void)unused;
    if (check_ready(self) < 0)
        return NULL;
    join_ctx ctx = {self->hdr, atomic_load(&self->hdr->zeros)};
    uint32_t seen;
    if (!try_join(&ctx, &seen) &&
        cproc_wait(&self->hdr->zeros, &self->hdr->join_waiters, try_join, NULL, &ctx,
                   CPROC_FOREVER) != CPROC_WAIT_OK)
        return NULL;
    Py_RETURN_NONE;
}

/* ---- the Pool's transport (pool.c) ------------------------------------- */

static QueueObject *pool_queue(PyObject *queue)
{
    if (!PyObject_TypeCheck(queue, &cproc_QueueType) && !PyObject_TypeCheck(queue, &cproc_SimpleQueueType)) {
        PyErr_SetString(PyExc_TypeError, "a cproc queue is required");
        return NULL;
    }
    QueueObject *q = (QueueObject *)queue;
    return check_open(q) < 0 ? NULL : q;
}

int cproc_queue_put_batch(PyObject *queue, PyObject *const *objs, const uint64_t *tags, Py_ssize_t n,
                          PyObject *dumps, PyObject **errors)
{
    QueueObject *q = pool_queue(queue);
    if (q == NULL)
        return -1;
    message *msgs = PyMem_Calloc(n > 0 ? (size_t)n : 1, sizeof(message));
    if (msgs == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t ready = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        errors[i] = NULL;
        if (message_init(&msgs[ready], objs[i], dumps) < 0) {
            if ((errors[i] = cproc_fetch_exception()) == NULL) {
                PyErr_SetString(PyExc_SystemError, "pickling failed without an exception");
                for (Py_ssize_t j = 0; j < i; j++)
                    Py_CLEAR(errors[j]);
                goto fail;
            }
            continue;
        }
        msgs[ready++].tag = tags[i];
    }
    int r = ready > 0 ? put_messages(q, msgs, ready, 1, CPROC_FOREVER) : 0;
    for (Py_ssize_t i = 0; i < ready; i++)
        message_clear(&msgs[i]);
    PyMem_Free(msgs);
    if (r < 0)
        for (Py_ssize_t i = 0; i < n; i++)
            Py_CLEAR(errors[i]);
    return r;
fail:
    for (Py_ssize_t i = 0; i < ready; i++)
        message_clear(&msgs[i]);
    PyMem_Free(msgs);
    return -1;
}

Py_ssize_t cproc_queue_take_batch(PyObject *queue, Py_ssize_t max, int64_t deadline, _Atomic uint64_t *claim,
                                  cproc_poll_fn stop_fn, void *stop_ctx,
                                  uint64_t *tags, PyObject **objs, int *ok)
{
    QueueObject *q = pool_queue(queue);
    if (q == NULL)
        return -1;
    get_ctx c = {0};
    c.claim = claim;
    c.stop_fn = stop_fn;
    c.stop_ctx = stop_ctx;
    int r = get_records(q, max, deadline != 0, deadline, &c);
    if (r < 0) {
        if (!PyErr_ExceptionMatches(Empty))
            return -1;
        PyErr_Clear();
        return 0;
    }
    if (r > 0)
        return 0;                       /* stop_fn ended the wait */
    for (Py_ssize_t i = 0; i < c.n; i++) {
        tags[i] = c.out[i].tag;
        objs[i] = popped_decode(&c.out[i]);
        ok[i] = objs[i] != NULL;
        if (!ok[i] && (objs[i] = cproc_fetch_exception()) == NULL)
            objs[i] = Py_NewRef(Py_None);
        popped_clear(&c.out[i]);
    }
    PyMem_Free(c.out);
    return c.n;
}

static PyObject *queue_ring_info(QueueObject *self, PyObject *unused)
{
    (void)unused;
    if (check_ready(self) < 0)
        return NULL;
    queue_header *h = self->hdr;
    if (qlock_acquire(self, CPROC_FOREVER) < 0)
        return NULL;
    ring_desc *r = ring_now(h);
    int spill_in_use;
    uint64_t spill_warm;
    cproc_spill_usage(h->spill, &spill_in_use, &spill_warm);
    PyObject *d = Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:I,s:i,s:i,s:K}", "capacity", (unsigned long long)r->capacity,
                                "peak", (unsigned long long)h->peak,
                                "used", (unsigned long long)(r->tail - r->head),
                                "ring_offset", (unsigned long long)r->off,
                                "count", (unsigned long long)atomic_load(&h->count),
                                "generation", atomic_load(&h->ring_gen),
                                "spill_blocks", CPROC_SPILL_SLOTS,
                                "spill_blocks_in_use", spill_in_use,
                                "spill_kept_bytes", (unsigned long long)spill_warm);
    qlock_release(h);
    return d;
}

static PyObject *queue_die_at(QueueObject *self, PyObject *args)
{
    (void)self;
    const char *name;
    int signum = SIGKILL;
    if (!PyArg_ParseTuple(args, "s|i:_die_at", &name, &signum))
        return NULL;
    for (int i = 0; die_point_names[i] != NULL; i++)
        if (strcmp(name, die_point_names[i]) == 0) {
            die_at = i;
            die_signal = signum;
            Py_RETURN_NONE;
        }
    PyErr_Format(PyExc_ValueError, "no crash point '%s'", name);
    return NULL;
}

/* ---- creating, attaching, pickling -------------------------------------- */

static int kind_of_type(PyTypeObject *type);

static void queue_release(QueueObject *q)
{
    if (queue_unwatch(q) < 0)
        PyErr_WriteUnraisable((PyObject *)q);
    if (q->notify_fd >= 0)
        close(q->notify_fd);
    q->notify_fd = -1;
    q->notify_gen = 0;
    if (q->ring != NULL)
        (void)munmap(q->ring, q->ring_cap);
    if (q->hdr != NULL)
        (void)munmap(q->hdr, HEADER_BYTES);
    if (q->fd >= 0)
        close(q->fd);
    q->ring = NULL;
    q->hdr = NULL;
    q->fd = -1;
    q->ring_gen = 0;
    Py_CLEAR(q->pending);
    Py_CLEAR(q->reader);
}

/* Map the header of the memfd `fd` (ours) and record its identity. */
static int queue_map(QueueObject *q, int fd, pid_t origin_pid, int origin_fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        close(fd);
        return -1;
    }
    void *hdr = mmap(NULL, HEADER_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (hdr == MAP_FAILED) {
        PyErr_SetFromErrno(PyExc_OSError);
        close(fd);
        return -1;
    }
    q->fd = fd;
    q->hdr = hdr;
    q->dev = st.st_dev;
    q->ino = st.st_ino;
    q->origin_pid = origin_pid;
    q->origin_fd = origin_fd;
    q->closed = 0;
    q->put_pid = 0;
    return 0;
}

static int queue_create(QueueObject *q, int32_t maxsize)
{
    queue_release(q);
    int fd = cproc_memfd_create(HEADER_BYTES + INITIAL_CAPACITY);
    if (fd < 0 || queue_map(q, fd, cproc_pid, fd) < 0)
        return -1;
    queue_header *h = q->hdr;
    h->maxsize = maxsize;
    h->kind = (uint32_t)q->kind;
    atomic_store(&h->ring_gen, 2);     /* 0 is "none" for a process's mapping */
    *ring_now(h) = (ring_desc){.off = HEADER_BYTES, .capacity = INITIAL_CAPACITY};
    atomic_store(&h->lock, 0);
    h->magic = QUEUE_MAGIC;
    return 0;
}

static PyObject *queue_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args; (void)kwds;
    QueueObject *q = (QueueObject *)type->tp_alloc(type, 0);
    if (q == NULL)
        return NULL;
    q->fd = -1;
    q->watch_wfd = -1;
    q->notify_fd = -1;
    q->kind = kind_of_type(type);
    return (PyObject *)q;
}

static int queue_init(QueueObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"maxsize", "ctx", NULL};
    PyObject *maxsize = NULL, *ctx = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O$O:Queue", kwlist, &maxsize, &ctx))
        return -1;
    int value = 0;
    if (maxsize != NULL) {
        /* as multiprocessing: "maxsize <= 0" first, then BoundedSemaphore(maxsize) */
        PyObject *zero = PyLong_FromLong(0);
        int le = zero ? PyObject_RichCompareBool(maxsize, zero, Py_LE) : -1;
        Py_XDECREF(zero);
        if (le < 0 || (!le && cproc_semlock_int_arg(maxsize, &value) < 0))
            return -1;
    }
    return queue_create(self, (int32_t)value);
}

static int simplequeue_init(QueueObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"ctx", NULL};
    PyObject *ctx = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$O:SimpleQueue", kwlist, &ctx))
        return -1;
    return queue_create(self, 0);
}

static void queue_dealloc(QueueObject *self)
{
    if (self->weakreflist != NULL)
        PyObject_ClearWeakRefs((PyObject *)self);
    queue_release(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* handle = (dev, ino, pid, fd, pid2, fd2): the memfd is reachable through our
 * fd or through the one we opened it from. */
static PyObject *queue_reduce(QueueObject *self, PyObject *unused)
{
    (void)unused;
    if (check_ready(self) < 0)
        return NULL;
    PyObject *ctor = PyObject_GetAttrString((PyObject *)Py_TYPE(self), "_from_handle");
    if (ctor == NULL)
        return NULL;
    return Py_BuildValue("(N((KKiiii)))", ctor, (unsigned long long)self->dev,
                         (unsigned long long)self->ino, (int)cproc_pid, self->fd,
                         (int)self->origin_pid, self->origin_fd);
}

static PyObject *queue_from_handle(PyTypeObject *type, PyObject *handle)
{
    unsigned long long dev, ino;
    int pid1, fd1, pid2, fd2;
    if (!PyTuple_Check(handle) ||
        !PyArg_ParseTuple(handle, "KKiiii;invalid cproc queue handle", &dev, &ino, &pid1, &fd1, &pid2, &fd2)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "invalid cproc queue handle");
        return NULL;
    }
    QueueObject *q = (QueueObject *)queue_new(type, NULL, NULL);
    if (q == NULL)
        return NULL;
    int fd = cproc_memfd_open(pid1, fd1, (dev_t)dev, (ino_t)ino);
    pid_t from_pid = pid1;
    int from_fd = fd1;
    if (fd < 0 && (pid2 != pid1 || fd2 != fd1)) {
        fd = cproc_memfd_open(pid2, fd2, (dev_t)dev, (ino_t)ino);
        from_pid = pid2;
        from_fd = fd2;
    }
    if (fd < 0) {
        Py_DECREF(q);
        PyErr_Format(PyExc_FileNotFoundError,
                     "cannot attach cproc queue: no process that held it is still running "
                     "(pid %d, %d)", pid1, pid2);
        return NULL;
    }
    if (queue_map(q, fd, from_pid, from_fd) < 0) {
        Py_DECREF(q);
        return NULL;
    }
    if (q->hdr->magic != QUEUE_MAGIC || (int)q->hdr->kind != q->kind) {
        Py_DECREF(q);
        PyErr_SetString(PyExc_TypeError, "cproc handle is not one of this kind of queue");
        return NULL;
    }
    return (PyObject *)q;
}

/* ---- types --------------------------------------------------------------- */

#define FASTKW (METH_FASTCALL | METH_KEYWORDS)

#define COMMON_METHODS                                                                           \
    {"empty", (PyCFunction)queue_empty, METH_NOARGS, "empty($self, /)\n--\n\n" "Return True if the queue is empty."},     \
    {"close", (PyCFunction)queue_close, METH_NOARGS,                                            \
     "close($self, /)\n--\n\n" "Close this process's end of the queue; what was put stays for the others."},              \
    {"_from_handle", (PyCFunction)queue_from_handle, METH_O | METH_CLASS,                       \
     "Attach the queue a handle names (used by unpickling)."},                                  \
    {"_ring_info", (PyCFunction)queue_ring_info, METH_NOARGS, "Sizes of the ring (for tests)."}, \
    {"_die_at", (PyCFunction)queue_die_at, METH_VARARGS, "Arm a crash point in this process (for tests)."}, \
    {"__reduce__", (PyCFunction)queue_reduce, METH_NOARGS, NULL}

#define QUEUE_METHODS                                                                            \
    {"put", (PyCFunction)(void (*)(void))queue_put, FASTKW,                                     \
     "put(obj, block=True, timeout=None)\n--\n\nPickle obj in the caller and add it to the queue; " \
     "queue.Full if a bounded queue stays full."},                                              \
    {"get", (PyCFunction)(void (*)(void))queue_get, FASTKW,                                     \
     "get(block=True, timeout=None)\n--\n\nRemove and return the oldest item; queue.Empty on timeout."}, \
    {"put_nowait", (PyCFunction)(void (*)(void))queue_put_nowait, FASTKW,                       \
     "put_nowait($self, /, obj)\n--\n\nput(obj, False)"},                                      \
    {"get_nowait", (PyCFunction)queue_get_nowait, METH_NOARGS, "get_nowait($self, /)\n--\n\nget(False)"}, \
    {"put_many", (PyCFunction)(void (*)(void))queue_put_many, FASTKW,                           \
     "put_many(iterable, block=True, timeout=None)\n--\n\nAdd all items at once, or none of them."}, \
    {"get_many", (PyCFunction)(void (*)(void))queue_get_many, FASTKW,                           \
     "get_many(max_items, block=True, timeout=None)\n--\n\n"                                    \
     "Remove and return a list of 1 to max_items oldest items; queue.Empty on timeout."},       \
    {"qsize", (PyCFunction)queue_qsize, METH_NOARGS, "qsize($self, /)\n--\n\n" "The exact number of items in the queue."}, \
    {"full", (PyCFunction)queue_full, METH_NOARGS, "full($self, /)\n--\n\n" "Return True if a bounded queue is full."},   \
    {"join_thread", (PyCFunction)queue_join_thread, METH_NOARGS,                                \
     "join_thread($self, /)\n--\n\n" "Nothing to join (no feeder thread); AssertionError unless closed, as multiprocessing."},  \
    {"cancel_join_thread", (PyCFunction)queue_cancel_join_thread, METH_NOARGS,                  \
     "cancel_join_thread($self, /)\n--\n\n" "Nothing to cancel: put() returns once the item is in shared memory."},                    \
    COMMON_METHODS

static PyMethodDef queue_methods[] = {QUEUE_METHODS, {NULL}};

static PyMethodDef joinable_methods[] = {
    QUEUE_METHODS,
    {"task_done", (PyCFunction)queue_task_done, METH_NOARGS,
     "task_done($self, /)\n--\n\n" "Mark one item as processed; ValueError if called more often than items were put."},
    {"join", (PyCFunction)queue_join, METH_NOARGS, "join($self, /)\n--\n\n" "Block until every item put has been task_done()."},
    {NULL}
};

static PyMethodDef simple_methods[] = {
    {"get", (PyCFunction)simplequeue_get, METH_NOARGS, "get($self, /)\n--\n\nRemove and return the oldest item."},
    {"put", (PyCFunction)(void (*)(void))simplequeue_put, FASTKW, "put(obj)\n--\n\nAdd obj; never blocks."},
    {"__class_getitem__", Py_GenericAlias, METH_O | METH_CLASS, NULL},
    {"_watch", (PyCFunction)queue_watch, METH_O,
     "_watch(fd)\n--\n\nEvery put writes a byte to the pipe whose write end is fd (ours)."},
    {"_unwatch", (PyCFunction)queue_unwatch_method, METH_NOARGS,
     "_unwatch($self, /)\n--\n\nStop writing to the pipe _watch registered."},
    COMMON_METHODS,
    {NULL}
};

#define QUEUE_TYPE_COMMON                                                 \
    PyVarObject_HEAD_INIT(NULL, 0)                                        \
    .tp_basicsize = sizeof(QueueObject),                                  \
    .tp_dealloc = (destructor)queue_dealloc,                              \
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,                 \
    .tp_weaklistoffset = offsetof(QueueObject, weakreflist),              \
    .tp_new = queue_new

PyTypeObject cproc_QueueType = {
    QUEUE_TYPE_COMMON,
    .tp_name = "cproc.queues.Queue",
    .tp_doc = "Queue(maxsize=0, *, ctx=None)\n\nA process-shared FIFO queue in shared memory "
              "(multiprocessing.Queue's API, plus put_many/get_many).",
    .tp_methods = queue_methods,
    .tp_init = (initproc)queue_init,
};

PyTypeObject cproc_JoinableQueueType = {
    QUEUE_TYPE_COMMON,
    .tp_name = "cproc.queues.JoinableQueue",
    .tp_doc = "JoinableQueue(maxsize=0, *, ctx=None)\n\nA Queue with task_done() and join().",
    .tp_methods = joinable_methods,
    .tp_base = &cproc_QueueType,
};

PyTypeObject cproc_SimpleQueueType = {
    QUEUE_TYPE_COMMON,
    .tp_name = "cproc.queues.SimpleQueue",
    .tp_doc = "SimpleQueue(*, ctx=None)\n\nAn unbounded process-shared FIFO queue: get, put, empty, close.",
    .tp_methods = simple_methods,
    .tp_getset = simple_getset,
    .tp_init = (initproc)simplequeue_init,
};

static int kind_of_type(PyTypeObject *type)
{
    if (PyType_IsSubtype(type, &cproc_SimpleQueueType))
        return Q_SIMPLE;
    if (PyType_IsSubtype(type, &cproc_JoinableQueueType))
        return Q_JOINABLE;
    return Q_QUEUE;
}

/* The objects queue.c needs from the standard library. */
int cproc_queue_init(PyObject *module)
{
    page_size = (size_t)sysconf(_SC_PAGESIZE);
    PyObject *queue_mod = PyImport_ImportModule("queue");
    if (queue_mod == NULL)
        return -1;
    Empty = PyObject_GetAttrString(queue_mod, "Empty");
    Full = PyObject_GetAttrString(queue_mod, "Full");
    Py_DECREF(queue_mod);
    PyObject *pickle = PyImport_ImportModule("pickle");
    if (pickle == NULL)
        return -1;
    pickle_loads = PyObject_GetAttrString(pickle, "loads");
    Py_DECREF(pickle);
    str_buffers = PyUnicode_InternFromString("buffers");
    if (Empty == NULL || Full == NULL || pickle_loads == NULL || str_buffers == NULL)
        return -1;
    (void)module;
    return 0;
}
