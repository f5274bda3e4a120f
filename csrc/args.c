/* args.c — reading Python arguments the way multiprocessing reads them, and
 * the error helpers every type shares.
 *
 * Owns: vectorcall argument parsing (messages as the interpreter's own), the
 * one block/timeout rule (cproc_block_timeout: how `block` is read depends
 * on the multiprocessing call, a flag says which), timeout -> deadline, the
 * int conversion of _multiprocessing.SemLock(), the one "not initialized"
 * error and the short type name reprs show. Nothing here blocks.
 */
#include "cproc.h"

#include <math.h>
#include <string.h>

int cproc_not_initialized(PyObject *self)
{
    PyErr_Format(PyExc_ValueError, "%s object is not initialized", Py_TYPE(self)->tp_name);
    return -1;
}

const char *cproc_short_type_name(PyObject *self)
{
    const char *name = Py_TYPE(self)->tp_name, *dot = strrchr(name, '.');
    return dot ? dot + 1 : name;
}

PyObject *cproc_fetch_exception(void)
{
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyErr_NormalizeException(&et, &ev, &tb);
    if (ev != NULL && tb != NULL)
        PyException_SetTraceback(ev, tb);
    Py_XDECREF(et);
    Py_XDECREF(tb);
    return ev;
}

/* ---- argument lists ------------------------------------------------------- */

int cproc_parse_args(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                     const char *const *names, int nrequired, PyObject **out)
{
    int n = 0;
    while (names[n] != NULL)
        n++;
    if (nargs > n) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %d argument%s (%zd given)", fname, n,
                     n == 1 ? "" : "s", nargs);
        return -1;
    }
    for (int i = 0; i < n; i++)
        out[i] = i < nargs ? args[i] : NULL;
    Py_ssize_t nk = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nk; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        int i = 0;
        while (i < n && PyUnicode_CompareWithASCIIString(key, names[i]) != 0)
            i++;
        if (i == n) {
            PyErr_Format(PyExc_TypeError, "'%U' is an invalid keyword argument for %s()", key, fname);
            return -1;
        }
        if (out[i] != NULL) {
            PyErr_Format(PyExc_TypeError, "argument for %s() given by name ('%U') and position (%d)",
                         fname, key, i + 1);
            return -1;
        }
        out[i] = args[nargs + k];
    }
    for (int i = 0; i < nrequired; i++)
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s' (pos %d)",
                         fname, names[i], i + 1);
            return -1;
        }
    return 0;
}

int cproc_parse_optional_arg(const char *fname, const char *name, PyObject *const *args,
                             Py_ssize_t nargs, PyObject *kwnames, PyObject **value)
{
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs + nkw > 1) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most 1 argument (%zd given)", fname, nargs + nkw);
        return -1;
    }
    if (nkw == 1 && PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), name) != 0) {
        PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'",
                     fname, PyTuple_GET_ITEM(kwnames, 0));
        return -1;
    }
    if (nargs + nkw == 1)
        *value = args[0];
    return 0;
}

/* ---- single values ---------------------------------------------------------- */

int cproc_semlock_int_arg(PyObject *o, int *out)
{
#if PY_VERSION_HEX < 0x030A0000
    return PyArg_Parse(o, "i", out) ? 0 : -1;      /* 3.9's SemLock() parses "iiisi" */
#else
#if PY_VERSION_HEX >= 0x030D0000
    *out = PyLong_AsInt(o);
#else
    *out = _PyLong_AsInt(o);
#endif
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
#endif
}

int cproc_blocking_arg(PyObject *block)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyObject_IsTrue(block);      /* 3.12's SemLock.acquire: block is a bool */
#else
    /* up to 3.11 an int, read as _multiprocessing's argument clinic code does */
#if PY_VERSION_HEX < 0x030A0000
    if (PyFloat_Check(block)) {
        PyErr_SetString(PyExc_TypeError, "integer argument expected, got float");
        return -1;
    }
#endif
    int v = _PyLong_AsInt(block);
    if (v == -1 && PyErr_Occurred())
        return -1;
    return v != 0;
#endif
}

int cproc_deadline_from_timeout(PyObject *timeout, int64_t *deadline)
{
    if (timeout == NULL || timeout == Py_None) {
        *deadline = CPROC_FOREVER;
        return 0;
    }
    double t = PyFloat_AsDouble(timeout);
    if (t == -1.0 && PyErr_Occurred())
        return -1;
    if (isnan(t)) {
        PyErr_SetString(PyExc_ValueError, "timeout must not be NaN");
        return -1;
    }
    if (t < 0)
        t = 0;
    if (t > 1e9) {                 /* ~31 years: as good as forever */
        *deadline = CPROC_FOREVER;
        return 0;
    }
    *deadline = cproc_monotonic_ns() + (int64_t)(t * 1e9);
    return 0;
}

/* ---- block and timeout ------------------------------------------------------ */

int cproc_block_timeout(PyObject *block, PyObject *timeout, int flags, int *blocking, int64_t *deadline)
{
    *blocking = 1;
    if (block != NULL) {
        /* Queue.get: `if block and timeout is None` waits for ever on any true
         * value; otherwise block goes to a semaphore's acquire(). */
        int no_timeout = timeout == NULL || timeout == Py_None;
        if ((flags & CPROC_BLOCK_GET) && (*blocking = PyObject_IsTrue(block)) < 0)
            return -1;
        if (!((flags & CPROC_BLOCK_GET) && *blocking && no_timeout) &&
            (*blocking = cproc_blocking_arg(block)) < 0)
            return -1;
    }
    if (cproc_deadline_from_timeout(timeout, deadline) < 0)
        return -1;
    if ((flags & CPROC_TIMEOUT_NOWAIT) && *deadline != CPROC_FOREVER && *deadline <= cproc_monotonic_ns())
        *deadline = CPROC_NOWAIT;
    return 0;
}

int cproc_parse_block_timeout(const char *fname, PyObject *const *args, Py_ssize_t nargs,
                              PyObject *kwnames, int *blocking, int64_t *deadline)
{
    static const char *const names[] = {"block", "timeout", NULL};
    PyObject *val[2];
    if (cproc_parse_args(fname, args, nargs, kwnames, names, 0, val) < 0)
        return -1;
    return cproc_block_timeout(val[0], val[1], 0, blocking, deadline);
}

/* A writable buffer of at least `words` aligned 64-bit words, or NULL (error set). */
void *cproc_word_buffer(PyObject *obj, Py_buffer *view, Py_ssize_t words, const char *what)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE) < 0)
        return NULL;
    if (words < 0 || (size_t)view->len < (size_t)words * sizeof(uint64_t) ||
        (uintptr_t)view->buf % sizeof(uint64_t) != 0) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_ValueError, "%s: out of range or misaligned", what);
        return NULL;
    }
    return view->buf;
}
