/*
 * The notifier: a waiter slot that wakes an event loop, with no Python
 * code and no GIL between set() and the loop.
 *
 * An asyncio loop sleeps in epoll, not on a futex.  A Notifier is a thread
 * of C that sleeps on one waiter slot for the loop (the loop queues a link
 * of that slot on each record it awaits, mpevent.shm._loop) and turns each
 * wakeup into a write to an eventfd that the loop reads with add_reader():
 * set() -> futex wake -> eventfd -> the loop, one hop.
 *
 * The protocol, with no lost wakeup:
 *   - the thread sleeps while the slot's word is 0;
 *   - woken, it swaps the word back to 0 *before* it writes the eventfd:
 *     a set() that lands after the swap wakes it again, and one that
 *     landed before it fired its link, which the loop reads after it
 *     reads the eventfd;
 *   - every RECHECK_NS without a wakeup it applies the one rule of a
 *     wakeup that never came (record_moved, claims.c) to the links the loop
 *     told it of (watch()), and writes the eventfd only if one moved (a
 *     setter or claimer that died): an idle loop with waiters is never
 *     woken, and its process wakes once a second, on this thread alone.
 *     With no link watched it writes anyway, so that an idle loop's reader
 *     runs and retires the slot and the thread (mpevent.shm._loop).  A
 *     tick adds NOTIFY_TICK to the eventfd's count, a wakeup 1: the reader
 *     tells them apart by the sum it reads, and runs recheck() only then.
 *     The watched list is this object's, under its own local_lock
 *     (innermost: nothing is taken while it is held).
 *
 * The fast path, with no thread hop: the loop also binds an abstract unix
 * datagram socket at the address of (token, slot) and publishes the token
 * in Slot.loop (set_loop); a set() that fires a link of that slot sends
 * one datagram there (wake_slot, waiters.c) instead of a futex wake, and
 * the loop, reading it, arms the word itself (reset) before it looks at
 * its links' fired bits -- the same order as the thread's swap, so a
 * set() after the reset sends again.  The thread stays for the rest: a
 * setter that cannot reach the address (another network namespace, a
 * loop gone) falls back to the futex wake, and the tick still runs.  A
 * datagram sent to a stale token (the loop retired, set_loop(slot, 0) not
 * yet seen) finds no socket and falls back too; one that reaches a wrong
 * socket only makes a loop look for nothing.
 *
 * Lifetime: the notifier holds its arena (the mapping) while the thread
 * runs; close() raises `stop`, wakes the word and waits, without the GIL,
 * for the thread's last act: raising `exited` (after it, the thread
 * touches nothing of ours).  The thread is started by Python's own
 * PyThread_start_new_thread, not pthread_create: glibc 2.34 moved the
 * pthread calls into libc under new symbol versions, which would make the
 * wheel manylinux_2_34.  It blocks every signal (os_block_signals around the
 * start: the thread inherits the mask), so they reach the threads Python
 * knows.  A forked child has no thread: close() there only forgets it.
 * The eventfd belongs to the caller, who closes it after close().
 */
#include "arena.h"

#include <errno.h>
#include <limits.h>

typedef struct {
    uint32_t link, index, generation;
} Watched;

typedef struct {
    PyObject_HEAD
    ArenaObject *arena;
    uint32_t watch_lock; /* a local_lock over watched and count */
    Watched *watched;
    size_t count, capacity;
    Slot *slot;
    int fd;
    uint32_t stop;
    uint32_t exited; /* the thread's last store: 1 once it touches nothing of ours */
    int running;
    unsigned int owner; /* the process whose thread this is */
} NotifierObject;

/* At a tick: whether the loop must look (a watched record moved, or none is watched). */
static int
notifier_tick_moved(NotifierObject *n)
{
    local_lock(&n->watch_lock);
    int moved = n->count == 0;
    for (size_t i = 0; i < n->count && !moved; i++)
        moved = record_moved(n->arena, record_at(n->arena, n->watched[i].index),
                             n->watched[i].generation) != 0;
    local_unlock(&n->watch_lock);
    return moved;
}

static void
notifier_run(void *arg)
{
    NotifierObject *n = arg;
    uint32_t *word = &n->slot->word;
    while (!load_acquire(&n->stop)) {
        int rc = 0;
        if (load_acquire(word) == 0) rc = os_wait_word(word, 0, RECHECK_NS);
        if (load_acquire(&n->stop)) break;
        uint64_t count = 1; /* a wakeup: the loop looks at its links' fired bits */
        if (exchange_acq_rel(word, 0) == 0) {
            if (rc != ETIMEDOUT) continue; /* a spurious return: nothing to tell */
            if (!notifier_tick_moved(n)) continue; /* a tick, and nothing to look at */
            count = NOTIFY_TICK; /* the loop applies recheck() to its links */
        }
        os_notify_fd(n->fd, count);
    }
    store_release(&n->exited, 1);
    os_wake_private(&n->exited, INT_MAX);
}

static void
notifier_stop(NotifierObject *n)
{
    if (!n->running) return;
    n->running = 0;
    if (n->owner != os_pid()) return; /* a forked child: the thread is the parent's */
    store_release(&n->stop, 1);
    fetch_or_release(&n->slot->word, SLOT_WOKEN);
    os_wake_word(&n->slot->word, INT_MAX);
    Py_BEGIN_ALLOW_THREADS
    while (!load_acquire(&n->exited)) os_wait_private(&n->exited, 0, -1);
    Py_END_ALLOW_THREADS
}

