/* connection.c — Connection (the two ends of a Pipe) and waiting on fds.
 *
 * Owns: the message framing of multiprocessing.connection, byte for byte (a
 * 4-byte big-endian length, or -1 and an 8-byte length above 2 GiB, then the
 * payload), written with one writev() per message and read straight into the
 * result; poll(); and wait_fds(), the core of cproc.connection.wait().
 * Never blocks with the GIL held; EINTR runs the signal handlers (Ctrl+C
 * raises KeyboardInterrupt), then the call goes on. A truncated or corrupt
 * frame raises EOFError/OSError, never reads out of bounds.
 */
#include "cproc.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stddef.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

/* wait_fds(fds, timeout=None) -> list of the fds that are ready (readable,
 * hung up or in error), empty when the timeout passed first. */
PyObject *cproc_wait_fds(PyObject *module, PyObject *args)
{
    (void)module;
    PyObject *fds_obj, *timeout = Py_None;
    if (!PyArg_ParseTuple(args, "O|O:wait_fds", &fds_obj, &timeout))
        return NULL;
    int64_t deadline;
    if (cproc_deadline_from_timeout(timeout, &deadline) < 0)
        return NULL;
    PyObject *seq = PySequence_Fast(fds_obj, "fds must be a sequence of ints");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    struct pollfd *pfds = PyMem_Calloc(n > 0 ? (size_t)n : 1, sizeof *pfds);
    PyObject *ready = NULL;
    if (pfds == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        long fd = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if (fd == -1 && PyErr_Occurred())
            goto done;
        if (fd < 0 || fd > INT32_MAX) {
            PyErr_Format(PyExc_ValueError, "invalid file descriptor %ld", fd);
            goto done;
        }
        pfds[i].fd = (int)fd;
        pfds[i].events = POLLIN;
    }
    if (cproc_poll_until(pfds, (unsigned long)n, deadline) < 0)
        goto done;
    ready = PyList_New(0);
    for (Py_ssize_t i = 0; ready != NULL && i < n; i++) {
        if (pfds[i].revents == 0)
            continue;
        if (PyList_Append(ready, PySequence_Fast_GET_ITEM(seq, i)) < 0)
            Py_CLEAR(ready);
    }
done:
    PyMem_Free(pfds);
    Py_DECREF(seq);
    return ready;
}

/* ======================================================================== */
/* Connection                                                                */
/* ======================================================================== */

typedef struct {
    PyObject_HEAD
    int fd;               /* -1 once closed */
    char readable;
    char writable;
    PyObject *weakreflist;
} ConnectionObject;

static PyObject *pickle_dumps;     /* cproc.reduction.dumps */
static PyObject *pickle_loads;     /* pickle.loads */
static PyObject *BufferTooShort;   /* multiprocessing.BufferTooShort */

static int load_helpers(void)
{
    static const cproc_import_name names[] = {
        {"cproc.reduction", "dumps", &pickle_dumps},
        {"pickle", "loads", &pickle_loads},
        {"multiprocessing", "BufferTooShort", &BufferTooShort},
        {NULL}};
    return cproc_import_names(names);
}

static int check_open(ConnectionObject *self)
{
    if (self->fd < 0) {
        PyErr_SetString(PyExc_OSError, "handle is closed");
        return -1;
    }
    return 0;
}

/* Open, and `allowed` (readable or writable), else OSError(refusal). */
static int check_usable(ConnectionObject *self, int allowed, const char *refusal)
{
    if (check_open(self) < 0)
        return -1;
    if (!allowed) {
        PyErr_SetString(PyExc_OSError, refusal);
        return -1;
    }
    return 0;
}

static int check_readable(ConnectionObject *self)
{
    return check_usable(self, self->readable, "connection is write-only");
}

static int check_writable(ConnectionObject *self)
{
    return check_usable(self, self->writable, "connection is read-only");
}

/* A read or write failed with err: EINTR runs the signal handlers, then 1
 * (try again); anything else is OSError, -1. */
