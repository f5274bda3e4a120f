/* sharedctypes.c — the Synchronized wrappers of Value and Array.
 *
 * Owns: SynchronizedBase, Synchronized (Value), SynchronizedArray and
 * SynchronizedString. Each wraps a ctypes object living in shared memory
 * (cproc/sharedctypes.py makes it) and a lock. Reading and writing .value,
 * items and slices of the standard ctypes number types is done here, under
 * the lock, straight on the shared memory; anything else (structures, other
 * element types, unusual values) is delegated to the ctypes object, still
 * under the lock, so behaviour and error messages stay those of ctypes.
 */
#include "cproc.h"

#include <structmember.h>

typedef struct {
    PyObject_HEAD
    PyObject *obj;            /* the ctypes object */
    PyObject *lock;
    SemLockObject *fastlock;  /* == lock when it is a cproc lock, else NULL */
    char *addr;               /* obj's memory */
    Py_ssize_t length;        /* items (1 for a value) */
    Py_ssize_t itemsize;
    char code;                /* ctypes type code of a standard number type, else 0 */
    PyObject *weakreflist;    /* weak references, as to multiprocessing's (Python) objects */
} SynchronizedObject;

static PyObject *standard_types;   /* set of ctypes' own simple types: c_int, c_double, ... */

static Py_ssize_t code_size(char code)
{
    switch (code) {
    case 'c': case 'b': case 'B': case '?': return 1;
    case 'h': case 'H': return sizeof(short);
    case 'i': case 'I': return sizeof(int);
    case 'l': case 'L': return sizeof(long);
    case 'q': case 'Q': return sizeof(long long);
    case 'f': return sizeof(float);
    case 'd': return sizeof(double);
    default: return 0;
    }
}

static PyObject *load_item(char code, const char *p)
{
    switch (code) {
    case 'c': return PyBytes_FromStringAndSize(p, 1);
    case 'b': return PyLong_FromLong(*(const signed char *)p);
    case 'B': return PyLong_FromLong(*(const unsigned char *)p);
    case '?': return PyBool_FromLong(*(const _Bool *)p);
    case 'h': return PyLong_FromLong(*(const short *)p);
    case 'H': return PyLong_FromLong(*(const unsigned short *)p);
    case 'i': return PyLong_FromLong(*(const int *)p);
    case 'I': return PyLong_FromUnsignedLong(*(const unsigned int *)p);
    case 'l': return PyLong_FromLong(*(const long *)p);
    case 'L': return PyLong_FromUnsignedLong(*(const unsigned long *)p);
    case 'q': return PyLong_FromLongLong(*(const long long *)p);
    case 'Q': return PyLong_FromUnsignedLongLong(*(const unsigned long long *)p);
    case 'f': return PyFloat_FromDouble(*(const float *)p);
    case 'd': return PyFloat_FromDouble(*(const double *)p);
    }
    PyErr_SetString(PyExc_SystemError, "cproc: bad type code");
    return NULL;
}

/* 1 stored, 0 not a fast case (let ctypes do it), -1 error. Integers wrap
 * the way ctypes does (it masks, never raises OverflowError). */