/* loop_address(slot, token) -> bytes: the abstract address a loop binds. */
PyObject *
Arena_loop_address(ArenaObject *self, PyObject *args)
{
    unsigned long slot;
    unsigned int token;
    if (!PyArg_ParseTuple(args, "kI:loop_address", &slot, &token)) return NULL;
    char path[OS_LOOP_ADDRESS_MAX];
    size_t length = os_loop_address(token, (uint32_t)slot, path, sizeof path);
    return PyBytes_FromStringAndSize(path, (Py_ssize_t)length);
}

/* wakeup_sender() -> int: the descriptor of this process's datagram sender
 * (made now if need be; it lives as long as the process). */
PyObject *
native_wakeup_sender(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    int fd = os_wakeup_sender();
    if (fd < 0) return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromLong(fd);
}

/* set_loop(slot, token): wake `slot` by datagram from now on (0: by futex). */
PyObject *
Arena_set_loop(ArenaObject *self, PyObject *args)
{
    PyObject *slot_arg;
    unsigned int token;
    unsigned long slot;
    if (!PyArg_ParseTuple(args, "OI:set_loop", &slot_arg, &token)) return NULL;
    if (parse_slot(self, slot_arg, &slot) < 0) return NULL;
    store_release(&self->slots[slot].loop, (uint32_t)token);
    Py_RETURN_NONE;
}

/* Notifier(arena, slot, fd): start the thread for `slot`, writing to `fd`. */
static PyObject *
Notifier_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *arena;
    unsigned long slot;
    int fd;
    if (!PyArg_ParseTuple(args, "Oki:Notifier", &arena, &slot, &fd)) return NULL;
    if (!is_arena(arena)) {
        PyErr_Format(PyExc_TypeError, "Notifier() needs an Arena, not %.200s",
                     Py_TYPE(arena)->tp_name);
        return NULL;
    }
    if (check_slot((ArenaObject *)arena, slot) < 0) return NULL;
    NotifierObject *n = (NotifierObject *)type->tp_alloc(type, 0);
    if (n == NULL) return NULL;
    n->arena = (ArenaObject *)Py_NewRef(arena);
    n->slot = &n->arena->slots[slot];
    n->fd = fd;
    n->owner = os_pid();
    os_signals before;
    os_block_signals(&before); /* the thread inherits "all blocked" */
    unsigned long started = PyThread_start_new_thread(notifier_run, n);
    os_restore_signals(&before);
    if (started == PYTHREAD_INVALID_THREAD_ID) {
        Py_DECREF(n);
        PyErr_SetString(PyExc_RuntimeError, "could not start the notifier's thread");
        return NULL;
    }
    n->running = 1;
    return (PyObject *)n;
}

static PyObject *
Notifier_close(NotifierObject *n, PyObject *Py_UNUSED(ignored))
{
    notifier_stop(n);
    Py_RETURN_NONE;
}

/* watch(link, index, generation): the link queued on record `index` at `generation`. */
static PyObject *
Notifier_watch(NotifierObject *n, PyObject *const *args, Py_ssize_t nargs)
{
    unsigned long link, index, generation;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "watch(link, index, generation) takes 3 arguments");
        return NULL;
    }
    link = PyLong_AsUnsignedLong(args[0]);
    index = PyLong_AsUnsignedLong(args[1]);
    generation = PyLong_AsUnsignedLong(args[2]);
    if (PyErr_Occurred() || check_record(n->arena, index) < 0) return NULL;
    local_lock(&n->watch_lock);
    if (n->count == n->capacity) {
        size_t capacity = n->capacity ? 2 * n->capacity : 16;
        Watched *grown = PyMem_RawRealloc(n->watched, capacity * sizeof(Watched));
        if (grown == NULL) {
            local_unlock(&n->watch_lock);
            return PyErr_NoMemory();
        }
        n->watched = grown;
        n->capacity = capacity;
    }
    n->watched[n->count++] = (Watched){(uint32_t)link, (uint32_t)index, (uint32_t)generation};
    local_unlock(&n->watch_lock);
    Py_RETURN_NONE;
}

/* unwatch(link): the link left its record (fired or not). */
static PyObject *
Notifier_unwatch(NotifierObject *n, PyObject *arg)
{
    unsigned long link = PyLong_AsUnsignedLong(arg);
    if (PyErr_Occurred()) return NULL;
    local_lock(&n->watch_lock);
    for (size_t i = 0; i < n->count; i++) {
        if (n->watched[i].link == (uint32_t)link) {
            n->watched[i] = n->watched[--n->count];
            break;
        }
    }
    local_unlock(&n->watch_lock);
    Py_RETURN_NONE;
}

static void
Notifier_dealloc(NotifierObject *n)
{
    PyTypeObject *type = Py_TYPE(n);
    notifier_stop(n);
    PyMem_RawFree(n->watched);
    Py_XDECREF(n->arena);
    type->tp_free((PyObject *)n);
    Py_DECREF(type);
}

static PyMethodDef Notifier_methods[] = {
    {"close", (PyCFunction)Notifier_close, METH_NOARGS,
     "close(): stop and join the thread (in a forked child: forget it)."},
    {"watch", (PyCFunction)(void (*)(void))Notifier_watch, METH_FASTCALL,
     "watch(link, index, generation): look at this link's record at each tick."},
    {"unwatch", (PyCFunction)Notifier_unwatch, METH_O,
     "unwatch(link): the link left its record."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot Notifier_slots[] = {
    {Py_tp_new, Notifier_new},
    {Py_tp_dealloc, Notifier_dealloc},
    {Py_tp_methods, Notifier_methods},
    {Py_tp_doc, "Notifier(arena, slot, fd): a C thread turning the slot's wakeups into "
                "eventfd writes."},
    {0, NULL},
};

PyType_Spec NotifierSpec = {
    .name = "mpevent.shm._native.Notifier",
    .basicsize = sizeof(NotifierObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = Notifier_slots,
};