static int io_failed(int err)
{
    if (err == EINTR)
        return PyErr_CheckSignals() < 0 ? -1 : 1;
    errno = err;
    PyErr_SetFromErrno(PyExc_OSError);
    return -1;
}

/* Write every byte of iov[0..n), GIL released; -1 with an exception. */
static int write_all(int fd, struct iovec *iov, int n)
{
    while (n > 0) {
        ssize_t w;
        int err;
        if (PyErr_CheckSignals() < 0)
            return -1;
        Py_BEGIN_ALLOW_THREADS
        w = writev(fd, iov, n);
        err = errno;
        Py_END_ALLOW_THREADS
        if (w < 0) {
            if (io_failed(err) < 0)
                return -1;
            continue;
        }
        /* A signal that arrives mid-write shortens the write instead of
         * failing it with EINTR: the check at the top of the loop runs it. */
        while (n > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

/* Read exactly len bytes, GIL released. 0 ok; -1 error. As in
 * multiprocessing, an EOF before the first byte of a read is EOFError and an
 * EOF in the middle of one is OSError. */
static int read_exact(int fd, char *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t r;
        int err;
        /* a signal that came while we were not inside read() interrupts nothing */
        if (PyErr_CheckSignals() < 0)
            return -1;
        Py_BEGIN_ALLOW_THREADS
        r = read(fd, buf + got, len - got);
        err = errno;
        Py_END_ALLOW_THREADS
        if (r > 0) {
            got += (size_t)r;
            continue;
        }
        if (r == 0) {
            if (got == 0)
                PyErr_SetNone(PyExc_EOFError);
            else
                PyErr_SetString(PyExc_OSError, "got end of file during message");
            return -1;
        }
        if (io_failed(err) < 0)
            return -1;
    }
    return 0;
}

/* A message often arrives within microseconds (a request/reply peer on
 * another core): poll for it before sleeping in read(), whose wake-up costs
 * more, as long as the wait policy (spin.c) says spinning pays for this
 * connection. GIL released. */
static void spin_until_readable(ConnectionObject *self)
{
    Py_BEGIN_ALLOW_THREADS
    cproc_spinner spin;
    if (cproc_spin_begin(&spin, self, 0))
        for (;;) {
            struct pollfd p = {self->fd, POLLIN, 0};
            if (poll(&p, 1, 0) != 0 || !cproc_spin_again(&spin))
                break;      /* readable, hung up, an error read() will report, or sleep */
        }
    cproc_spin_end(&spin);
    Py_END_ALLOW_THREADS
}

static int send_frame(ConnectionObject *self, const char *data, size_t n)
{
    unsigned char header[12];
    struct iovec iov[2];
    if (n > 0x7fffffff) {
        uint64_t big = n;
        header[0] = header[1] = header[2] = header[3] = 0xff;   /* -1: an 8-byte length follows */
        for (int i = 0; i < 8; i++)
            header[4 + i] = (unsigned char)(big >> (56 - 8 * i));
        iov[0].iov_len = 12;
    } else {
        uint32_t small = (uint32_t)n;
        for (int i = 0; i < 4; i++)
            header[i] = (unsigned char)(small >> (24 - 8 * i));
        iov[0].iov_len = 4;
    }
    iov[0].iov_base = header;
    iov[1].iov_base = (void *)data;
    iov[1].iov_len = n;
    return write_all(self->fd, iov, n > 0 ? 2 : 1);
}

/* Read a frame header; -1 error, else the payload size in *size. */
static int recv_header(ConnectionObject *self, Py_ssize_t *size)
{
    unsigned char h[8];
    spin_until_readable(self);
    if (read_exact(self->fd, (char *)h, 4) < 0)
        return -1;
    int32_t small = (int32_t)(((uint32_t)h[0] << 24) | ((uint32_t)h[1] << 16) | ((uint32_t)h[2] << 8) | h[3]);
    if (small >= 0) {
        *size = small;
        return 0;
    }
    if (small != -1) {
        PyErr_SetString(PyExc_OSError, "bad message length");
        return -1;
    }
    if (read_exact(self->fd, (char *)h, 8) < 0)
        return -1;
    uint64_t big = 0;
    for (int i = 0; i < 8; i++)
        big = (big << 8) | h[i];
    if (big > (uint64_t)PY_SSIZE_T_MAX) {
        PyErr_SetString(PyExc_OSError, "bad message length");
        return -1;
    }
    *size = (Py_ssize_t)big;
    return 0;
}

static PyObject *recv_payload(ConnectionObject *self, Py_ssize_t size)
{
    PyObject *bytes = PyBytes_FromStringAndSize(NULL, size);
    if (bytes == NULL)
        return NULL;
    if (read_exact(self->fd, PyBytes_AS_STRING(bytes), (size_t)size) < 0) {
        Py_DECREF(bytes);
        return NULL;
    }
    return bytes;
}

static int connection_init(ConnectionObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"handle", "readable", "writable", NULL};
    PyObject *handle;
    int readable = 1, writable = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|pp:Connection", kwlist, &handle, &readable, &writable))
        return -1;
    PyObject *index = PyNumber_Index(handle);
    if (index == NULL)
        return -1;
    long fd = PyLong_AsLong(index);
    Py_DECREF(index);
    if (fd == -1 && PyErr_Occurred())
        return -1;
    if (fd < 0 || fd > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "invalid handle");
        return -1;
    }
    if (!readable && !writable) {
        PyErr_SetString(PyExc_ValueError, "at least one of `readable` and `writable` must be True");
        return -1;
    }
    if (self->fd >= 0)
        close(self->fd);
    self->fd = (int)fd;
    self->readable = (char)readable;
    self->writable = (char)writable;
    return 0;
}

