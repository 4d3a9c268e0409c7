/*
 * Handle: the hot path of a public object, one C call from its method.
 *
 * Event and AsyncResult derive from Handle (through Linkable), which holds
 * the arena and record index of the object.  Event.is_set / set / clear /
 * wait and AsyncResult.ready are Handle's methods themselves (_is_set,
 * _set, _clear, _wait, bound under the public names by each class), so
 * each is a single C call: no Python frame, no argument passed through
 * layers.  The reference counting, pickling and names of a handle stay in
 * Python (mpevent.shm._record); Linkable binds a Handle to its record once and unbinds
 * it on close(), after which every method raises ValueError.
 *
 * wait() is the one exception to "one C call": C answers only the case
 * with nothing to decide (no timeout given and the flag up).  Everything
 * else -- reading the timeout, gevent, finding this thread's waiter slot,
 * parking -- is mpevent._linkable.Linkable._wait_ready, the one wait path
 * of every blocking call, which set_hooks() hands to this module.
 */
#include "arena.h"

typedef struct {
    PyObject_HEAD
    ArenaObject *arena; /* NULL: not bound yet, or closed */
    uint32_t index;
} HandleObject;

static int
closed_error(HandleObject *self)
{
    PyErr_Format(PyExc_ValueError, "operation on a closed mpevent.%s handle",
                 Py_TYPE(self)->tp_name);
    return -1;
}

/*
 * Threads (free-threaded builds included): a handle is shared by every
 * thread of its process, and close() (_unbind) may run in one while
 * another is inside set() or wait().  So the arena pointer is loaded once
 * per call, atomically, and swapped atomically; the arena it points to
 * stays alive meanwhile, since mpevent.shm._arena keeps every arena this
 * process uses until it leaves it (a handle's reference is never the last
 * one while the handle can be used).  A call racing with close() acts on
 * the record or raises ValueError, never touches freed memory.
 */
static inline ArenaObject *
handle_arena(HandleObject *self, Record **r)
{
    ArenaObject *a = load_acquire(&self->arena);
    if (a == NULL) {
        closed_error(self);
        return NULL;
    }
    *r = record_at(a, load_relaxed(&self->index));
    return a;
}

/* _bind(arena, index): point this handle at a record (Linkable does it, once). */
static PyObject *
Handle_bind(HandleObject *self, PyObject *args)
{
    PyObject *arena;
    unsigned long index;
    if (!PyArg_ParseTuple(args, "Ok:_bind", &arena, &index)) return NULL;
    if (arena_argument(arena, "_bind()") == NULL) return NULL;
    if (check_record((ArenaObject *)arena, index) < 0) return NULL;
    /* The index before the pointer that publishes it. */
    store_relaxed(&self->index, (uint32_t)index);
    ArenaObject *old = exchange_acq_rel(&self->arena, (ArenaObject *)Py_NewRef(arena));
    Py_XDECREF(old);
    Py_RETURN_NONE;
}

/* _unbind(): forget the record; later calls raise ValueError. */
static PyObject *
Handle_unbind(HandleObject *self, PyObject *Py_UNUSED(ignored))
{
    Py_XDECREF(exchange_acq_rel(&self->arena, NULL));
    Py_RETURN_NONE;
}

static PyObject *
Handle_is_set(HandleObject *self, PyObject *Py_UNUSED(ignored))
{
    Record *r;
    if (handle_arena(self, &r) == NULL) return NULL;
    return PyBool_FromLong(load_acquire(&r->state) & STATE_FLAG);
}

static PyObject *
Handle_set(HandleObject *self, PyObject *Py_UNUSED(ignored))
{
    Record *r;
    ArenaObject *a = handle_arena(self, &r);
    if (a == NULL) return NULL;
    record_set(a, r);
    Py_RETURN_NONE;
}

static PyObject *
Handle_clear(HandleObject *self, PyObject *Py_UNUSED(ignored))
{
    Record *r;
    if (handle_arena(self, &r) == NULL) return NULL;
    record_clear(r);
    Py_RETURN_NONE;
}

static PyObject *
Handle_wait(HandleObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"timeout", NULL};
    PyObject *timeout_arg = Py_None;
    Py_ssize_t given = nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0);
    if (given > 1 || (kwnames && (PyTuple_GET_SIZE(kwnames) != 1 ||
                                  !PyUnicode_Check(PyTuple_GET_ITEM(kwnames, 0)) ||
                                  PyUnicode_CompareWithASCIIString(
                                      PyTuple_GET_ITEM(kwnames, 0), names[0]) != 0))) {
        PyErr_SetString(PyExc_TypeError, "wait() takes one optional argument, timeout");
        return NULL;
    }
    if (given == 1) timeout_arg = args[0];
    Record *r;
    ArenaObject *a = handle_arena(self, &r);
    if (a == NULL) return NULL;
    /* The fast path: no timeout to read and nothing to wait for. */
    if (timeout_arg == Py_None && (load_acquire(&r->state) & STATE_FLAG))
        Py_RETURN_TRUE;
    /* The whole wait in C, when nothing needs Python: a timeout of None or
     * a positive finite number, no gevent in the process (a greenlet must
     * wait its hub's way), and a slot this thread waited with before. */
    double timeout = -1.0;
    int simple = timeout_arg == Py_None;
    if (PyFloat_CheckExact(timeout_arg)) {
        timeout = PyFloat_AS_DOUBLE(timeout_arg);
        simple = timeout > 0 && timeout < 1e9; /* NaN, inf, <= 0: Python says what */
    } else if (PyLong_CheckExact(timeout_arg)) {
        long seconds = PyLong_AsLong(timeout_arg);
        if (seconds == -1 && PyErr_Occurred()) PyErr_Clear();
        timeout = (double)seconds;
        simple = seconds > 0 && seconds < 1000000000L;
    }
    if (simple) {
        long slot = thread_slot(a);
        PyObject *modules = PyImport_GetModuleDict();
        int gevent = a->state->gevent_name == NULL ? 1 : PyDict_Contains(modules, a->state->gevent_name);
        if (gevent < 0) return NULL;
        if (slot >= 0 && !gevent) return record_wait(a, r, slot, timeout);
    }
    /* The wait path of this interpreter: the arena's module's (set_hooks). */
    PyObject *path = a->state->wait_path;
    if (path == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "mpevent.shm._native.set_hooks() was not called");
        return NULL;
    }
    PyObject *stack[] = {(PyObject *)self, timeout_arg};
    return PyObject_Vectorcall(path, stack, 2, NULL);
}

