/*
 * Robust process-shared mutexes: every record's guard and the arena lock.
 *
 * PTHREAD_MUTEX_ROBUST: when a holder dies, the next locker gets EOWNERDEAD
 * and takes over; for a record whose flag is up it then finishes the dead
 * setter's wakeups.  Critical sections are a few hundred nanoseconds, so a
 * busy lock is spun on briefly before sleeping (the robust type never spins
 * by itself).
 */
#include "arena.h"

#include <errno.h>

/* Lock calls that failed where no caller could be told (an unlock, a
 * lock taken while another is held): counted, and asserted zero by the
 * tests (_native.lock_faults()), never ignored. */
static unsigned long faults;

void
note_lock_fault(int rc)
{
    if (rc != 0) __atomic_add_fetch(&faults, 1, __ATOMIC_RELAXED);
}

unsigned long
lock_fault_count(void)
{
    return __atomic_load_n(&faults, __ATOMIC_RELAXED);
}

int
mutex_init(pthread_mutex_t *m)
{
    pthread_mutexattr_t attr;
    int rc = pthread_mutexattr_init(&attr);
    if (rc == 0) rc = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    if (rc == 0) rc = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    if (rc == 0) rc = pthread_mutex_init(m, &attr);
    pthread_mutexattr_destroy(&attr);
    return rc;
}

/*
 * Lock without holding the GIL while blocked: the holder may be another
 * thread of this process that needs the GIL to finish.  Returns 0 or an
 * errno value (no exception is set: the caller may hold another lock).  A
 * lock taken over from a dead holder is made consistent; `repair` (may be
 * NULL) is a record whose interrupted set() is finished.
 */
int
lock_mutex(ArenaObject *a, pthread_mutex_t *m, Record *repair)
{
    int rc = pthread_mutex_trylock(m);
    for (int spin = 0; rc == EBUSY && spin < LOCK_SPINS; spin++) {
        cpu_relax();
        rc = pthread_mutex_trylock(m);
    }
    if (rc == EBUSY) {
        Py_BEGIN_ALLOW_THREADS
        rc = pthread_mutex_lock(m);
        Py_END_ALLOW_THREADS
    }
    if (rc == EOWNERDEAD) {
        int made = pthread_mutex_consistent(m);
        if (made != 0) {
            /* Left inconsistent, the mutex turns unusable (ENOTRECOVERABLE)
             * for everyone: say so rather than go on unprotected. */
            note_lock_fault(pthread_mutex_unlock(m));
            return made;
        }
        __atomic_add_fetch(&a->header->recoveries, 1, __ATOMIC_RELAXED);
        if (repair != NULL && (__atomic_load_n(&repair->state, __ATOMIC_ACQUIRE) & STATE_FLAG)) {
            /* The dead holder published the flag but may not have woken
             * everyone: finish its set(). Waking under the lock is fine here. */
            uint32_t wake[WAKE_BATCH];
            int n = 0;
            wake_fired(a, repair, wake, &n);
            wake_slots(a, wake, n);
        }
        rc = 0;
    }
    return rc;
}

/* lock_mutex, raising OSError on failure: for callers holding no other lock. */
int
lock_or_error(ArenaObject *a, pthread_mutex_t *m, Record *repair)
{
    int rc = lock_mutex(a, m, repair);
    if (rc != 0) {
        errno = rc;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

void
unlock_mutex(pthread_mutex_t *m)
{
    note_lock_fault(pthread_mutex_unlock(m));
}