static PyObject *connection_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args; (void)kwds;
    ConnectionObject *self = (ConnectionObject *)type->tp_alloc(type, 0);
    if (self != NULL)
        self->fd = -1;
    return (PyObject *)self;
}

static void connection_dealloc(ConnectionObject *self)
{
    if (self->weakreflist != NULL)
        PyObject_ClearWeakRefs((PyObject *)self);
    if (self->fd >= 0)
        close(self->fd);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* An offset or size of send_bytes as a Py_ssize_t clamped to [-1, PY_SSIZE_T_MAX]
 * (so that any int compares as multiprocessing compares it); -2 with an exception
 * for what cannot index a slice. */
static Py_ssize_t clamped_index(PyObject *obj)
{
    if (!PyIndex_Check(obj)) {
        PyErr_SetString(PyExc_TypeError, "slice indices must be integers or None or have an __index__ method");
        return -2;
    }
    PyObject *index = PyNumber_Index(obj);
    if (index == NULL)
        return -2;
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(index, &overflow);
    Py_DECREF(index);
    if (v == -1 && PyErr_Occurred())
        return -2;
    if (overflow > 0 || (overflow == 0 && v > PY_SSIZE_T_MAX))
        return PY_SSIZE_T_MAX;
    if (overflow < 0 || v < 0)
        return -1;
    return (Py_ssize_t)v;
}

/* send_bytes(buf, offset=0, size=None): checked as multiprocessing checks
 * them (its messages), for offsets and sizes of any magnitude; a buffer that
 * is not C-contiguous is a TypeError (multiprocessing cannot send one either). */
static PyObject *connection_send_bytes(ConnectionObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"buf", "offset", "size", NULL};
    PyObject *buf, *offset_obj = NULL, *size_obj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|OO:send_bytes", kwlist, &buf, &offset_obj, &size_obj))
        return NULL;
    if (check_writable(self) < 0)
        return NULL;
    PyObject *mview = PyMemoryView_FromObject(buf);   /* multiprocessing's error for a non-buffer */
    if (mview == NULL)
        return NULL;
    PyObject *result = NULL;
    Py_buffer *view = PyMemoryView_GET_BUFFER(mview);
    if (!PyBuffer_IsContiguous(view, 'C')) {
        PyErr_SetString(PyExc_TypeError, "memoryview: underlying buffer is not C-contiguous");
        goto done;
    }
    Py_ssize_t n = view->len, offset = 0, size;
    if (offset_obj != NULL && (offset = clamped_index(offset_obj)) < -1)
        goto done;
    if (offset < 0) {
        PyErr_SetString(PyExc_ValueError, "offset is negative");
        goto done;
    }
    if (n < offset) {
        PyErr_SetString(PyExc_ValueError, "buffer length < offset");
        goto done;
    }
    if (size_obj == Py_None)
        size = n - offset;
    else {
        if ((size = clamped_index(size_obj)) < -1)
            goto done;
        if (size < 0) {
            PyErr_SetString(PyExc_ValueError, "size is negative");
            goto done;
        }
        if (size > n - offset) {
            PyErr_SetString(PyExc_ValueError, "buffer length < offset + size");
            goto done;
        }
    }
    if (send_frame(self, (const char *)view->buf + offset, (size_t)size) == 0) {
        result = Py_None;
        Py_INCREF(result);
    }
done:
    Py_DECREF(mview);
    return result;
}