static int store_item(char code, char *p, PyObject *v)
{
    if (code == 'f' || code == 'd') {
        double d;
        if (PyFloat_CheckExact(v))
            d = PyFloat_AS_DOUBLE(v);
        else if (PyLong_CheckExact(v)) {
            d = PyLong_AsDouble(v);
            if (d == -1.0 && PyErr_Occurred())
                return -1;
        } else
            return 0;
        if (code == 'f')
            *(float *)p = (float)d;
        else
            *(double *)p = d;
        return 1;
    }
    if (code == '?') {
        int t = PyObject_IsTrue(v);
        if (t < 0)
            return -1;
        *(_Bool *)p = (_Bool)t;
        return 1;
    }
    if (code == 'c' || !PyLong_CheckExact(v))
        return 0;
    unsigned long long x = PyLong_AsUnsignedLongLongMask(v);
    if (x == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    switch (code) {
    case 'b': case 'B': *(unsigned char *)p = (unsigned char)x; break;
    case 'h': case 'H': *(unsigned short *)p = (unsigned short)x; break;
    case 'i': case 'I': *(unsigned int *)p = (unsigned int)x; break;
    case 'l': case 'L': *(unsigned long *)p = (unsigned long)x; break;
    case 'q': case 'Q': *(unsigned long long *)p = x; break;
    default: return 0;
    }
    return 1;
}

/* ---- the lock ----------------------------------------------------------- */

static int sync_acquire(SynchronizedObject *self)
{
    if (self->fastlock)
        return cproc_semlock_acquire(self->fastlock, 1, CPROC_FOREVER) < 0 ? -1 : 0;
    PyObject *r = PyObject_CallMethod(self->lock, "acquire", NULL);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

static int sync_release(SynchronizedObject *self)
{
    if (self->fastlock)
        return cproc_semlock_release(self->fastlock);
    PyObject *r = PyObject_CallMethod(self->lock, "release", NULL);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* Release after an operation whose result is `r`; drop r if release fails. */
static PyObject *sync_release_with(SynchronizedObject *self, PyObject *r)
{
    if (sync_release(self) < 0) {
        Py_XDECREF(r);
        return NULL;
    }
    return r;
}

static int sync_release_status(SynchronizedObject *self, int status)
{
    if (sync_release(self) < 0)
        return -1;
    return status;
}

/* ---- SynchronizedBase --------------------------------------------------- */

static PyObject *get_standard_types(void);

/* Work out where obj lives and whether its items are a standard number type. */
static int describe_ctypes_object(SynchronizedObject *self, PyObject *obj)
{
    Py_buffer view;
    if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE | PyBUF_WRITABLE) < 0)
        return -1;
    self->addr = view.buf;
    Py_ssize_t nbytes = view.len;
    PyBuffer_Release(&view);

    self->code = 0;
    self->length = 1;
    PyObject *type = (PyObject *)Py_TYPE(obj);
    PyObject *elem = type;
    if (PyObject_HasAttrString(type, "_length_")) {
        elem = PyObject_GetAttrString(type, "_type_");
        if (elem == NULL)
            return -1;
        Py_DECREF(elem);   /* the array type keeps it alive */
        PyObject *len = PyObject_GetAttrString(type, "_length_");
        if (len == NULL)
            return -1;
        self->length = PyLong_AsSsize_t(len);
        Py_DECREF(len);
        if (self->length == -1 && PyErr_Occurred())
            return -1;
    }
    PyObject *standard_set = get_standard_types();
    if (standard_set == NULL)
        return -1;
    int standard = PySet_Contains(standard_set, elem);
    if (standard < 0)
        return -1;
    if (standard) {
        PyObject *code = PyObject_GetAttrString(elem, "_type_");
        if (code == NULL)
            return -1;
        if (PyUnicode_Check(code) && PyUnicode_GET_LENGTH(code) == 1) {
            Py_UCS4 c = PyUnicode_READ_CHAR(code, 0);
            if (c < 128 && code_size((char)c) > 0)
                self->code = (char)c;
        }
        Py_DECREF(code);
    }
    self->itemsize = self->code ? code_size(self->code) : 0;
    if (self->code && self->itemsize * self->length > nbytes)
        self->code = 0;   /* never read past the buffer */
    return 0;
}

static int base_init(SynchronizedObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"obj", "lock", "ctx", NULL};
    PyObject *obj, *lock = Py_None, *ctx = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|OO:SynchronizedBase", kwlist, &obj, &lock, &ctx))
        return -1;
    if (describe_ctypes_object(self, obj) < 0)
        return -1;
    if (lock == Py_None || lock == Py_False || lock == Py_True) {
        /* as multiprocessing: no lock given -> a new RLock */
        PyObject *factory = ctx;
        if (ctx == Py_None) {
            PyObject *mod = PyImport_ImportModule("cproc.synchronize");
            if (mod == NULL)
                return -1;
            lock = PyObject_CallMethod(mod, "RLock", NULL);
            Py_DECREF(mod);
        } else
            lock = PyObject_CallMethod(factory, "RLock", NULL);
        if (lock == NULL)
            return -1;
    } else
        Py_INCREF(lock);
    Py_INCREF(obj);
    Py_XSETREF(self->obj, obj);
    Py_XSETREF(self->lock, lock);
    self->fastlock = NULL;
    if (PyObject_TypeCheck(lock, &cproc_SemLockType) && ((SemLockObject *)lock)->blk.seg != NULL)
        self->fastlock = (SemLockObject *)lock;
    return 0;
}

static int base_traverse(SynchronizedObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->obj);
    Py_VISIT(self->lock);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static int base_clear(SynchronizedObject *self)
{
    self->fastlock = NULL;
    self->addr = NULL;
    self->code = 0;
    self->length = 0;
    Py_CLEAR(self->obj);
    Py_CLEAR(self->lock);
    return 0;
}

static void base_dealloc(SynchronizedObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL)
        PyObject_ClearWeakRefs((PyObject *)self);
    base_clear(self);
    tp->tp_free((PyObject *)self);
}

