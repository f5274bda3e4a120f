/* process.c — starting and supervising child processes.
 *
 * Owns: Popen, the engine under cproc.Process for every start method:
 * fork() done here, bracketed by PyOS_BeforeFork / PyOS_AfterFork_*, with
 * stdio flushed first so no buffered line is printed twice; spawn through
 * posix_spawn with exactly the fds the child needs; a pidfd per child as its
 * sentinel (readable once the child exits: connection.wait() and join() use
 * it, and signals go through pidfd_send_signal, so a recycled pid is never
 * signalled); join/wait with a timeout, GIL released, Ctrl+C answered.
 * Never blocks with the GIL held; every system call's result is checked.
 */
#include "cproc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <structmember.h>

extern char **environ;

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

typedef struct {
    PyObject_HEAD
    pid_t pid;
    int pidfd;             /* the sentinel; -1 once closed */
    PyObject *returncode;  /* None until the child has been reaped */
    PyObject *dict;        /* Python subclasses keep their state here */
} PopenObject;

static int pidfd_open(pid_t pid)
{
    return (int)syscall(SYS_pidfd_open, pid, 0);   /* close-on-exec by default */
}

/* Flush sys.stdout and sys.stderr, as multiprocessing does before a fork:
 * otherwise the child inherits the buffer and prints it a second time. */
static void flush_std_streams(void)
{
    static const char *const names[] = {"stdout", "stderr"};
    for (int i = 0; i < 2; i++) {
        PyObject *f = PySys_GetObject(names[i]);   /* borrowed */
        if (f == NULL || f == Py_None)
            continue;
        PyObject *r = PyObject_CallMethod(f, "flush", NULL);
        if (r == NULL)
            PyErr_Clear();   /* a closed or broken stream must not stop the start */
        Py_XDECREF(r);
    }
}