/* send(obj): by position or, as multiprocessing's, by keyword */
static PyObject *connection_send(ConnectionObject *self, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kwnames)
{
    static const char *const names[] = {"obj", NULL};
    PyObject *obj;
    if (nargs == 1 && kwnames == NULL)
        obj = args[0];
    else if (cproc_parse_args("send", args, nargs, kwnames, names, 1, &obj) < 0)
        return NULL;
    if (check_writable(self) < 0 || load_helpers() < 0)
        return NULL;
    PyObject *data = PyObject_CallOneArg(pickle_dumps, obj);   /* pickling errors: nothing sent */
    if (data == NULL)
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        Py_DECREF(data);
        return NULL;
    }
    int r = send_frame(self, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    Py_DECREF(data);
    if (r < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *connection_recv_bytes(ConnectionObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"maxlength", NULL};
    PyObject *maxobj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:recv_bytes", kwlist, &maxobj))
        return NULL;
    if (check_readable(self) < 0)
        return NULL;
    /* maxlength is compared as multiprocessing compares it (`maxlength < 0`,
     * then `size > maxlength`): an int, or any number such as 2.5 */
    Py_ssize_t maxlength = PY_SSIZE_T_MAX;
    PyObject *maxnum = NULL;          /* a maxlength that is not a C Py_ssize_t */
    if (maxobj != Py_None) {
        if (PyLong_Check(maxobj)) {
            int overflow;
            long long v = PyLong_AsLongLongAndOverflow(maxobj, &overflow);
            if (v == -1 && PyErr_Occurred())
                return NULL;
            if (overflow < 0 || (overflow == 0 && v < 0)) {
                PyErr_SetString(PyExc_ValueError, "negative maxlength");
                return NULL;
            }
            if (overflow == 0 && v < PY_SSIZE_T_MAX)
                maxlength = (Py_ssize_t)v;
        }
        else {
            PyObject *zero = PyLong_FromLong(0);
            if (zero == NULL)
                return NULL;
            int negative = PyObject_RichCompareBool(maxobj, zero, Py_LT);
            Py_DECREF(zero);
            if (negative < 0)
                return NULL;
            if (negative) {
                PyErr_SetString(PyExc_ValueError, "negative maxlength");
                return NULL;
            }
            maxnum = maxobj;
        }
    }
    Py_ssize_t size;
    if (recv_header(self, &size) < 0)
        return NULL;
    int too_long = size > maxlength;
    if (maxnum != NULL) {
        PyObject *size_obj = PyLong_FromSsize_t(size);
        if (size_obj == NULL)
            return NULL;
        too_long = PyObject_RichCompareBool(size_obj, maxnum, Py_GT);
        Py_DECREF(size_obj);
        if (too_long < 0)
            return NULL;
    }
    if (too_long) {
        /* as multiprocessing: the rest of the stream can no longer be trusted */
        if (self->writable)
            self->readable = 0;
        else {
            close(self->fd);
            self->fd = -1;
        }
        PyErr_SetString(PyExc_OSError, "bad message length");
        return NULL;
    }
    return recv_payload(self, size);
}

static PyObject *connection_recv(ConnectionObject *self, PyObject *unused)
{
    (void)unused;
    if (check_readable(self) < 0 || load_helpers() < 0)
        return NULL;
    Py_ssize_t size;
    if (recv_header(self, &size) < 0)
        return NULL;
    PyObject *data = recv_payload(self, size);
    if (data == NULL)
        return NULL;
    PyObject *obj = PyObject_CallOneArg(pickle_loads, data);
    Py_DECREF(data);
    return obj;
}

static PyObject *connection_recv_bytes_into(ConnectionObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"buf", "offset", NULL};
    Py_buffer view;
    Py_ssize_t offset = 0;
    if (check_readable(self) < 0 || load_helpers() < 0)
        return NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "w*|n:recv_bytes_into", kwlist, &view, &offset))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t size;
    if (offset < 0) {
        PyErr_SetString(PyExc_ValueError, "negative offset");
        goto done;
    }
    if (offset > view.len) {
        PyErr_SetString(PyExc_ValueError, "offset too large");
        goto done;
    }
    if (recv_header(self, &size) < 0)
        goto done;
    if (size > view.len - offset) {
        PyObject *whole = recv_payload(self, size);   /* the message is consumed, as multiprocessing */
        if (whole != NULL) {
            PyErr_SetObject(BufferTooShort, whole);
            Py_DECREF(whole);
        }
        goto done;
    }
    if (read_exact(self->fd, (char *)view.buf + offset, (size_t)size) == 0)
        result = PyLong_FromSsize_t(size);
