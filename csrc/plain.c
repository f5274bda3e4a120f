/* plain.c — a compact encoding of plain data for queue records.
 *
 * Small messages of built-in types (None, bool, int that fits 64 bits, float,
 * str, bytes, and tuples, lists and dicts of them) are most of what queues
 * carry. Pickle spends most of a small put building a Pickler and its memo;
 * this encoder writes such an object straight into a caller's buffer and the
 * decoder rebuilds an equal object. Anything else — another type, a
 * subclass, a list or dict that occurs twice (pickle would keep the sharing),
 * too deep, too big for the buffer — is refused and goes through pickle.
 *
 * Format: one tag byte per object; int and float as 8 bytes, str (UTF-8),
 * bytes and containers with a 4-byte length; native byte order (records never
 * leave the machine).
 */
#include "cproc.h"

#include <string.h>

#define MAX_DEPTH 8
#define MAX_SHARED 32

enum {
    T_NONE = 'N', T_TRUE = 'T', T_FALSE = 'F', T_INT = 'i', T_FLOAT = 'f',
    T_STR = 's', T_BYTES = 'b', T_TUPLE = '(', T_LIST = '[', T_DICT = '{',
};

typedef struct {
    char *buf;
    Py_ssize_t len, cap;
    PyObject *seen[MAX_SHARED];          /* lists and dicts written so far */
    int nseen;
} encoder;

/* 1 written, 0 not plain (or does not fit), -1 error. */
static int put_raw(encoder *e, const void *p, Py_ssize_t n)
{
    if (n > e->cap - e->len)
        return 0;
    memcpy(e->buf + e->len, p, (size_t)n);
    e->len += n;
    return 1;
}

static int put_tag_len(encoder *e, char tag, Py_ssize_t n)
{
    if (n > UINT32_MAX)
        return 0;
    uint32_t n32 = (uint32_t)n;
    return put_raw(e, &tag, 1) && put_raw(e, &n32, 4);
}

static int first_sight(encoder *e, PyObject *o)
{
    for (int i = 0; i < e->nseen; i++)
        if (e->seen[i] == o)
            return 0;
    if (e->nseen == MAX_SHARED)
        return 0;
    e->seen[e->nseen++] = o;
    return 1;
}

static int encode(encoder *e, PyObject *o, int depth)
{
    PyTypeObject *t = Py_TYPE(o);
    char tag;
    if (o == Py_None || o == Py_True || o == Py_False) {
        tag = o == Py_None ? T_NONE : o == Py_True ? T_TRUE : T_FALSE;
        return put_raw(e, &tag, 1);
    }
    if (t == &PyLong_Type) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
        if (overflow)
            return 0;
        if (v == -1 && PyErr_Occurred())
            return -1;
        tag = T_INT;
        return put_raw(e, &tag, 1) && put_raw(e, &v, 8);
    }
    if (t == &PyFloat_Type) {
        double d = PyFloat_AS_DOUBLE(o);
        tag = T_FLOAT;
        return put_raw(e, &tag, 1) && put_raw(e, &d, 8);
    }
    if (t == &PyUnicode_Type) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(o, &n);
        if (s == NULL) {              /* lone surrogates: pickle knows how */
            PyErr_Clear();
            return 0;
        }
        return put_tag_len(e, T_STR, n) && put_raw(e, s, n);
    }
    if (t == &PyBytes_Type)
        return put_tag_len(e, T_BYTES, PyBytes_GET_SIZE(o)) &&
               put_raw(e, PyBytes_AS_STRING(o), PyBytes_GET_SIZE(o));
    if (depth == 0)
        return 0;
    if (t == &PyTuple_Type || t == &PyList_Type) {
        if (t == &PyList_Type && !first_sight(e, o))
            return 0;
        /* Encoding runs no Python code: the containers cannot change meanwhile. */
        Py_ssize_t n = PySequence_Fast_GET_SIZE(o);
        int r = put_tag_len(e, t == &PyTuple_Type ? T_TUPLE : T_LIST, n);
        for (Py_ssize_t i = 0; r == 1 && i < n; i++)
            r = encode(e, PySequence_Fast_GET_ITEM(o, i), depth - 1);
        return r;
    }
    if (t == &PyDict_Type) {
        if (!first_sight(e, o))
            return 0;
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        int r = put_tag_len(e, T_DICT, PyDict_GET_SIZE(o));
        while (r == 1 && PyDict_Next(o, &pos, &k, &v)) {
            r = encode(e, k, depth - 1);
            if (r == 1)
                r = encode(e, v, depth - 1);
        }
        return r;
    }
    return 0;
}

