/*
 * The arena's locks: a 32-bit word in shared memory, owned by a liveness
 * lock, and the process-local lock of the watch.
 *
 * An arena lock (every Record.lock, and Header.lock) is a word:
 *
 *   0                     free
 *   label                 held by the process whose lock owner is `label`
 *   label | LOCK_WAITERS  held, and someone may sleep on the word
 *
 * A label (LOCK_LABEL) names a lock owner: an index into the owner table
 * and that owner's epoch.  Each process that maps an arena takes one lock
 * owner for as long as it maps it (liveness.c, "lock owners"): it holds
 * the OFD lock on the owner's byte of the segment file, which the kernel
 * drops when the process dies, SIGKILL included, in any PID namespace.
 * So the one liveness mechanism of the arena (OFD locks) also says whether
 * a lock's holder lives.  This replaces robust pthread mutexes, whose size
 * and meaning are libc's (40 bytes on x86-64 glibc, 48 on aarch64; another
 * layout on musl), which need a kernel robust list (missing under
 * qemu-user and on macOS), and which are a second liveness mechanism.
 * Boost.Interprocess emulates robust mutexes the same way (an owner id in
 * the mutex and a lock file per process); SQLite's -shm DMS lock is the
 * same OFD idea.
 *
 * The protocol (lock_word / unlock_word):
 *
 *   - take: one compare-and-swap 0 -> label.  Busy: retry LOCK_SPINS times
 *     (critical sections are a few hundred nanoseconds), then set
 *     LOCK_WAITERS and sleep on the word (os_wait_word) for at most
 *     LOCK_CHECK_NS, the GIL released.  A sleeper that takes the lock
 *     takes it with LOCK_WAITERS set, since others may still sleep.
 *   - give back: the holder swaps its label for 0 (a CAS, so a word that
 *     is not its own is never touched: that is a fault, counted); if
 *     LOCK_WAITERS was set it wakes one sleeper.
 *   - a dead holder: a sleeper whose sleep timed out asks whether the
 *     word's owner lives (owner_alive: epoch still the label's, and its
 *     byte still locked by someone).  If not, it takes the lock over with
 *     one CAS from exactly the word it read, so of two would-be
 *     recoverers only one wins and repairs; the other reads the winner's
 *     label, alive, and sleeps on.  The winner counts the recovery and,
 *     for a record whose flag is up, finishes the dead setter's wakeups.
 *   - a stopped holder (SIGSTOP, a debugger) still holds its byte: it is
 *     never taken for dead; its lock is waited for.
 *   - a process with no lock owner (none could be had: every owner byte
 *     held) uses LOCK_ANONYMOUS, which is never taken over.
 *
 * Lock order: arena.h.
 */
#include "arena.h"

#include <errno.h>
#include <limits.h>

/* Lock calls that failed where no caller could be told (an unlock of a
 * word that was not ours): counted, and asserted zero by the tests
 * (_native.lock_faults()), never ignored. */
static unsigned long faults;

void
note_lock_fault(int rc)
{
    if (rc != 0) add_fetch_relaxed(&faults, 1);
}

unsigned long
lock_fault_count(void)
{
    return load_relaxed(&faults);
}

static uint32_t
label_of(ArenaObject *a)
{
    return load_relaxed(&a->lock_label) != 0 ? load_relaxed(&a->lock_label) : LOCK_ANONYMOUS;
}

/*
 * Take an arena lock word, sleeping without the GIL while it is busy (the
 * holder may be another thread of this process that needs the GIL to
 * finish).  The GIL is held on entry.  It cannot fail: it returns once the
 * word is this process's -- 1 if it was taken over from a dead holder
 * (counted in the header's recoveries), whose half-done work the caller
 * finishes (a record's: lock_record in waiters.c), else 0.
 */
int
lock_word(ArenaObject *a, uint32_t *word)
{
    uint32_t label = label_of(a);
    uint32_t seen = 0;
    if (cas_acquire(word, &seen, label))
        return 0;
    for (int spin = 0; spin < LOCK_SPINS; spin++) {
        cpu_relax();
        seen = 0;
        if (load_relaxed(word) == 0 &&
            cas_acquire(word, &seen, label))
            return 0;
    }
    int recovered = 0;
    Py_BEGIN_ALLOW_THREADS
    for (;;) {
        seen = load_relaxed(word);
        if (seen == 0) {
            if (cas_acquire(word, &seen, label | LOCK_WAITERS))
                break;
            continue;
        }
        if (!(seen & LOCK_WAITERS)) {
            uint32_t marked = seen | LOCK_WAITERS;
            if (!cas_relaxed(word, &seen, marked))
                continue;
            seen = marked;
        }
        if (os_wait_word(word, seen, LOCK_CHECK_NS) != ETIMEDOUT) continue;
        /* Held for a whole LOCK_CHECK_NS: is its holder still alive? */
        if (load_relaxed(word) == seen &&
            !owner_alive(a, seen & ~LOCK_WAITERS) &&
            cas_acquire(word, &seen, label | LOCK_WAITERS)) {
            recovered = 1;
            break;
        }
    }
    Py_END_ALLOW_THREADS
    if (recovered) add_fetch_relaxed(&a->header->recoveries, 1);
    return recovered;
}

void
unlock_word(ArenaObject *a, uint32_t *word)
{
    uint32_t label = label_of(a);
    uint32_t seen = load_relaxed(word);
    do {
        if ((seen & ~LOCK_WAITERS) != label) {
            note_lock_fault(1); /* not ours: taken over while we lived, or never held */
            return;
        }
    } while (!cas_release(word, &seen, 0));
    if (seen & LOCK_WAITERS) os_wake_word(word, 1);
}

/* lock(): take the arena lock (allocation, the attach table), for Python. */
PyObject *
Arena_lock(ArenaObject *self, PyObject *Py_UNUSED(ignored))
{
    lock_word(self, &self->header->lock);
    Py_RETURN_NONE;
}

PyObject *
Arena_unlock(ArenaObject *self, PyObject *Py_UNUSED(ignored))
{
    unlock_word(self, &self->header->lock);
    Py_RETURN_NONE;
}
