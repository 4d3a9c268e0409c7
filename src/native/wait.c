/*
 * Waiting: sleeping on a slot until a record is set, and the one rule for
 * a wakeup that never came.
 */
#include "arena.h"

#include <errno.h>

/*
 * Sleep on a slot's word until it is set, the deadline passes, or a signal
 * needs handling.  Returns 1 woken, 0 timed out, -1 error (exception set),
 * 2 when the process that claimed `watch` died (the caller fails it).
 * `watch`, if not NULL, is the record waited on: the waiter registers for
 * the watch (above) and returns 1 when its generation moves.  Without one,
 * the caller bounds the park and re-checks itself (multi-waits).
 */
static int
park_slot(ArenaObject *self, Slot *s, Record *watch, uint32_t generation, double timeout)
{
    long long deadline = timeout < 0 ? -1 : os_now_ns() + (long long)(timeout * 1e9);
    Parked parked = {.arena = self, .slot = s, .record = watch, .generation = generation};
    if (watch != NULL) watch_register(&parked);
    int result = -2;
    for (;;) {
        Py_BEGIN_ALLOW_THREADS
        for (;;) {
            if (__atomic_load_n(&s->word, __ATOMIC_ACQUIRE)) {
                result = 1;
                break;
            }
            if (watch != NULL &&
                GENERATION(__atomic_load_n(&watch->state, __ATOMIC_ACQUIRE)) != generation) {
                result = 1;
                break;
            }
            if (watch != NULL && claim_lost(self, watch)) {
                result = 2;
                break;
            }
            int watching = watch != NULL && watch_claim(&parked);
            long long wait_ns = watching ? RECHECK_NS : -1;
            if (deadline >= 0) {
                long long left = deadline - os_now_ns();
                if (left <= 0) {
                    result = 0;
                    break;
                }
                if (wait_ns < 0 || left < wait_ns) wait_ns = left;
            }
            int rc = os_wait_word(&s->word, 0, wait_ns);
            if (rc == EINTR) break;
            if (rc == ETIMEDOUT && watching) watch_round();
        }
        Py_END_ALLOW_THREADS
        if (result != -2) break;
        if (PyErr_CheckSignals() < 0) {
            result = -1;
            break;
        }
    }
    if (watch != NULL) watch_unregister(&parked);
    return result;
}

/*
 * Seconds from an already checked timeout: None (forever, -1) or a float.
 * Users' timeouts are read in one place, mpevent._checks.check_timeout;
 * the Python callers pass its result, so this only converts.
 */
int
parse_timeout(PyObject *arg, double *timeout)
{
    if (arg == Py_None) {
        *timeout = -1.0;
        return 0;
    }
    if (!PyFloat_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "timeout: a float from check_timeout() or None, not %s",
                     Py_TYPE(arg)->tp_name);
        return -1;
    }
    *timeout = PyFloat_AS_DOUBLE(arg);
    return 0;
}

/* park(slot, timeout) -> bool: sleep until the slot is woken (multi-wait). */
PyObject *
Arena_park(ArenaObject *self, PyObject *args)
{
    unsigned long slot;
    PyObject *timeout_arg;
    double timeout;
    if (!PyArg_ParseTuple(args, "kO:park", &slot, &timeout_arg)) return NULL;
    if (check_slot(self, slot) < 0 || parse_timeout(timeout_arg, &timeout) < 0) return NULL;
    int woken = park_slot(self, &self->slots[slot], NULL, 0, timeout);
    if (woken < 0) return NULL;
    return PyBool_FromLong(woken);
}

/* reset(slot): arm the slot's word before queueing it anywhere. */
PyObject *
Arena_reset(ArenaObject *self, PyObject *arg)
{
    unsigned long slot;
    if (parse_slot(self, arg, &slot) < 0) return NULL;
    __atomic_store_n(&self->slots[slot].word, 0, __ATOMIC_RELEASE);
    Py_RETURN_NONE;
}

/* wake(slot): wake a slot from outside any record (e.g. to stop the hub). */
PyObject *
Arena_wake(ArenaObject *self, PyObject *arg)
{
    unsigned long slot;
    if (parse_slot(self, arg, &slot) < 0) return NULL;
    __atomic_store_n(&self->slots[slot].word, 1, __ATOMIC_RELEASE);
    futex_wake_all(&self->slots[slot].word);
    Py_RETURN_NONE;
}

/*
 * The whole single-record wait: True when the flag is up on entry or a
 * set() happened while waiting; False on timeout.  timeout < 0: forever.
 * The caller has checked the flag and the zero timeout already.
 */
static PyObject *
wait_record(ArenaObject *self, Record *r, unsigned long slot, double timeout)
{
    Slot *s = &self->slots[slot];
    uint32_t index = (uint32_t)(((char *)r - self->records) / RECORD_SIZE);

    if (spin_for_flag(self, r)) Py_RETURN_TRUE;
    lock_word(self, &r->lock, r);
    uint32_t state = __atomic_load_n(&r->state, __ATOMIC_ACQUIRE);
    if (state & STATE_FLAG) {
        unlock_word(self, &r->lock);
        Py_RETURN_TRUE;
    }
    __atomic_store_n(&s->word, 0, __ATOMIC_RELAXED);
    enqueue_link(self, r, index, (uint32_t)slot, (uint32_t)slot);
    unlock_word(self, &r->lock);

    int woken = park_slot(self, s, r, GENERATION(state), timeout);
    if (woken == 2 && record_fail_claim(self, r, CLAIM_DEAD) < 0) woken = -1;
    if (woken == 1 && __atomic_load_n(&s->word, __ATOMIC_ACQUIRE)) {
        Py_RETURN_TRUE; /* a setter dequeued us: nothing left to undo */
    }
    /* Timed out, interrupted, or saw the generation move without being
     * dequeued (its setter died): take our link out ourselves. */
    PyObject *exc_type, *exc_value, *exc_tb;
    PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
    lock_word(self, &r->lock, r);
    remove_link(self, r, (uint32_t)slot);
    int fired = GENERATION(__atomic_load_n(&r->state, __ATOMIC_ACQUIRE)) != GENERATION(state);
    unlock_word(self, &r->lock);
    if (exc_type != NULL) {
        PyErr_Restore(exc_type, exc_value, exc_tb);
        return NULL;
    }
    return PyBool_FromLong(fired);
}

/*
 * wait(record, slot, timeout) -> bool: the whole single-record wait in one
 * call.  True when the flag is up on entry or a set() happened while
 * waiting; False on timeout.  timeout: None (forever) or seconds, checked
 * and found positive by the caller (Linkable._wait_ready).
 */
PyObject *
Arena_wait(ArenaObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "wait(record, slot, timeout)");
        return NULL;
    }
    Record *r = parse_record(self, args[0]);
    if (r == NULL) return NULL;
    if (__atomic_load_n(&r->state, __ATOMIC_ACQUIRE) & STATE_FLAG) Py_RETURN_TRUE;
    double timeout;
    if (parse_timeout(args[2], &timeout) < 0) return NULL;
    unsigned long slot = PyLong_AsUnsignedLong(args[1]);
    if (slot == (unsigned long)-1 && PyErr_Occurred()) return NULL;
    if (check_slot(self, slot) < 0) return NULL;
    return wait_record(self, r, slot, timeout);
}