/* 0, or -1 with the "not initialized" error. */
static int check_init(SynchronizedObject *self)
{
    return cproc_check_init((PyObject *)self, self->obj != NULL);
}

static PyObject *base_repr(SynchronizedObject *self)
{
    if (check_init(self) < 0)
        return NULL;
    return PyUnicode_FromFormat("<%s wrapper for %R>", cproc_short_type_name((PyObject *)self), self->obj);
}

static PyObject *base_get_lock(SynchronizedObject *self, PyObject *unused)
{
    (void)unused;
    if (check_init(self) < 0)
        return NULL;
    Py_INCREF(self->lock);
    return self->lock;
}

static PyObject *base_get_obj(SynchronizedObject *self, PyObject *unused)
{
    (void)unused;
    if (check_init(self) < 0)
        return NULL;
    Py_INCREF(self->obj);
    return self->obj;
}

static PyObject *base_enter(SynchronizedObject *self, PyObject *unused)
{
    (void)unused;
    if (check_init(self) < 0)
        return NULL;
    if (self->fastlock)
        return cproc_semlock_acquire_method(self->fastlock, NULL, 0, NULL);
    return PyObject_CallMethod(self->lock, "__enter__", NULL);
}

static PyObject *base_exit(SynchronizedObject *self, PyObject *args)
{
    if (check_init(self) < 0)
        return NULL;
    if (self->fastlock)
        return cproc_semlock_release_method(self->fastlock, NULL);
    PyObject *exit = PyObject_GetAttrString(self->lock, "__exit__");
    if (exit == NULL)
        return NULL;
    PyObject *r = PyObject_Call(exit, args, NULL);
    Py_DECREF(exit);
    return r;
}

static PyObject *base_lock_method(SynchronizedObject *self, void *name)
{
    if (check_init(self) < 0)
        return NULL;
    return PyObject_GetAttrString(self->lock, (const char *)name);
}

static PyObject *base_reduce(SynchronizedObject *self, PyObject *unused)
{
    (void)unused;
    if (check_init(self) < 0)
        return NULL;
    PyObject *mod = PyImport_ImportModule("cproc.sharedctypes");
    if (mod == NULL)
        return NULL;
    PyObject *fn = PyObject_GetAttrString(mod, "synchronized");
    Py_DECREF(mod);
    if (fn == NULL)
        return NULL;
    return Py_BuildValue("(N(OO))", fn, self->obj, self->lock);
}

static PyMethodDef base_methods[] = {
    {"get_lock", (PyCFunction)base_get_lock, METH_NOARGS, "Return the lock guarding the object."},
    {"get_obj", (PyCFunction)base_get_obj, METH_NOARGS, "Return the wrapped ctypes object."},
    {"__enter__", (PyCFunction)base_enter, METH_NOARGS, "Acquire the lock."},
    {"__exit__", (PyCFunction)base_exit, METH_VARARGS, "Release the lock."},
    {"__reduce__", (PyCFunction)base_reduce, METH_NOARGS, NULL},
    {NULL}
};

static PyGetSetDef base_getset[] = {
    {"acquire", (getter)base_lock_method, NULL, "the lock's acquire()", "acquire"},
    {"release", (getter)base_lock_method, NULL, "the lock's release()", "release"},
    {NULL}
};

static PyMemberDef base_members[] = {
    {"_obj", T_OBJECT, offsetof(SynchronizedObject, obj), READONLY, NULL},
    {"_lock", T_OBJECT, offsetof(SynchronizedObject, lock), READONLY, NULL},
    {NULL}
};

PyTypeObject cproc_SynchronizedBaseType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cproc.sharedctypes.SynchronizedBase",
    .tp_basicsize = sizeof(SynchronizedObject),
    .tp_dealloc = (destructor)base_dealloc,
    .tp_repr = (reprfunc)base_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "SynchronizedBase(obj, lock=None, ctx=None)\n\nA ctypes object in shared memory "
              "with the lock that guards it.",
    .tp_traverse = (traverseproc)base_traverse,
    .tp_clear = (inquiry)base_clear,
    .tp_weaklistoffset = offsetof(SynchronizedObject, weakreflist),
    .tp_methods = base_methods,
    .tp_getset = base_getset,
    .tp_members = base_members,
    .tp_init = (initproc)base_init,
    .tp_new = PyType_GenericNew,
};

/* ---- Synchronized: Value ------------------------------------------------ */

static PyObject *value_get(SynchronizedObject *self, void *closure)
{
    (void)closure;
    if (check_init(self) < 0)
        return NULL;
    if (sync_acquire(self) < 0)
        return NULL;
    PyObject *r = self->code ? load_item(self->code, self->addr)
                             : PyObject_GetAttrString(self->obj, "value");
    return sync_release_with(self, r);
}

