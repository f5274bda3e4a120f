/* channel.c — a queue in shared memory without its Python type: the header
 * page, putting and taking records, and the Pool's tagged transport.
 * queue.c puts the Python types (Queue, JoinableQueue, SimpleQueue) on top;
 * pool.c sends its tasks and results through cproc_channel_put_batch and
 * cproc_channel_take_batch.
 *
 * One memfd per queue holds a header page (futex words, counters, the
 * ring's shared state, the spill blocks' slots) and the ring (ring.c).
 * Every process that has the queue keeps the memfd open, so what was put
 * stays there after its producer exits.
 *
 * put encodes in the caller (record.c; no feeder thread), takes the queue's
 * lock (qlock.c), copies the records to the tail and publishes them; get
 * copies the records at the head out under the lock and decodes after
 * releasing it. A record enters the ring when one store moves the tail past
 * it and leaves when one store moves the head, each after its copy is
 * complete; a process killed anywhere inside put or get therefore leaves the
 * records whole, and the process that takes the lock over from it recounts
 * them and puts the spill blocks right (qlock.c). An emptied ring may shrink
 * (ring.c), and the pages of a huge record are released as soon as it is
 * taken.
 *
 * Sleepers wait on sequence words (cproc_wait, futex.c); a put or get wakes
 * only when someone sleeps. A process may also watch a queue with select()
 * (SimpleQueue._reader, for concurrent.futures): it registers a pipe in the
 * header (queue.c), which then is readable exactly when the queue holds a
 * record ("the watcher's pipe" below).
 */
#include "cproc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define QUEUE_MAGIC 0x43505155u        /* "CPQU" */
#define HEADER_BYTES 4096u
#define RELEASE_OVER (8u << 20)         /* a record this large frees its pages once taken */
#define MAXSIZE_LIMIT INT_MAX           /* multiprocessing's bound for maxsize */

_Static_assert(sizeof(cproc_queue_header) <= HEADER_BYTES, "the queue header must fit its page");

/* ---- creating, attaching ------------------------------------------------- */

void cproc_channel_zero(cproc_channel *ch)
{
    memset(ch, 0, sizeof *ch);
    ch->mem.fd = -1;
    ch->watch_wfd = ch->watch_rfd = -1;
    ch->notify_fd = -1;
}

void cproc_channel_release(cproc_channel *ch)
{
    if (ch->notify_fd >= 0)
        close(ch->notify_fd);
    cproc_ring_close(&ch->ring);
    if (ch->hdr != NULL)
        (void)munmap(ch->hdr, HEADER_BYTES);
    cproc_memfd_close(&ch->mem);
    cproc_channel_zero(ch);
}

/* Map the header of the memfd (ours). */
static int channel_map(cproc_channel *ch)
{
    ch->hdr = cproc_memfd_map(ch->mem.fd, HEADER_BYTES, 0);
    if (ch->hdr == NULL) {
        cproc_memfd_close(&ch->mem);
        return -1;
    }
    cproc_ring_open(&ch->ring, &ch->hdr->ring, ch->mem.fd, HEADER_BYTES, cproc_spill_offset(0));
    return 0;
}

int cproc_channel_create(cproc_channel *ch, int32_t maxsize, uint32_t kind)
{
    cproc_channel_release(ch);
    if (cproc_memfd_new(&ch->mem, HEADER_BYTES + CPROC_RING_INITIAL) < 0 || channel_map(ch) < 0)
        return -1;
    cproc_queue_header *h = ch->hdr;
    h->maxsize = maxsize;
    h->kind = kind;
    cproc_ring_create(&ch->ring);
    h->magic = QUEUE_MAGIC;
    return 0;
}

int cproc_channel_attach(cproc_channel *ch, const cproc_memfd_ref *ref, uint32_t kind)
{
    cproc_channel_release(ch);
    int r = cproc_memfd_reach(&ch->mem, ref);
    if (r > 0)
        PyErr_Format(PyExc_FileNotFoundError,
                     "cannot attach cproc queue: no process that held it is still running "
                     "(pid %d, %d)", ref->pid1, ref->pid2);
    if (r != 0 || channel_map(ch) < 0)
        return -1;
    if (ch->hdr->magic != QUEUE_MAGIC || ch->hdr->kind != kind) {
        PyErr_SetString(PyExc_TypeError, "cproc handle is not one of this kind of queue");
        return -1;
    }
    return 0;
}

