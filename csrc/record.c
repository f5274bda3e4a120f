/* record.c — the records of a queue's ring: objects to records and back.
 *
 * A record is a record_header, then for pickles with out-of-band buffers
 * (pickle protocol 5: NumPy arrays, memoryviews) a table of buffer lengths,
 * the pickle stream and the buffers. Exact bytes and bytearray objects
 * travel raw, small plain data (plain.c) in its own compact encoding.
 *
 * A message of SPILL_OVER bytes or more goes to a block of its own (spill.c)
 * when one is free: the ring then holds a K_SPILLED record (a spill_ref and
 * the buffer table) and the block the stream and the buffers. Its producer
 * writes the block before taking the queue's lock, its consumer reads it
 * after releasing the lock (cproc_popped_fill). The lock itself and when
 * records are published are channel.c's.
 */
#include "cproc.h"

#include <string.h>

#define SPILL_OVER (256u << 10)         /* a payload this large goes to a block of its own */
#define SPILL_MAX_BUFFERS 64            /* (one pwrite/pread each: more stay in the ring) */
#define PLAIN_MAX_BYTES 4096            /* larger plain data goes through pickle */

enum { K_PICKLE = 1, K_BYTES = 2, K_BYTEARRAY = 3, K_PLAIN = 4, K_SPILLED = 5 };
enum { BUF_READONLY = 1 };

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

static PyObject *pickle_loads, *str_buffers;
static PyObject *py_dumps;              /* cproc.queues._dumps, imported on first use */

static inline uint64_t align8(uint64_t n) { return (n + 7) & ~(uint64_t)7; }

/* ---- messages: objects to records --------------------------------------- */

void cproc_message_clear(cproc_message *m)
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

int cproc_message_init(cproc_message *m, PyObject *obj, PyObject *dumps)
{
    static const cproc_import_name names[] = {{"cproc.queues", "_dumps", &py_dumps}, {NULL}};
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
        if (dumps == NULL && cproc_import_names(names) < 0)
            return -1;
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
            cproc_message_clear(m);
            return -1;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            if (PyObject_GetBuffer(PyList_GET_ITEM(m->buffer_list, i), &m->bufs[i], PyBUF_ANY_CONTIGUOUS) < 0) {
                cproc_message_clear(m);
                return -1;
            }
            m->nbuf = i + 1;
            m->size += sizeof(buffer_entry) + (uint64_t)m->bufs[i].len;
        }
        if (n > UINT32_MAX) {
            PyErr_SetString(PyExc_ValueError, "too many out-of-band buffers");
            cproc_message_clear(m);
            return -1;
        }
    }
    return 0;
}

/* The size of its record in the ring: the whole payload, or for a message
 * in a spill block its spill_ref and buffer table. */
static inline uint64_t message_ring_payload(const cproc_message *m)
{
    return m->spill ? sizeof(spill_ref) + (uint64_t)m->nbuf * sizeof(buffer_entry) : m->size;
}

uint64_t cproc_message_record_bytes(const cproc_message *m)
{
    return sizeof(record_header) + align8(message_ring_payload(m));
}

int cproc_message_write(cproc_ring *r, const cproc_message *m, uint64_t *at)
{
    uint64_t pos = *at;
    record_header rh = {message_ring_payload(m), m->spill ? K_SPILLED : m->kind, (uint32_t)m->nbuf, m->tag};
    if (cproc_ring_write(r, pos, &rh, sizeof rh) < 0)
        return -1;
    pos += sizeof rh;
    if (m->spill) {
        spill_ref ref = {(uint32_t)(m->spill - 1), m->kind, m->size - (uint64_t)m->nbuf * sizeof(buffer_entry)};
        if (cproc_ring_write(r, pos, &ref, sizeof ref) < 0)
            return -1;
        pos += sizeof ref;
    }
    for (Py_ssize_t i = 0; i < m->nbuf; i++) {
        buffer_entry e = {(uint64_t)m->bufs[i].len, m->bufs[i].readonly ? BUF_READONLY : 0};
        if (cproc_ring_write(r, pos, &e, sizeof e) < 0)
            return -1;
        pos += sizeof e;
    }
    if (m->spill == 0) {
        if (cproc_ring_write(r, pos, m->data.buf, (size_t)m->data.len) < 0)
            return -1;
        pos += (uint64_t)m->data.len;
        for (Py_ssize_t i = 0; i < m->nbuf; i++) {
            if (cproc_ring_write(r, pos, m->bufs[i].buf, (size_t)m->bufs[i].len) < 0)
                return -1;
            pos += (uint64_t)m->bufs[i].len;
        }
    }
    *at += cproc_message_record_bytes(m);
    return 0;
}

/* ---- messages in spill blocks (spill.c) --------------------------------- */

uint64_t cproc_message_spill_bytes(const cproc_message *m)
{
    uint64_t bytes = m->size - (uint64_t)m->nbuf * sizeof(buffer_entry);
    if (bytes < SPILL_OVER || bytes > CPROC_SPILL_SPAN || m->nbuf > SPILL_MAX_BUFFERS)
        return 0;
    return bytes;
}