static int value_set(SynchronizedObject *self, PyObject *v, void *closure)
{
    (void)closure;
    if (check_init(self) < 0)
        return -1;
    if (v == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete attribute 'value'");
        return -1;
    }
    if (sync_acquire(self) < 0)
        return -1;
    int r = self->code ? store_item(self->code, self->addr, v) : 0;
    if (r == 0)
        r = PyObject_SetAttrString(self->obj, "value", v) < 0 ? -1 : 1;
    return sync_release_status(self, r < 0 ? -1 : 0);
}

static PyGetSetDef value_getset[] = {
    {"value", (getter)value_get, (setter)value_set, "the value, read and written under the lock", NULL},
    {NULL}
};

PyTypeObject cproc_SynchronizedType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cproc.sharedctypes.Synchronized",
    .tp_basicsize = sizeof(SynchronizedObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A shared ctypes number with its lock (what Value() returns).",
    .tp_traverse = (traverseproc)base_traverse,
    .tp_clear = (inquiry)base_clear,
    .tp_getset = value_getset,
};

/* ---- SynchronizedArray --------------------------------------------------- */

static Py_ssize_t array_len(SynchronizedObject *self)
{
    if (check_init(self) < 0)
        return -1;
    if (self->code)
        return self->length;
    return PyObject_Length(self->obj);
}

static PyObject *array_item(SynchronizedObject *self, Py_ssize_t i)
{
    if (check_init(self) < 0)
        return NULL;
    if (sync_acquire(self) < 0)
        return NULL;
    PyObject *r;
    if (!self->code) {
        PyObject *key = PyLong_FromSsize_t(i);
        r = key ? PyObject_GetItem(self->obj, key) : NULL;
        Py_XDECREF(key);
    } else if (i < 0 || i >= self->length) {
        PyErr_SetString(PyExc_IndexError, "invalid index");
        r = NULL;
    } else
        r = load_item(self->code, self->addr + i * self->itemsize);
    return sync_release_with(self, r);
}

static PyObject *array_slice(SynchronizedObject *self, PyObject *key)
{
    Py_ssize_t start, stop, step;
    if (PySlice_Unpack(key, &start, &stop, &step) < 0)
        return NULL;
    Py_ssize_t n = PySlice_AdjustIndices(self->length, &start, &stop, step);
    PyObject *list = PyList_New(n);
    if (list == NULL)
        return NULL;
    if (sync_acquire(self) < 0) {
        Py_DECREF(list);
        return NULL;
    }
    const char *p = self->addr + start * self->itemsize;
    const Py_ssize_t stride = step * self->itemsize;
    for (Py_ssize_t k = 0; k < n; k++, p += stride) {
        PyObject *item = load_item(self->code, p);
        if (item == NULL) {
            Py_DECREF(list);
            list = NULL;
            break;
        }
        PyList_SET_ITEM(list, k, item);
    }
    return sync_release_with(self, list);
}

static PyObject *array_subscript(SynchronizedObject *self, PyObject *key)
{
    if (check_init(self) < 0)
        return NULL;
    if (self->code && PyIndex_Check(key)) {
        Py_ssize_t i = PyNumber_AsSsize_t(key, PyExc_IndexError);
        if (i == -1 && PyErr_Occurred())
            return NULL;
        if (i < 0)
            i += self->length;
        return array_item(self, i);
    }
    if (self->code && self->code != 'c' && PySlice_Check(key))
        return array_slice(self, key);   /* ctypes returns bytes for c_char slices */
    if (sync_acquire(self) < 0)
        return NULL;
    return sync_release_with(self, PyObject_GetItem(self->obj, key));
}

static int array_ass_subscript(SynchronizedObject *self, PyObject *key, PyObject *v)
{
    if (check_init(self) < 0)
        return -1;
    Py_ssize_t i = -1;
    int fast = self->code && v != NULL && PyIndex_Check(key);
    if (fast) {
        i = PyNumber_AsSsize_t(key, PyExc_IndexError);
        if (i == -1 && PyErr_Occurred())
            return -1;
        if (i < 0)
            i += self->length;
    }
    if (sync_acquire(self) < 0)
        return -1;
    int r = 0;
    if (fast) {
        if (i < 0 || i >= self->length) {
            PyErr_SetString(PyExc_IndexError, "invalid index");
            return sync_release_status(self, -1);
        }
        r = store_item(self->code, self->addr + i * self->itemsize, v);
    }
    if (r == 0) {
        if (fast) {   /* a value ctypes must judge: hand it the normalised index */
            PyObject *k = PyLong_FromSsize_t(i);
            r = k ? PyObject_SetItem(self->obj, k, v) : -1;
            Py_XDECREF(k);
        } else
            r = v ? PyObject_SetItem(self->obj, key, v) : PyObject_DelItem(self->obj, key);
    }
    if (r > 0)
        r = 0;
    if (sync_release(self) < 0)
        return -1;
    return r;
}

