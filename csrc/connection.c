/* connection.c — waiting on file descriptors: the core of
 * cproc.connection.wait() (Process sentinels today; Connections later).
 *
 * Never blocks with the GIL held; EINTR runs the signal handlers, then the
 * wait goes on for the time that is left. Never busy-loops.
 */
#include "cproc.h"

#include <errno.h>
#include <poll.h>

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
    for (;;) {
        int timeout_ms = -1;
        if (deadline != CPROC_FOREVER) {
            int64_t left = deadline - cproc_monotonic_ns();
            timeout_ms = left <= 0 ? 0 : (int)((left + 999999) / 1000000);
        }
        int r, err;
        Py_BEGIN_ALLOW_THREADS
        r = poll(pfds, (nfds_t)n, timeout_ms);
        err = errno;
        Py_END_ALLOW_THREADS
        if (r >= 0) {
            if (r == 0 && deadline != CPROC_FOREVER && cproc_monotonic_ns() < deadline)
                continue;   /* poll rounds to milliseconds: sleep the rest */
            break;
        }
        if (err != EINTR) {
            errno = err;
            PyErr_SetFromErrno(PyExc_OSError);
            goto done;
        }
        if (PyErr_CheckSignals() < 0)
            goto done;
    }
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