static int popen_set_child(PopenObject *self, pid_t pid)
{
    self->pid = pid;
    self->pidfd = pidfd_open(pid);
    if (self->pidfd < 0) {
        int err = errno;
        kill(pid, SIGKILL);             /* unsupervisable: do not leave it running */
        waitpid(pid, NULL, 0);
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

/* Call atexit.<name>(*args); report an error, as the child goes on anyway. */
static void call_atexit(const char *name, PyObject *arg)
{
    PyObject *atexit = PyImport_ImportModule("atexit");
    PyObject *r = NULL;
    if (atexit != NULL)
        r = PyObject_CallMethod(atexit, name, arg == NULL ? NULL : "(O)", arg);
    if (r == NULL)
        PyErr_Print();
    Py_XDECREF(r);
    Py_XDECREF(atexit);
}

/* A fork child's atexit handlers. Up to 3.12, multiprocessing's fork and
 * forkserver children leave with os._exit() and run none (_bootstrap() calls
 * multiprocessing.util._exit_function() itself). From 3.13 (gh-83856) they
 * start with the parent's handlers cleared and _exit_function registered, and
 * run the handlers at exit: so does cproc's, on each version as its own
 * multiprocessing does. */
#if PY_VERSION_HEX >= 0x030D0000
#define CHILD_RUNS_ATEXIT 1
#else
#define CHILD_RUNS_ATEXIT 0
#endif

static void child_atexit_init(void)
{
    if (!CHILD_RUNS_ATEXIT)
        return;
    call_atexit("_clear", NULL);
    PyObject *util = PyImport_ImportModule("multiprocessing.util");
    PyObject *exit_function = util == NULL ? NULL : PyObject_GetAttrString(util, "_exit_function");
    if (exit_function != NULL)
        call_atexit("register", exit_function);
    else
        PyErr_Print();
    Py_XDECREF(exit_function);
    Py_XDECREF(util);
}

/* Run process_obj._bootstrap(parent_sentinel=...) in the forked child and
 * leave with its exit code; never returns. */
static void run_child(PyObject *process_obj)
{
    int code = 1;
    child_atexit_init();
    PyObject *sentinel = Py_None;
    int ppidfd = pidfd_open(getppid());
    if (ppidfd >= 0)
        sentinel = PyLong_FromLong(ppidfd);
    if (sentinel != NULL) {
        PyObject *bootstrap = PyObject_GetAttrString(process_obj, "_bootstrap");
        PyObject *kwargs = Py_BuildValue("{s:O}", "parent_sentinel", sentinel);
        PyObject *r = NULL;
        if (bootstrap != NULL && kwargs != NULL) {
            PyObject *empty = PyTuple_New(0);
            if (empty != NULL)
                r = PyObject_Call(bootstrap, empty, kwargs);
            Py_XDECREF(empty);
        }
        if (r != NULL) {
            long c = PyLong_AsLong(r);
            code = (c == -1 && PyErr_Occurred()) ? 1 : (int)c;
            Py_DECREF(r);
        }
        Py_XDECREF(bootstrap);
        Py_XDECREF(kwargs);
    }
    if (PyErr_Occurred())
        PyErr_Print();      /* _bootstrap reports user errors itself; this is ours */
    if (CHILD_RUNS_ATEXIT)
        call_atexit("_run_exitfuncs", NULL);   /* it reports the handlers' errors */
    flush_std_streams();
    _exit(code);
}

static PyObject *popen_launch_fork(PopenObject *self, PyObject *process_obj)
{
    if (self->pid != 0) {
        PyErr_SetString(PyExc_RuntimeError, "Popen already started");
        return NULL;
    }
    flush_std_streams();
    PyOS_BeforeFork();
    pid_t pid = fork();
    if (pid == 0) {
        PyOS_AfterFork_Child();
        run_child(process_obj);   /* does not return */
    }
    int err = errno;
    PyOS_AfterFork_Parent();
    if (pid < 0) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (popen_set_child(self, pid) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* _launch_spawn(executable, argv, pass_fds): start a fresh program with only
 * pass_fds (and stdio) inherited. */
static PyObject *popen_launch_spawn(PopenObject *self, PyObject *args)
{
    PyObject *exe_obj, *argv_obj, *fds_obj, *exe_bytes = NULL, *argv_seq = NULL, *fds_seq = NULL;
    char **argv = NULL;
    PyObject **argv_bytes = NULL;
    PyObject *result = NULL;
    posix_spawn_file_actions_t fa;
    int fa_ready = 0;
    if (!PyArg_ParseTuple(args, "OOO:_launch_spawn", &exe_obj, &argv_obj, &fds_obj))
        return NULL;
    if (self->pid != 0) {
        PyErr_SetString(PyExc_RuntimeError, "Popen already started");
        return NULL;
    }
    if (!PyUnicode_FSConverter(exe_obj, &exe_bytes))
        return NULL;
    argv_seq = PySequence_Fast(argv_obj, "argv must be a sequence");
    fds_seq = PySequence_Fast(fds_obj, "pass_fds must be a sequence");
    if (argv_seq == NULL || fds_seq == NULL)
        goto done;
    Py_ssize_t argc = PySequence_Fast_GET_SIZE(argv_seq);
    argv = PyMem_Calloc((size_t)argc + 1, sizeof(char *));
    argv_bytes = PyMem_Calloc((size_t)argc + 1, sizeof(PyObject *));
    if (argv == NULL || argv_bytes == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < argc; i++) {
        if (!PyUnicode_FSConverter(PySequence_Fast_GET_ITEM(argv_seq, i), &argv_bytes[i]))
            goto done;
        argv[i] = PyBytes_AS_STRING(argv_bytes[i]);
    }
    int rc = posix_spawn_file_actions_init(&fa);
    if (rc != 0) {
        errno = rc;
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    fa_ready = 1;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(fds_seq); i++) {
        int fd = PyLong_AsLong(PySequence_Fast_GET_ITEM(fds_seq, i));
        if (fd == -1 && PyErr_Occurred())
            goto done;
        /* dup2 onto itself clears close-on-exec in the child (glibc >= 2.29) */
        rc = posix_spawn_file_actions_adddup2(&fa, fd, fd);
        if (rc != 0) {
            errno = rc;
            PyErr_SetFromErrno(PyExc_OSError);
            goto done;
        }
    }
    flush_std_streams();
    pid_t pid;
    Py_BEGIN_ALLOW_THREADS
    rc = posix_spawn(&pid, PyBytes_AS_STRING(exe_bytes), &fa, NULL, argv, environ);
    Py_END_ALLOW_THREADS
    if (rc != 0) {
        errno = rc;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, exe_obj);
        goto done;
    }
    if (popen_set_child(self, pid) < 0)
        goto done;
    result = Py_None;
    Py_INCREF(result);
done:
    if (fa_ready)
        posix_spawn_file_actions_destroy(&fa);
    if (argv_bytes != NULL)
        for (Py_ssize_t i = 0; argv_bytes[i] != NULL; i++)
            Py_DECREF(argv_bytes[i]);
    PyMem_Free(argv_bytes);
    PyMem_Free(argv);
    Py_XDECREF(argv_seq);
    Py_XDECREF(fds_seq);
    Py_XDECREF(exe_bytes);
    return result;
}

static int status_to_code(int status)
{
    if (WIFSIGNALED(status))
        return -WTERMSIG(status);
    return WEXITSTATUS(status);
}

/* Reap the child if it has exited (blocking is never needed: callers wait on
 * the pidfd first). */
static int popen_reap(PopenObject *self)
{
    if (self->returncode != Py_None || self->pid <= 0)
        return 0;
    int status;
    pid_t r = waitpid(self->pid, &status, WNOHANG);
    if (r == self->pid) {
        PyObject *code = PyLong_FromLong(status_to_code(status));
        if (code == NULL)
            return -1;
        Py_SETREF(self->returncode, code);
    }
    /* r == -1 (ECHILD: somebody else reaped it) is reported as "still
     * unknown", as multiprocessing's poll() does. */
    return 0;
}

/* Wait until the child exits or the deadline passes. 1 exited, 0 timeout, -1 error. */
static int popen_wait_exit(PopenObject *self, int64_t deadline)
{
    if (self->pidfd < 0) {
        PyErr_SetString(PyExc_ValueError, "process object is closed");
        return -1;
    }
    struct pollfd pfd = {self->pidfd, POLLIN, 0};
    int r = cproc_poll_until(&pfd, 1, deadline);
    return r < 0 ? -1 : r > 0;
}

static PyObject *popen_poll(PopenObject *self, PyObject *args)
{
    int flag = WNOHANG;
    if (!PyArg_ParseTuple(args, "|i:poll", &flag))
        return NULL;
    if (self->returncode == Py_None && self->pid > 0) {
        if (!(flag & WNOHANG) && popen_wait_exit(self, CPROC_FOREVER) < 0)
            return NULL;
        if (popen_reap(self) < 0)
            return NULL;
    }
    Py_INCREF(self->returncode);
    return self->returncode;
}

static PyObject *popen_wait(PopenObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"timeout", NULL};
    PyObject *timeout = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:wait", kwlist, &timeout))
        return NULL;
    if (self->returncode == Py_None && self->pid > 0) {
        int64_t deadline;
        if (cproc_deadline_from_timeout(timeout, &deadline) < 0)
            return NULL;
        int r = popen_wait_exit(self, deadline);
        if (r < 0)
            return NULL;
        if (r == 0)
            Py_RETURN_NONE;
        if (popen_reap(self) < 0)
            return NULL;
    }
    Py_INCREF(self->returncode);
    return self->returncode;
}

static PyObject *popen_send_signal(PopenObject *self, int sig)
{
    if (self->returncode == Py_None && self->pidfd >= 0) {
        if (syscall(SYS_pidfd_send_signal, self->pidfd, sig, NULL, 0) != 0 && errno != ESRCH)
            return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

static PyObject *popen_terminate(PopenObject *self, PyObject *unused)
{
    (void)unused;
    return popen_send_signal(self, SIGTERM);
}

static PyObject *popen_kill(PopenObject *self, PyObject *unused)
{
    (void)unused;
    return popen_send_signal(self, SIGKILL);
}

static void popen_close_fd(PopenObject *self)
{
    if (self->pidfd >= 0) {
        close(self->pidfd);
        self->pidfd = -1;
    }
}

static PyObject *popen_close(PopenObject *self, PyObject *unused)
{
    (void)unused;
    popen_close_fd(self);
    Py_RETURN_NONE;
}

static PyObject *popen_get_sentinel(PopenObject *self, void *closure)
{
    (void)closure;
    if (self->pidfd < 0)
        Py_RETURN_NONE;
    return PyLong_FromLong(self->pidfd);
}

static PyObject *popen_get_pid(PopenObject *self, void *closure)
{
    (void)closure;
    if (self->pid <= 0)
        Py_RETURN_NONE;
    return PyLong_FromLong(self->pid);
}

static PyObject *popen_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    (void)args; (void)kwds;
    PopenObject *self = (PopenObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->pidfd = -1;
    Py_INCREF(Py_None);
    self->returncode = Py_None;
    return (PyObject *)self;
}

static int popen_traverse(PopenObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->dict);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static int popen_clear(PopenObject *self)
{
    Py_CLEAR(self->dict);
    return 0;
}

static void popen_dealloc(PopenObject *self)
{
    PyObject_GC_UnTrack(self);
    popen_close_fd(self);
    Py_CLEAR(self->returncode);
    Py_CLEAR(self->dict);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef popen_methods[] = {
    {"_launch_fork", (PyCFunction)popen_launch_fork, METH_O,
     "_launch_fork(process_obj)\n\nFork; the child runs process_obj._bootstrap() and exits."},
    {"_launch_spawn", (PyCFunction)popen_launch_spawn, METH_VARARGS,
     "_launch_spawn(executable, argv, pass_fds)\n\nStart a fresh program inheriting pass_fds."},
    {"poll", (PyCFunction)popen_poll, METH_VARARGS,
     "poll(flag=os.WNOHANG) -> exit code or None"},
    {"wait", (PyCFunction)(void (*)(void))popen_wait, METH_VARARGS | METH_KEYWORDS,
     "wait(timeout=None) -> exit code, or None if the timeout passed"},
    {"terminate", (PyCFunction)popen_terminate, METH_NOARGS, "Send SIGTERM."},
    {"kill", (PyCFunction)popen_kill, METH_NOARGS, "Send SIGKILL."},
    {"close", (PyCFunction)popen_close, METH_NOARGS, "Close the sentinel."},
    {NULL}
};

static PyGetSetDef popen_getset[] = {
    {"sentinel", (getter)popen_get_sentinel, NULL, "pidfd, readable once the child has exited", NULL},
    {"pid", (getter)popen_get_pid, NULL, "the child's pid", NULL},
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL}
};

static PyMemberDef popen_members[] = {
    {"returncode", T_OBJECT, offsetof(PopenObject, returncode), READONLY,
     "exit code (negative: killed by that signal), None while running"},
    {NULL}
};

PyTypeObject cproc_PopenType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cproc._cproc.Popen",
    .tp_basicsize = sizeof(PopenObject),
    .tp_dealloc = (destructor)popen_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The process engine under cproc.Process (one per started child).",
    .tp_traverse = (traverseproc)popen_traverse,
    .tp_clear = (inquiry)popen_clear,
    .tp_methods = popen_methods,
    .tp_getset = popen_getset,
    .tp_members = popen_members,
    .tp_dictoffset = offsetof(PopenObject, dict),
    .tp_new = popen_new,
};

/* pidfd_open(pid) -> fd, for a spawned child's parent_process() sentinel. */
PyObject *cproc_pidfd_open(PyObject *module, PyObject *arg)
{
    (void)module;
    long pid = PyLong_AsLong(arg);
    if (pid == -1 && PyErr_Occurred())
        return NULL;
    int fd = pidfd_open((pid_t)pid);
    if (fd < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromLong(fd);
}

/* pidfd_send_signal(pidfd, sig): signal the process a pidfd names (never a
 * recycled pid). Returns False when it has already exited. */
PyObject *cproc_pidfd_send_signal(PyObject *module, PyObject *args)
{
    (void)module;
    int fd, sig;
    if (!PyArg_ParseTuple(args, "ii:pidfd_send_signal", &fd, &sig))
        return NULL;
    if (syscall(SYS_pidfd_send_signal, fd, sig, NULL, 0) != 0) {
        if (errno == ESRCH)
            Py_RETURN_FALSE;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_TRUE;
}