done:
    PyBuffer_Release(&view);
    return result;
}

static PyObject *connection_poll(ConnectionObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"timeout", NULL};
    PyObject *timeout = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:poll", kwlist, &timeout))
        return NULL;
    if (check_readable(self) < 0)
        return NULL;
    PyObject *zero = NULL;
    if (timeout == NULL) {
        zero = PyFloat_FromDouble(0.0);
        if (zero == NULL)
            return NULL;
        timeout = zero;
    }
    PyObject *fds = Py_BuildValue("([i]O)", self->fd, timeout);
    Py_XDECREF(zero);
    if (fds == NULL)
        return NULL;
    PyObject *ready = cproc_wait_fds(NULL, fds);
    Py_DECREF(fds);
    if (ready == NULL)
        return NULL;
    int any = PyList_GET_SIZE(ready) > 0;
    Py_DECREF(ready);
    return PyBool_FromLong(any);
}

static PyObject *connection_fileno(ConnectionObject *self, PyObject *unused)
{
    (void)unused;
    if (check_open(self) < 0)
        return NULL;
    return PyLong_FromLong(self->fd);
}

static PyObject *connection_close(ConnectionObject *self, PyObject *unused)
{
    (void)unused;
    if (self->fd >= 0) {
        int fd = self->fd;
        self->fd = -1;
        if (close(fd) != 0 && errno != EINTR)
            return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

static PyObject *connection_enter(ConnectionObject *self, PyObject *unused)
{
    (void)unused;
    Py_INCREF(self);
    return (PyObject *)self;
}

static PyObject *connection_exit(ConnectionObject *self, PyObject *args)
{
    PyObject *exc_type, *exc_value, *exc_tb;
    if (!PyArg_UnpackTuple(args, "__exit__", 3, 3, &exc_type, &exc_value, &exc_tb))
        return NULL;
    return connection_close(self, NULL);
}

static PyObject *connection_get_closed(ConnectionObject *self, void *c) { (void)c; return PyBool_FromLong(self->fd < 0); }
static PyObject *connection_get_readable(ConnectionObject *self, void *c) { (void)c; return PyBool_FromLong(self->readable); }
static PyObject *connection_get_writable(ConnectionObject *self, void *c) { (void)c; return PyBool_FromLong(self->writable); }

/* _handle, as multiprocessing's private attribute: the fd, None once closed.
 * Setting it to None forgets the fd without closing it (CPython's tests do so
 * to keep a Connection made on a bogus fd from closing it when collected). */
static PyObject *connection_get_handle(ConnectionObject *self, void *c)
{
    (void)c;
    if (self->fd < 0)
        Py_RETURN_NONE;
    return PyLong_FromLong(self->fd);
}

static int connection_set_handle(ConnectionObject *self, PyObject *value, void *c)
{
    (void)c;
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete _handle");
        return -1;
    }
    if (value == Py_None) {
        self->fd = -1;
        return 0;
    }
    long fd = PyLong_AsLong(value);
    if (fd == -1 && PyErr_Occurred())
        return -1;
    if (fd < 0 || fd > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "invalid handle");
        return -1;
    }
    self->fd = (int)fd;
    return 0;
}