static void
Handle_dealloc(HandleObject *self)
{
    /* A Python subclass's dealloc has untracked it and cleared its slots.
     * A heap type's instance holds its type: the base's dealloc (this one)
     * gives that reference back, for subclasses too. */
    PyTypeObject *type = Py_TYPE(self);
    Py_CLEAR(self->arena);
    type->tp_free((PyObject *)self);
    Py_DECREF(type);
}

static PyMethodDef Handle_methods[] = {
    {"_bind", (PyCFunction)Handle_bind, METH_VARARGS, "_bind(arena, index): use this record."},
    {"_unbind", (PyCFunction)Handle_unbind, METH_NOARGS, "_unbind(): the handle is closed."},
    {"_is_set", (PyCFunction)Handle_is_set, METH_NOARGS,
     "_is_set($self, /)\n--\n\n"
     "Return true if and only if the object is set.\n\n"
     "For an AsyncResult: it holds a value or an exception.  A shared-memory\n"
     "read: no lock, no system call."},
    {"_wait", (PyCFunction)(void (*)(void))Handle_wait, METH_FASTCALL | METH_KEYWORDS,
     "_wait($self, /, timeout=None)\n--\n\n"
     "Block until the flag is up (or was raised meanwhile) or *timeout* passes."},
    {NULL, NULL, 0, NULL},
};

/* Event's public methods: the same calls under their public names. */
static PyMethodDef EventHandle_methods[] = {
    {"is_set", (PyCFunction)Handle_is_set, METH_NOARGS,
     "is_set($self, /)\n--\n\n"
     "Return true if and only if the flag is set.\n\n"
     "Reads shared memory: no lock, no system call."},
    {"set", (PyCFunction)Handle_set, METH_NOARGS,
     "set($self, /)\n--\n\n"
     "Set the flag and wake every waiter, in every process.\n\n"
     "Never blocks on the waiters: it writes their wake-up words and returns.  On an\n"
     "otherwise idle machine it first yields its CPU once, so that a waiting process\n"
     "the kernel queued on this CPU runs at once (MPEVENT_HANDOVER)."},
    {"clear", (PyCFunction)Handle_clear, METH_NOARGS,
     "clear($self, /)\n--\n\n"
     "Reset the flag; later wait() calls block until the next set()."},
    {"wait", (PyCFunction)(void (*)(void))Handle_wait, METH_FASTCALL | METH_KEYWORDS,
     "wait($self, /, timeout=None)\n--\n\n"
     "Block until the flag is set or *timeout* seconds pass; return the flag.\n\n"
     "Returns True at once if the flag is set.  A waiter that was blocked\n"
     "when set() ran returns True even if clear() followed at once.\n"
     "*timeout* None waits forever; zero or negative does not wait.\n"
     "Raises TypeError for a non-number timeout, ValueError for NaN.\n"
     "Inside a gevent program only the calling greenlet blocks."},
    {NULL, NULL, 0, NULL},
};

/* Heap types, one pair per interpreter (layout.c makes them from these). */
static PyType_Slot Handle_slots[] = {
    {Py_tp_dealloc, Handle_dealloc},
    {Py_tp_doc, "The shared-memory record behind a public object, and its hot path."},
    {Py_tp_methods, Handle_methods},
    {Py_tp_new, PyType_GenericNew},
    {0, NULL},
};

PyType_Spec HandleSpec = {
    .name = "mpevent.shm._native.Handle",
    .basicsize = sizeof(HandleObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = Handle_slots,
};

static PyType_Slot EventHandle_slots[] = {
    {Py_tp_doc, "Event's hot path: is_set, set, clear and wait, one C call each."},
    {Py_tp_methods, EventHandle_methods},
    {Py_tp_new, PyType_GenericNew},
    {0, NULL},
};

PyType_Spec EventHandleSpec = {
    .name = "mpevent.shm._native.EventHandle",
    .basicsize = sizeof(HandleObject), /* no fields of its own: a mixin */
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = EventHandle_slots,
};

/* set_hooks(wait_path): the Python side of wait(). */
PyObject *
native_set_hooks(PyObject *module, PyObject *path)
{
    if (!PyCallable_Check(path)) {
        PyErr_SetString(PyExc_TypeError, "set_hooks(wait_path): wait_path must be callable");
        return NULL;
    }
    NativeState *state = PyModule_GetState(module);
    Py_INCREF(path);
    Py_XSETREF(state->wait_path, path);
    Py_RETURN_NONE;
}

/*
 * untrack(obj): take an object out of the cyclic garbage collector's
 * lists.  For objects that cannot be part of a reference cycle (an Event
 * handle, a Record): creating a million of them would otherwise spend
 * half its time in collections that can never free anything.
 */
PyObject *
native_untrack(PyObject *module, PyObject *obj)
{
    if (PyObject_IS_GC(obj) && PyObject_GC_IsTracked(obj)) PyObject_GC_UnTrack(obj);
    Py_RETURN_NONE;
}