/* ---- the watcher's pipe ------------------------------------------------- */

/* The watcher (SimpleQueue._reader) waits for the queue with select() on a
 * pipe of its own, so the pipe must be readable exactly when the queue holds
 * a record (models/watch.pml): under the queue's lock, a put that makes the
 * count leave 0 writes a byte to it and a get by the watcher's process that
 * makes the count 0 drains it; registering it, and the repair after a
 * holder's death, set it from the count. (A get in another process cannot
 * drain it and may leave a byte: the watcher's next recv() then waits for a
 * record, as on a multiprocessing pipe another reader emptied.) */

/* Open the watcher's pipe through /proc/<pid>/fd/<fd>, for writing without
 * blocking: the descriptor, -1 if that process no longer has that pipe, -2
 * if it could not be opened for now (out of descriptors or memory). */
static int watch_pipe_open(pid_t pid, int fd, uint64_t ino)
{
    char path[64], target[64], expect[64];
    snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)pid, fd);
    snprintf(expect, sizeof expect, "pipe:[%llu]", (unsigned long long)ino);
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n < 0)
        return errno == ENOMEM ? -2 : -1;
    target[n] = '\0';
    if (strcmp(target, expect) != 0)    /* a recycled fd number: never open it */
        return -1;
    int myfd;
    do
        myfd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    while (myfd < 0 && errno == EINTR);
    if (myfd < 0)
        return errno == EMFILE || errno == ENFILE || errno == ENOMEM ? -2 : -1;
    struct stat st;
    if (fstat(myfd, &st) != 0 || !S_ISFIFO(st.st_mode) || (uint64_t)st.st_ino != ino) {
        close(myfd);
        return -1;
    }
    return myfd;
}

/* One byte to the watcher's pipe, if there is a watcher. Lock held. A full
 * pipe is readable already; a watcher gone is forgotten until the next one
 * registers; a pipe we could not open for now is tried again next time. */
static void watch_notify(cproc_channel *ch)
{
    cproc_queue_header *h = ch->hdr;
    if (h->watch_pid == 0)
        return;
    if (ch->notify_gen != h->watch_gen || ch->notify_fd == -2) {
        if (ch->notify_fd >= 0)
            close(ch->notify_fd);
        ch->notify_fd = watch_pipe_open((pid_t)h->watch_pid, h->watch_fd, h->watch_ino);
        ch->notify_gen = h->watch_gen;
    }
    if (ch->notify_fd < 0)
        return;
    ssize_t r;
    do
        r = write(ch->notify_fd, "", 1);
    while (r < 0 && errno == EINTR);
    if (r < 0 && errno != EAGAIN) {     /* EPIPE: the watcher closed it */
        close(ch->notify_fd);
        ch->notify_fd = -1;
    }
}

/* Empty our pipe, if we are the registered watcher. Lock held. */
static void watch_drain(cproc_channel *ch)
{
    cproc_queue_header *h = ch->hdr;
    if (ch->watch_rfd < 0 || h->watch_pid != (uint32_t)cproc_pid || h->watch_fd != ch->watch_wfd)
        return;
    char buf[64];
    ssize_t r;
    do
        r = read(ch->watch_rfd, buf, sizeof buf);
    while (r > 0 || (r < 0 && errno == EINTR));
}

void cproc_channel_watch_sync(cproc_channel *ch)
{
    if (atomic_load(&ch->hdr->count) > 0)
        watch_notify(ch);
    else
        watch_drain(ch);
}