/* The docstrings open with a text signature ("name($self, ...)\n--\n\n"):
 * inspect.signature() gives multiprocessing's parameters and defaults. */
static PyMethodDef connection_methods[] = {
    {"send", (PyCFunction)(void (*)(void))connection_send, METH_FASTCALL | METH_KEYWORDS,
     "send($self, obj)\n--\n\nSend a (picklable) object"},
    {"recv", (PyCFunction)connection_recv, METH_NOARGS,
     "recv($self)\n--\n\nReceive a (picklable) object"},
    {"send_bytes", (PyCFunction)(void (*)(void))connection_send_bytes, METH_VARARGS | METH_KEYWORDS,
     "send_bytes($self, buf, offset=0, size=None)\n--\n\n"
     "Send the bytes data from a bytes-like object"},
    {"recv_bytes", (PyCFunction)(void (*)(void))connection_recv_bytes, METH_VARARGS | METH_KEYWORDS,
     "recv_bytes($self, maxlength=None)\n--\n\n"
     "Receive bytes data as a bytes object."},
    {"recv_bytes_into", (PyCFunction)(void (*)(void))connection_recv_bytes_into, METH_VARARGS | METH_KEYWORDS,
     "recv_bytes_into($self, buf, offset=0)\n--\n\n"
     "Receive bytes data into a writeable bytes-like object.\nReturn the number of bytes read."},
    {"poll", (PyCFunction)(void (*)(void))connection_poll, METH_VARARGS | METH_KEYWORDS,
     "poll($self, timeout=0.0)\n--\n\n"
     "Whether there is any input available to be read"},
    {"fileno", (PyCFunction)connection_fileno, METH_NOARGS,
     "fileno($self)\n--\n\nFile descriptor or handle of the connection"},
    {"close", (PyCFunction)connection_close, METH_NOARGS,
     "close($self)\n--\n\nClose the connection"},
    {"__enter__", (PyCFunction)connection_enter, METH_NOARGS, "__enter__($self)\n--\n\n"},
    {"__exit__", (PyCFunction)connection_exit, METH_VARARGS,
     "__exit__($self, exc_type, exc_value, exc_tb, /)\n--\n\nClose the connection"},
    {NULL}
};

static PyGetSetDef connection_getset[] = {
    {"closed", (getter)connection_get_closed, NULL, "True if the connection is closed", NULL},
    {"readable", (getter)connection_get_readable, NULL, "True if the connection is readable", NULL},
    {"writable", (getter)connection_get_writable, NULL, "True if the connection is writable", NULL},
    {"_handle", (getter)connection_get_handle, (setter)connection_set_handle,
     "The file descriptor (None once closed); set to None to forget it without closing", NULL},
    {NULL}
};

PyTypeObject cproc_ConnectionType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cproc.connection.Connection",
    .tp_basicsize = sizeof(ConnectionObject),
    .tp_dealloc = (destructor)connection_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Connection(handle, readable=True, writable=True)\n--\n\n"
              "Connection class based on an arbitrary file descriptor (Unix only), "
              "framed as multiprocessing.connection frames its messages.",
    .tp_weaklistoffset = offsetof(ConnectionObject, weakreflist),
    .tp_methods = connection_methods,
    .tp_getset = connection_getset,
    .tp_init = (initproc)connection_init,
    .tp_new = connection_new,
};
