/* module.c — PyInit__cproc: registers the types of the C core; and the one
 * way the C core imports the Python names it uses (cproc_import_names). */
#include "cproc.h"

int cproc_import_names(const cproc_import_name *names)
{
    size_t n = 0;
    while (names[n].module != NULL)
        n++;
    if (n == 0 || *names[n - 1].slot != NULL)
        return 0;
    for (size_t i = 0; i < n; i++) {
        PyObject *mod = PyImport_ImportModule(names[i].module);
        PyObject *value = mod ? PyObject_GetAttrString(mod, names[i].name) : NULL;
        Py_XDECREF(mod);
        if (value == NULL) {
            for (size_t j = 0; j < n; j++)
                Py_CLEAR(*names[j].slot);
            return -1;
        }
        Py_XSETREF(*names[i].slot, value);
    }
    return 0;
}

static PyMethodDef module_methods[] = {
    {"_segments", cproc_segments_info, METH_NOARGS,
     "_segments() -> list of dict\n\nThe shared-memory segments mapped in this process "
     "(diagnostics and leak tests)."},
    {"wait_fds", cproc_wait_fds, METH_VARARGS,
     "wait_fds(fds, timeout=None) -> list\n\nThe fds that are ready (readable, hung up or in error)."},
    {"pidfd_send_signal", cproc_pidfd_send_signal, METH_VARARGS,
     "pidfd_send_signal(pidfd, sig) -> bool\n\nSignal the process; False if it has exited."},
    {"pidfd_open", cproc_pidfd_open, METH_O,
     "pidfd_open(pid) -> fd\n\nA pidfd for process pid (readable once it has exited)."},
    {"_usable_cpus", cproc_usable_cpus, METH_NOARGS,
     "_usable_cpus() -> int\n\nThe CPUs the wait policy counts as usable (1: waits never spin)."},
    {NULL}
};

static struct PyModuleDef cproc_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "cproc._cproc",
    .m_doc = "The C core of cproc: shared memory, futexes and the synchronization primitives.",
    .m_size = -1,
    .m_methods = module_methods,
};

static int add_type(PyObject *m, PyTypeObject *type, const char *name)
{
    if (PyType_Ready(type) < 0)
        return -1;
    Py_INCREF(type);
    if (PyModule_AddObject(m, name, (PyObject *)type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return 0;
}

PyMODINIT_FUNC PyInit__cproc(void)
{
    PyObject *m = PyModule_Create(&cproc_module);
    if (m == NULL)
        return NULL;
    cproc_spin_init();
    if (cproc_identity_init() < 0 || cproc_semlock_init(m) < 0 || cproc_barrier_init(m) < 0 || cproc_sharedctypes_init(m) < 0 ||
        cproc_queue_init(m) < 0 || cproc_pool_init(m) < 0)
        goto fail;
    if (add_type(m, &cproc_SegmentType, "Segment") < 0 ||
        add_type(m, &cproc_SharedBlockType, "SharedBlock") < 0 ||
        add_type(m, &cproc_PopenType, "Popen") < 0 ||
        add_type(m, &cproc_ConnectionType, "Connection") < 0 ||
        add_type(m, &cproc_SemLockType, "SemLock") < 0 ||
        add_type(m, &cproc_LockType, "Lock") < 0 ||
        add_type(m, &cproc_RLockType, "RLock") < 0 ||
        add_type(m, &cproc_SemaphoreType, "Semaphore") < 0 ||
        add_type(m, &cproc_BoundedSemaphoreType, "BoundedSemaphore") < 0 ||
        add_type(m, &cproc_EventType, "Event") < 0 ||
        add_type(m, &cproc_ConditionType, "Condition") < 0 ||
        add_type(m, &cproc_BarrierType, "Barrier") < 0 ||
        add_type(m, &cproc_SynchronizedBaseType, "SynchronizedBase") < 0 ||
        add_type(m, &cproc_SynchronizedType, "Synchronized") < 0 ||
        add_type(m, &cproc_SynchronizedArrayType, "SynchronizedArray") < 0 ||
        add_type(m, &cproc_SynchronizedStringType, "SynchronizedString") < 0 ||
        add_type(m, &cproc_QueueType, "Queue") < 0 ||
        add_type(m, &cproc_JoinableQueueType, "JoinableQueue") < 0 ||
        add_type(m, &cproc_SimpleQueueType, "SimpleQueue") < 0)
        goto fail;
    if (PyModule_AddIntConstant(m, "LOCK", CPROC_LOCK) < 0 ||
        PyModule_AddIntConstant(m, "RLOCK", CPROC_RLOCK) < 0 ||
        PyModule_AddIntConstant(m, "SEMAPHORE", CPROC_SEMAPHORE) < 0 ||
        PyModule_AddIntConstant(m, "SEM_VALUE_MAX", 2147483647) < 0)
        goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