int cproc_channel_watch(cproc_channel *ch, int wfd, int rfd)
{
    struct stat st, rst;
    if (fstat(wfd, &st) != 0 || fstat(rfd, &rst) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (!S_ISFIFO(st.st_mode) || !S_ISFIFO(rst.st_mode) || st.st_ino != rst.st_ino || st.st_dev != rst.st_dev) {
        PyErr_SetString(PyExc_ValueError, "the watch descriptors must be the two ends of one pipe");
        return -1;
    }
    int flags = fcntl(rfd, F_GETFL);
    if (flags < 0 || !(flags & O_NONBLOCK)) {
        if (flags < 0)
            PyErr_SetFromErrno(PyExc_OSError);
        else
            PyErr_SetString(PyExc_ValueError, "the watch pipe's read end must be non-blocking");
        return -1;
    }
    cproc_queue_header *h = ch->hdr;
    if (cproc_qlock_acquire(ch, CPROC_FOREVER) < 0)
        return -1;
    h->watch_pid = (uint32_t)cproc_pid;
    h->watch_fd = wfd;
    h->watch_ino = (uint64_t)st.st_ino;
    h->watch_gen++;
    ch->watch_wfd = wfd;
    ch->watch_rfd = rfd;
    cproc_channel_watch_sync(ch);
    cproc_qlock_release(ch);
    return 0;
}

int cproc_channel_unwatch(cproc_channel *ch)
{
    if (ch->watch_wfd < 0)
        return 0;
    cproc_queue_header *h = ch->hdr;
    if (cproc_qlock_acquire(ch, CPROC_FOREVER) < 0)
        return -1;
    if (h->watch_pid == (uint32_t)cproc_pid && h->watch_fd == ch->watch_wfd) {
        h->watch_pid = 0;
        h->watch_gen++;
    }
    cproc_qlock_release(ch);
    ch->watch_wfd = ch->watch_rfd = -1;
    return 0;
}

int cproc_channel_watch_poll_sync(cproc_channel *ch)
{
    if (cproc_qlock_acquire(ch, CPROC_FOREVER) < 0)
        return -1;
    cproc_channel_watch_sync(ch);
    cproc_qlock_release(ch);
    return 0;
}

/* ---- put ------------------------------------------------------------------ */

/* Move a large message's stream and buffers to a free block, written with
 * the queue's lock released; a message that stays in the ring (none free,
 * too small or too large, or made of many small buffers) is left as it is. */
static int message_spill(cproc_channel *ch, cproc_message *m)
{
    uint64_t bytes = cproc_message_spill_bytes(m);
    if (bytes == 0)
        return 0;
    if (cproc_qlock_acquire(ch, CPROC_FOREVER) < 0)
        return -1;
    int slot = cproc_spill_claim(ch->hdr->spill, ch->mem.fd, bytes);
    ch->hdr->spilled_recently = 1;
    cproc_qlock_release(ch);
    return slot < 0 ? 0 : cproc_message_spill(m, ch->hdr->spill, ch->mem.fd, slot);
}

typedef struct {
    cproc_channel *ch;
    cproc_message *msgs;
    Py_ssize_t n;
    int error;
} put_ctx;

/* Write the messages if there is room for all of them (bounded queues). */
static int try_put(void *ctx, uint32_t *seen)
{
    put_ctx *c = ctx;
    cproc_channel *ch = c->ch;
    cproc_queue_header *h = ch->hdr;
    uint64_t n = (uint64_t)c->n;
    *seen = atomic_load(&h->get_seq);
    if (h->maxsize > 0 && atomic_load(&h->count) + n > (uint64_t)h->maxsize)
        return 0;
    /* As multiprocessing's put: only a full queue makes it wait or fail, so
     * the lock is waited for as long as its holder copies. */
    if (cproc_qlock_acquire(ch, CPROC_FOREVER) < 0) {
        c->error = 1;
        return 1;
    }
    if (h->maxsize > 0 && atomic_load(&h->count) + n > (uint64_t)h->maxsize) {
        cproc_qlock_release(ch);
        return 0;
    }
    if (h->kind == CPROC_Q_JOINABLE && atomic_load(&h->unfinished) + n > (uint64_t)MAXSIZE_LIMIT) {
        cproc_qlock_release(ch);
        PyErr_SetString(PyExc_ValueError, "JoinableQueue: too many unfinished tasks");
        c->error = 1;
        return 1;
    }
    uint64_t need = 0;
    for (Py_ssize_t i = 0; i < c->n; i++)
        need += cproc_message_record_bytes(&c->msgs[i]);
    if (cproc_ring_reserve(&ch->ring, need) < 0) {
        cproc_qlock_release(ch);
        c->error = 1;
        return 1;
    }
    cproc_ring_desc *r = cproc_ring_now(&ch->ring);
    uint64_t tail = r->tail;
    for (Py_ssize_t i = 0; i < c->n; i++)
        if (cproc_message_write(&ch->ring, &c->msgs[i], &tail) < 0) {
            cproc_qlock_release(ch);    /* nothing of this batch was published */
            c->error = 1;
            return 1;
        }
    for (Py_ssize_t i = 0; i < c->n; i++)
        if (c->msgs[i].spill) {
            cproc_spill_queued(&h->spill[c->msgs[i].spill - 1]);
            c->msgs[i].spill_queued = 1;
        }
    cproc_crash_point(CPROC_DIE_PUT_BEFORE_TAIL);
    r->tail = tail;                     /* published: a death from here on is repaired */
    cproc_crash_point(CPROC_DIE_PUT_BEFORE_COUNT);
    cproc_ring_note_used(&ch->ring);
    if (h->kind == CPROC_Q_JOINABLE)
        atomic_fetch_add(&h->unfinished, (uint32_t)n);
    uint64_t before = atomic_fetch_add(&h->count, n);
    atomic_fetch_add(&h->put_seq, (uint32_t)n);
    if (before == 0)
        watch_notify(ch);
    cproc_qlock_release(ch);
    cproc_wake_waiters(&h->put_seq, &h->get_waiters, n > INT_MAX ? INT_MAX : (int)n);
    return 1;
}

int cproc_channel_put(cproc_channel *ch, cproc_message *msgs, Py_ssize_t n, int blocking, int64_t deadline)
{
    put_ctx c = {ch, msgs, n, 0};
    uint32_t seen;
    int r = CPROC_WAIT_OK;
    /* Large messages go to spill blocks first, unless a bounded queue has no
     * room for them now (they then wait in this process and are copied into
     * the ring once there is). */
    cproc_queue_header *h = ch->hdr;
    if (h->maxsize == 0 || atomic_load(&h->count) + (uint64_t)n <= (uint64_t)h->maxsize)
        for (Py_ssize_t i = 0; r == CPROC_WAIT_OK && i < n; i++)
            if (message_spill(ch, &msgs[i]) < 0)
                r = CPROC_WAIT_ERROR;
    if (r != CPROC_WAIT_OK)
        ;
    else if (try_put(&c, &seen))
        r = CPROC_WAIT_OK;
    else if (!blocking)
        r = CPROC_WAIT_TIMEOUT;
    else
        r = cproc_wait(&h->get_seq, &h->put_waiters, try_put, NULL, &c, deadline, 0);
    for (Py_ssize_t i = 0; i < n; i++)
        cproc_message_unspill(&msgs[i], h->spill, ch->mem.fd);
    if (r == CPROC_WAIT_ERROR || c.error)
        return -1;
    return r == CPROC_WAIT_TIMEOUT;
}

/* ---- take ----------------------------------------------------------------- */

typedef struct {
    cproc_channel *ch;
    Py_ssize_t max;
    cproc_popped *out;                  /* PyMem array, allocated under the lock */
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
    cproc_channel *ch = c->ch;
    cproc_queue_header *h = ch->hdr;
    *seen = atomic_load(&h->put_seq);
    if (atomic_load(&h->count) == 0)
        return 0;
    int locked = cproc_qlock_acquire(ch, c->deadline);
    if (locked <= 0) {
        c->error = locked < 0;
        c->timed_out = locked == 0;
        return 1;
    }
    uint64_t avail = atomic_load(&h->count);
    Py_ssize_t want = avail < (uint64_t)c->max ? (Py_ssize_t)avail : c->max;
    if (want == 0) {
        cproc_qlock_release(ch);
        return 0;
    }
    c->out = PyMem_Calloc((size_t)want, sizeof(cproc_popped));
    if (c->out == NULL) {
        cproc_qlock_release(ch);
        PyErr_NoMemory();
        c->error = 1;
        return 1;
    }
    Py_ssize_t n = 0;
    cproc_ring_desc *r = cproc_ring_now(&ch->ring);
    uint64_t head = r->head;
    int huge = 0;
    while (n < want) {
        uint64_t size = cproc_record_read(&ch->ring, h->spill, head, &c->out[n]);
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
    cproc_crash_point(CPROC_DIE_GET_BEFORE_HEAD);
    r->head = head;
    cproc_crash_point(CPROC_DIE_GET_BEFORE_COUNT);
    if (atomic_fetch_sub(&h->count, (uint64_t)n) == (uint64_t)n)
        watch_drain(ch);
    atomic_fetch_add(&h->get_seq, (uint32_t)n);
    for (uint64_t pos = old_head; huge && pos < head;) {
        uint64_t size = cproc_record_size(&ch->ring, pos);
        if (size == 0)
            break;
        if (size >= RELEASE_OVER)
            cproc_ring_release_pages(&ch->ring, pos, size);
        pos += size;
    }
    if (atomic_load(&h->count) == 0 && n > 0 && cproc_ring_emptied(&ch->ring)) {
        /* blocks give back the pages they keep when none was used in the window */
        if (!h->spilled_recently)
            cproc_spill_trim(h->spill, ch->mem.fd);
        h->spilled_recently = 0;
    }
    cproc_qlock_release(ch);
    if (n == 0) {
        PyMem_Free(c->out);
        c->out = NULL;
        c->error = 1;                   /* cproc_record_read set the exception */
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

int cproc_channel_take(cproc_channel *ch, Py_ssize_t max, int blocking, int64_t deadline,
                       _Atomic uint64_t *claim, cproc_poll_fn stop_fn, void *stop_ctx,
                       cproc_popped **out, Py_ssize_t *n)
{
    get_ctx c = {.ch = ch, .max = max, .deadline = blocking ? deadline : CPROC_NOWAIT, .claim = claim,
                 .stop_fn = stop_fn, .stop_ctx = stop_ctx};
    uint32_t seen;
    int r;
    *out = NULL;
    *n = 0;
    if (try_get(&c, &seen))
        r = CPROC_WAIT_OK;
    else if (!blocking)
        r = CPROC_WAIT_TIMEOUT;
    else
        r = cproc_wait(&ch->hdr->put_seq, &ch->hdr->get_waiters, try_get, stop_fn ? get_stop : NULL, &c,
                       deadline, 0);
    if (r == CPROC_WAIT_ERROR || c.error)
        return -1;
    if (c.stopped)
        return 2;
    if (r == CPROC_WAIT_TIMEOUT || c.timed_out)
        return 1;
    /* Records in spill blocks: copied now that the lock is free. A failure
     * here (pread on our own memfd: not expected) loses what was taken. */
    for (Py_ssize_t i = 0; i < c.n; i++)
        if (cproc_popped_fill(&c.out[i], ch->hdr->spill, ch->mem.fd) < 0) {
            for (Py_ssize_t j = 0; j < c.n; j++) {
                cproc_popped_unspill(&c.out[j], ch->hdr->spill, ch->mem.fd);
                cproc_popped_clear(&c.out[j]);
            }
            PyMem_Free(c.out);
            return -1;
        }
    *out = c.out;
    *n = c.n;
    return 0;
}

/* ---- the Pool's transport (pool.c) ------------------------------------- */

int cproc_channel_put_batch(cproc_channel *ch, PyObject *const *objs, const uint64_t *tags, Py_ssize_t n,
                            PyObject *dumps, PyObject **errors)
{
    cproc_message *msgs = PyMem_Calloc(n > 0 ? (size_t)n : 1, sizeof(cproc_message));
    if (msgs == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t ready = 0;
    int r = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        errors[i] = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (cproc_message_init(&msgs[ready], objs[i], dumps) < 0) {
            if ((errors[i] = cproc_fetch_exception()) == NULL) {
                PyErr_SetString(PyExc_SystemError, "pickling failed without an exception");
                r = -1;
                break;
            }
            continue;
        }
        msgs[ready++].tag = tags[i];
    }
    if (r == 0 && ready > 0)
        r = cproc_channel_put(ch, msgs, ready, 1, CPROC_FOREVER) < 0 ? -1 : 0;
    for (Py_ssize_t i = 0; i < ready; i++)
        cproc_message_clear(&msgs[i]);
    PyMem_Free(msgs);
    if (r < 0)
        for (Py_ssize_t i = 0; i < n; i++)
            Py_CLEAR(errors[i]);
    return r;
}

Py_ssize_t cproc_channel_take_batch(cproc_channel *ch, Py_ssize_t max, int64_t deadline, _Atomic uint64_t *claim,
                                    cproc_poll_fn stop_fn, void *stop_ctx,
                                    uint64_t *tags, PyObject **objs, int *ok)
{
    cproc_popped *out;
    Py_ssize_t n;
    int r = cproc_channel_take(ch, max, deadline != CPROC_NOWAIT, deadline, claim, stop_fn, stop_ctx, &out, &n);
    if (r != 0)
        return r < 0 ? -1 : 0;          /* timed out, or stop_fn ended the wait */
    for (Py_ssize_t i = 0; i < n; i++) {
        tags[i] = out[i].tag;
        objs[i] = cproc_popped_decode(&out[i]);
        ok[i] = objs[i] != NULL;
        if (!ok[i] && (objs[i] = cproc_fetch_exception()) == NULL)
            objs[i] = Py_NewRef(Py_None);
        cproc_popped_clear(&out[i]);
    }
    PyMem_Free(out);
    return n;
}