Py_ssize_t cproc_plain_encode(PyObject *obj, char *buf, Py_ssize_t cap)
{
    encoder e = {.buf = buf, .len = 0, .cap = cap, .nseen = 0};
    int r = encode(&e, obj, MAX_DEPTH);
    return r == 1 ? e.len : r;
}

/* ---- decoding ------------------------------------------------------------ */

typedef struct {
    const char *p, *end;
} decoder;

static int take(decoder *d, void *out, Py_ssize_t n)
{
    if (n > d->end - d->p) {
        PyErr_SetString(PyExc_RuntimeError, "cproc queue: truncated record");
        return -1;
    }
    memcpy(out, d->p, (size_t)n);
    d->p += n;
    return 0;
}

static PyObject *decode(decoder *d)
{
    char tag;
    uint32_t n;
    if (take(d, &tag, 1) < 0)
        return NULL;
    switch (tag) {
    case T_NONE: Py_RETURN_NONE;
    case T_TRUE: Py_RETURN_TRUE;
    case T_FALSE: Py_RETURN_FALSE;
    case T_INT: {
        long long v;
        return take(d, &v, 8) < 0 ? NULL : PyLong_FromLongLong(v);
    }
    case T_FLOAT: {
        double v;
        return take(d, &v, 8) < 0 ? NULL : PyFloat_FromDouble(v);
    }
    }
    if (take(d, &n, 4) < 0)
        return NULL;
    if ((tag == T_STR || tag == T_BYTES) && (Py_ssize_t)n > d->end - d->p) {
        PyErr_SetString(PyExc_RuntimeError, "cproc queue: truncated record");
        return NULL;
    }
    switch (tag) {
    case T_STR:
        d->p += n;
        return PyUnicode_DecodeUTF8(d->p - n, n, "strict");
    case T_BYTES:
        d->p += n;
        return PyBytes_FromStringAndSize(d->p - n, n);
    case T_TUPLE:
    case T_LIST: {
        if (n > d->end - d->p) {      /* every item takes at least a byte */
            PyErr_SetString(PyExc_RuntimeError, "cproc queue: truncated record");
            return NULL;
        }
        PyObject *seq = tag == T_TUPLE ? PyTuple_New(n) : PyList_New(n);
        for (uint32_t i = 0; seq != NULL && i < n; i++) {
            PyObject *item = decode(d);
            if (item == NULL)
                Py_CLEAR(seq);
            else if (tag == T_TUPLE)
                PyTuple_SET_ITEM(seq, i, item);
            else
                PyList_SET_ITEM(seq, i, item);
        }
        return seq;
    }
    case T_DICT: {
        PyObject *dict = PyDict_New();
        for (uint32_t i = 0; dict != NULL && i < n; i++) {
            PyObject *k = decode(d);
            PyObject *v = k ? decode(d) : NULL;
            if (v == NULL || PyDict_SetItem(dict, k, v) < 0)
                Py_CLEAR(dict);
            Py_XDECREF(k);
            Py_XDECREF(v);
        }
        return dict;
    }
    }
    PyErr_Format(PyExc_RuntimeError, "cproc queue: corrupted record (tag %d)", (int)tag);
    return NULL;
}

PyObject *cproc_plain_decode(const char *buf, Py_ssize_t len)
{
    decoder d = {buf, buf + len};
    PyObject *obj = decode(&d);
    if (obj != NULL && d.p != d.end) {
        Py_DECREF(obj);
        PyErr_SetString(PyExc_RuntimeError, "cproc queue: corrupted record (trailing bytes)");
        return NULL;
    }
    return obj;
}
