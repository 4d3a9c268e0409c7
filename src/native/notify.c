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
 *   - the thread parks registered with the process's one watch (wait.c)
 *     as waiting on the loop's parking lot's links (a Watchlist, kept by
 *     mpevent.shm._parking): when the watch finds one of their records moved
 *     with no wakeup (a setter or claimer that died), or the lot empty
 *     (so that an idle loop's reader runs and retires the slot and the
 *     thread), it flags SLOT_RECHECK, and the thread adds NOTIFY_TICK to
 *     the eventfd's count instead of 1: the reader tells them apart by
 *     the sum it reads, and runs recheck() only then.  An idle loop with
 *     waiters is never woken, and this thread wakes on a timer only while
 *     it holds the watch (once a second for the whole process).
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
    PyObject_HEAD
    ArenaObject *arena;
    WatchlistObject *list; /* the loop's lot's links (wait.c) */
    Slot *slot;
    int fd;
    uint32_t stop;
    uint32_t exited; /* the thread's last store: 1 once it touches nothing of ours */
    int running;
    unsigned int owner; /* the process whose thread this is */
} NotifierObject;

static void
notifier_run(void *arg)
{
    NotifierObject *n = arg;
    uint32_t *word = &n->slot->word;
    Parked parked = {.arena = n->arena, .slot = n->slot, .set = &n->list->set, .wake_when_empty = 1};
    watch_register(&parked);
    while (!load_acquire(&n->stop)) {
        watch_park(&parked, -1); /* every signal is blocked: no EINTR */
        if (load_acquire(&n->stop)) break;
        /* The swap before the write (see the top); a hand-over's bit goes
         * too: the watch knows who holds it. */
        uint32_t seen = exchange_acq_rel(word, 0);
        if (seen & SLOT_RECHECK)
            os_notify_fd(n->fd, NOTIFY_TICK); /* the loop applies recheck() to its links */
        else if (seen & SLOT_WOKEN)
            os_notify_fd(n->fd, 1); /* the loop looks at its links' fired bits */
    }
    watch_unregister(&parked);
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

/* Notifier(arena, slot, fd, watchlist): start the thread for `slot`, writing to `fd`. */
static PyObject *
Notifier_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *arena, *list;
    unsigned long slot;
    int fd;
    if (!PyArg_ParseTuple(args, "OkiO:Notifier", &arena, &slot, &fd, &list)) return NULL;
    if (arena_argument(arena, "Notifier()") == NULL) return NULL;
    if (!PyObject_TypeCheck(list, ((ArenaObject *)arena)->state->watchlist_type)) {
        PyErr_Format(PyExc_TypeError, "Notifier() needs a Watchlist, not %.200s",
                     Py_TYPE(list)->tp_name);
        return NULL;
    }
    if (check_slot((ArenaObject *)arena, slot) < 0) return NULL;
    NotifierObject *n = (NotifierObject *)type->tp_alloc(type, 0);
    if (n == NULL) return NULL;
    n->arena = (ArenaObject *)Py_NewRef(arena);
    n->list = (WatchlistObject *)Py_NewRef(list);
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

static void
Notifier_dealloc(NotifierObject *n)
{
    PyTypeObject *type = Py_TYPE(n);
    notifier_stop(n);
    Py_XDECREF(n->list);
    Py_XDECREF(n->arena);
    type->tp_free((PyObject *)n);
    Py_DECREF(type);
}

static PyMethodDef Notifier_methods[] = {
    {"close", (PyCFunction)Notifier_close, METH_NOARGS,
     "close(): stop and join the thread (in a forked child: forget it)."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot Notifier_slots[] = {
    {Py_tp_new, Notifier_new},
    {Py_tp_dealloc, Notifier_dealloc},
    {Py_tp_methods, Notifier_methods},
    {Py_tp_doc, "Notifier(arena, slot, fd, watchlist): a C thread turning the slot's wakeups "
                "into eventfd writes."},
    {0, NULL},
};

PyType_Spec NotifierSpec = {
    .name = "mpevent.shm._native.Notifier",
    .basicsize = sizeof(NotifierObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = Notifier_slots,
};