static int array_ass_item(SynchronizedObject *self, Py_ssize_t i, PyObject *v)
{
    PyObject *key = PyLong_FromSsize_t(i);
    if (key == NULL)
        return -1;
    int r = array_ass_subscript(self, key, v);
    Py_DECREF(key);
    return r;
}

static PySequenceMethods array_as_sequence = {
    .sq_length = (lenfunc)array_len,
    .sq_item = (ssizeargfunc)array_item,
    .sq_ass_item = (ssizeobjargproc)array_ass_item,
};

static PyMappingMethods array_as_mapping = {
    .mp_length = (lenfunc)array_len,
    .mp_subscript = (binaryfunc)array_subscript,
    .mp_ass_subscript = (objobjargproc)array_ass_subscript,
};

PyTypeObject cproc_SynchronizedArrayType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cproc.sharedctypes.SynchronizedArray",
    .tp_basicsize = sizeof(SynchronizedObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A shared ctypes array with its lock (what Array() returns).",
    .tp_traverse = (traverseproc)base_traverse,
    .tp_clear = (inquiry)base_clear,
    .tp_as_sequence = &array_as_sequence,
    .tp_as_mapping = &array_as_mapping,
};

/* ---- SynchronizedString: Array('c', ...) ------------------------------- */

static PyObject *string_get(SynchronizedObject *self, void *name)
{
    if (check_init(self) < 0)
        return NULL;
    if (sync_acquire(self) < 0)
        return NULL;
    return sync_release_with(self, PyObject_GetAttrString(self->obj, (const char *)name));
}

static int string_set(SynchronizedObject *self, PyObject *v, void *name)
{
    if (check_init(self) < 0)
        return -1;
    if (v == NULL) {
        PyErr_Format(PyExc_AttributeError, "cannot delete attribute '%s'", (const char *)name);
        return -1;
    }
    if (sync_acquire(self) < 0)
        return -1;
    int r = PyObject_SetAttrString(self->obj, (const char *)name, v);
    return sync_release_status(self, r);
}

static PyGetSetDef string_getset[] = {
    {"value", (getter)string_get, (setter)string_set, "the bytes up to the first NUL", "value"},
    {"raw", (getter)string_get, (setter)string_set, "all the bytes", "raw"},
    {NULL}
};

PyTypeObject cproc_SynchronizedStringType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cproc.sharedctypes.SynchronizedString",
    .tp_basicsize = sizeof(SynchronizedObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A shared ctypes char array with its lock (what Array('c', ...) returns).",
    .tp_traverse = (traverseproc)base_traverse,
    .tp_clear = (inquiry)base_clear,
    .tp_getset = string_getset,
};

/* The set of ctypes' own number types, made on first use: importing ctypes
 * costs every process that imports cproc ~2 ms, and a wrapper is only ever
 * made around a ctypes object (so ctypes is loaded by then). */
static PyObject *get_standard_types(void)
{
    if (standard_types != NULL)
        return standard_types;
    PyObject *ctypes = PyImport_ImportModule("ctypes");
    if (ctypes == NULL)
        return NULL;
    PyObject *set = PySet_New(NULL);
    static const char *const names[] = {
        "c_char", "c_byte", "c_ubyte", "c_bool", "c_short", "c_ushort", "c_int", "c_uint",
        "c_long", "c_ulong", "c_longlong", "c_ulonglong", "c_float", "c_double", NULL};
    for (int i = 0; set && names[i]; i++) {
        PyObject *t = PyObject_GetAttrString(ctypes, names[i]);
        if (t == NULL || PySet_Add(set, t) < 0)
            Py_CLEAR(set);
        Py_XDECREF(t);
    }
    Py_DECREF(ctypes);
    return standard_types = set;
}

int cproc_sharedctypes_init(PyObject *module)
{
    (void)module;
    cproc_SynchronizedType.tp_base = &cproc_SynchronizedBaseType;
    cproc_SynchronizedArrayType.tp_base = &cproc_SynchronizedBaseType;
    cproc_SynchronizedStringType.tp_base = &cproc_SynchronizedArrayType;
    return 0;
}