int cproc_message_spill(cproc_message *m, cproc_spill_slot *slots, int fd, int slot)
{
    uint64_t off = cproc_spill_offset(slot);
    int r = cproc_file_write(fd, m->data.buf, (size_t)m->data.len, off);
    off += (uint64_t)m->data.len;
    for (Py_ssize_t i = 0; r == 0 && i < m->nbuf; i++) {
        r = cproc_file_write(fd, m->bufs[i].buf, (size_t)m->bufs[i].len, off);
        off += (uint64_t)m->bufs[i].len;
    }
    if (r < 0) {
        cproc_spill_free(slots, slot, fd, 0);
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

void cproc_message_unspill(cproc_message *m, cproc_spill_slot *slots, int fd)
{
    if (m->spill && !m->spill_queued)
        cproc_spill_free(slots, m->spill - 1, fd, 0);
    m->spill = 0;
}

/* ---- records back to objects -------------------------------------------- */

void cproc_popped_unspill(cproc_popped *p, cproc_spill_slot *slots, int fd)
{
    if (p->spill)
        cproc_spill_free(slots, p->spill - 1, fd, p->spill_bytes);
    p->spill = 0;
}

void cproc_popped_clear(cproc_popped *p)
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

uint64_t cproc_record_read(cproc_ring *r, cproc_spill_slot *slots, uint64_t pos, cproc_popped *p)
{
    record_header rh;
    if (cproc_ring_read(r, pos, &rh, sizeof rh) < 0)
        return 0;
    uint64_t total = sizeof rh + align8(rh.size);
    uint64_t table = (uint64_t)rh.nbuf * sizeof(buffer_entry);
    if (total > cproc_ring_now(r)->tail - pos || rh.kind < K_PICKLE || rh.kind > K_SPILLED || table > rh.size)
        return corrupted();
    pos += sizeof rh;
    uint32_t kind = rh.kind;
    uint64_t data_len = rh.size - table;        /* the stream and the buffers */
    spill_ref ref = {0};
    if (rh.kind == K_SPILLED) {
        if (rh.size != sizeof ref + table)
            return corrupted();
        if (cproc_ring_read(r, pos, &ref, sizeof ref) < 0)
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
        if (cproc_ring_read(r, pos, entries, table) < 0) {
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
            cproc_popped_clear(p);
            return 0;
        }
    }
    p->data = new_buffer_object(kind != K_BYTEARRAY, data_len);
    if (p->data == NULL) {
        cproc_popped_clear(p);
        return 0;
    }
    if (rh.kind == K_SPILLED) {
        if (cproc_spill_take(&slots[ref.slot]) < 0) {
            cproc_popped_clear(p);
            return corrupted();
        }
        p->spill = (int)ref.slot + 1;
        p->spill_bytes = ref.bytes;
        return total;
    }
    if (cproc_ring_read(r, pos, buffer_object_data(p->data), (size_t)data_len) < 0) {
        cproc_popped_clear(p);
        return 0;
    }
    pos += data_len;
    for (uint32_t i = 0; i < p->nbuf; i++) {
        PyObject *b = p->buffers[i];
        Py_ssize_t len = buffer_object_size(b);
        if (cproc_ring_read(r, pos, buffer_object_data(b), (size_t)len) < 0) {
            cproc_popped_clear(p);
            return 0;
        }
        pos += (uint64_t)len;
    }
    return total;
}

uint64_t cproc_record_size(cproc_ring *r, uint64_t pos)
{
    record_header rh;
    if (cproc_ring_read(r, pos, &rh, sizeof rh) < 0)
        return 0;
    return sizeof rh + align8(rh.size);
}

uint64_t cproc_records_scan(cproc_ring *r, uint8_t *in_ring)
{
    cproc_ring_desc *d = cproc_ring_now(r);
    uint64_t n = 0;
    for (uint64_t pos = d->head; pos < d->tail; n++) {
        record_header rh;
        (void)cproc_ring_read(r, pos, &rh, sizeof rh);
        uint64_t size = sizeof rh + align8(rh.size);
        if (rh.kind < K_PICKLE || rh.kind > K_SPILLED || rh.size > d->tail - pos || size > d->tail - pos) {
            d->tail = pos;              /* not a record: cannot happen, but never loop on it */
            break;
        }
        if (rh.kind == K_SPILLED && rh.size >= sizeof(spill_ref)) {
            spill_ref ref;
            (void)cproc_ring_read(r, pos + sizeof rh, &ref, sizeof ref);
            if (ref.slot < CPROC_SPILL_SLOTS)
                in_ring[ref.slot] = 1;
        }
        pos += size;
    }
    return n;
}

int cproc_popped_fill(cproc_popped *p, cproc_spill_slot *slots, int fd)
{
    if (p->spill == 0)
        return 0;
    uint64_t off = cproc_spill_offset(p->spill - 1);
    Py_ssize_t len = buffer_object_size(p->data);
    int r = cproc_file_read(fd, buffer_object_data(p->data), (size_t)len, off);
    off += (uint64_t)len;
    for (uint32_t i = 0; r == 0 && i < p->nbuf; i++) {
        len = buffer_object_size(p->buffers[i]);
        r = cproc_file_read(fd, buffer_object_data(p->buffers[i]), (size_t)len, off);
        off += (uint64_t)len;
    }
    cproc_popped_unspill(p, slots, fd);
    return r;
}

PyObject *cproc_popped_decode(cproc_popped *p)
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

int cproc_record_init(void)
{
    static const cproc_import_name names[] = {{"pickle", "loads", &pickle_loads}, {NULL}};
    if (cproc_import_names(names) < 0)
        return -1;
    str_buffers = PyUnicode_InternFromString("buffers");
    return str_buffers == NULL ? -1 : 0;
}
