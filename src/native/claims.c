/*
 * Claims, and the one rule for a wakeup that never came.
 *
 * A record's claim names the attach entry (and its epoch) of the process
 * that promised to set it (Arena_claim).  When that process is found dead
 * while the flag is down, the record is failed: CLAIM_DEAD is written and
 * the record is set like any set(), so every waiter of every kind wakes by
 * the one path it already has, and later readers see the same failure.
 *
 * The rule every sleeper re-checks by (record_moved, record_recheck): a
 * record moved past the generation its waiter saw if a set() published a
 * new one (a setter that died after publishing never woke anyone), or if
 * its claimer died unset.  The watch and multi-waits (wait.c) and
 * event loops' notifier (notify.c) apply it; only here is it written.
 *
 * Who is alive is liveness.c's (entry_alive); failing takes the record lock
 * (waiters.c's lock_record) and publishes like a set (records.c).
 */
#include "arena.h"

#include <string.h>

/*
 * Whether `r` moved past `generation` by the rule above, without the GIL
 * or a lock: 1 set since, 2 its claimer died unset and nobody failed it
 * yet (record_recheck fails it), 0 neither.
 */
int
record_moved(ArenaObject *a, Record *r, uint32_t generation)
{
    if (GENERATION(load_acquire(&r->state)) != generation) return 1;
    return claim_lost(a, r) ? 2 : 0;
}

/* record_moved(), failing a lost claim (GIL held): 1 set since, 0 not. */
int
record_recheck(ArenaObject *a, Record *r, uint32_t generation)
{
    int moved = record_moved(a, r, generation);
    if (moved == 2) {
        /* Judged without the lock: record_fail_claim judges again under
         * it (the claim may be a live process's by now), and whoever
         * failed it, a failure moved the generation. */
        record_fail_claim(a, r, CLAIM_DEAD);
        moved = GENERATION(load_acquire(&r->state)) != generation;
    }
    return moved != 0;
}

/* Whether `r` is claimed, still unset, and its claimer is dead.  No GIL. */
int
claim_lost(ArenaObject *a, Record *r)
{
    uint32_t claim = load_acquire(&r->claim);
    if (claim == 0 || (claim & CLAIM_DEAD)) return 0;
    if (load_acquire(&r->state) & STATE_FLAG) return 0;
    uint32_t epoch = load_acquire(&r->claim_epoch);
    return !entry_alive(a, CLAIM_ENTRY(claim) - 1, epoch);
}

/*
 * Fail a claimed, unset record: write `how` (CLAIM_DEAD, with CLAIM_EXITED
 * when the claimer left normally) into its claim, store the failure in its
 * exception slot (VALUE_FAILED: the claimer's pid and how it ended) and
 * set it, waking every waiter -- once, under the record lock, so every
 * reader now and later finds the same failure where set_exception() would
 * have put one.  Returns 1 if this call failed it, 0 if not.  GIL held.
 *
 * The rule, and why it is judged here: a claim is failed only if, under
 * the record lock, it is still unset and still the claim the caller means
 * -- for CLAIM_DEAD, a claim whose claimer (entry and epoch, read under the
 * lock) is dead; for CLAIM_EXITED, this process's own.  Callers find a
 * claim lost without the lock (claim_lost: the watch, waiters, loops), and
 * between that look and this lock the claimer may have died and another,
 * live, process claimed the result again (a retry after a worker died,
 * Arena_claim allows it).  Judging the claim read under the lock fails the
 * dead claimer's claim and never the live one's
 * (src/native/models/claims.cpp; tests/shm/test_interleavings.py).
 */
int
record_fail_claim(ArenaObject *self, Record *r, uint32_t how)
{
    TEST_POINT_GIL("fail-claim");
    lock_record(self, r);
    uint32_t claim = load_relaxed(&r->claim), epoch = load_relaxed(&r->claim_epoch);
    int open = claim != 0 && !(claim & CLAIM_DEAD) && !(load_acquire(&r->state) & STATE_FLAG);
    int ended = (how & CLAIM_EXITED)
                    ? CLAIM_ENTRY(claim) == (uint32_t)load_relaxed(&self->held_entry) + 1 &&
                          epoch == load_relaxed(&self->held_epoch)
                    : !entry_alive(self, CLAIM_ENTRY(claim) - 1, epoch);
    if (!open || !ended) {
        unlock_word(self, &r->lock);
        return 0;
    }
    store_release(&r->claim, claim | how);
    ValueSlot failure;
    memset(&failure, 0, sizeof failure);
    failure.tag = VALUE_FAILED;
    failure.where.failure.pid = r->claim_pid;
    failure.where.failure.exited = (how & CLAIM_EXITED) != 0;
    record_publish_value(self, r, 1, &failure);
    return 1;
}

/* claim(index): this process promises to set the record (an AsyncResult). */
PyObject *
Arena_claim(ArenaObject *self, PyObject *arg)
{
    Record *r = parse_record(self, arg);
    if (r == NULL) return NULL;
    if (load_relaxed(&self->held_entry) < 0) {
        PyErr_SetString(PyExc_RuntimeError, "this process has not joined the arena");
        return NULL;
    }
    uint32_t mine = (uint32_t)load_relaxed(&self->held_entry) + 1;
    lock_record(self, r);
    uint32_t claim = r->claim, epoch = r->claim_epoch, pid = r->claim_pid;
    int set = (load_acquire(&r->state) & STATE_FLAG) != 0;
    int ours = claim != 0 && CLAIM_ENTRY(claim) == mine && epoch == load_relaxed(&self->held_epoch);
    int taken = claim != 0 && !(claim & CLAIM_DEAD) && !ours &&
                entry_alive(self, CLAIM_ENTRY(claim) - 1, epoch);
    if (!set && !taken) {
        /* claim_epoch before claim: a lock-free reader (claim_lost) that
         * sees this claim sees its epoch, or reads a mismatched pair and
         * is corrected under the lock (record_fail_claim). */
        store_relaxed(&r->claim_epoch, load_relaxed(&self->held_epoch));
        r->claim_pid = (uint32_t)os_pid();
        store_release(&r->claim, mine);
    }
    unlock_word(self, &r->lock);
    if (set) {
        PyErr_SetString(PyExc_ValueError,
                        "this AsyncResult is set already: only an unset result can be claimed");
        return NULL;
    }
    if (taken) {
        PyErr_Format(PyExc_ValueError,
                     "this AsyncResult is claimed already by a live process (pid %u in its "
                     "own namespace): one process promises to set it",
                     pid);
        return NULL;
    }
    Py_RETURN_NONE;
}

/* claim_abandon(index): this process, the claimer, exits without setting it. */
PyObject *
Arena_claim_abandon(ArenaObject *self, PyObject *arg)
{
    Record *r = parse_record(self, arg);
    if (r == NULL) return NULL;
    uint32_t claim = load_acquire(&r->claim);
    if (load_relaxed(&self->held_entry) < 0 || CLAIM_ENTRY(claim) != (uint32_t)load_relaxed(&self->held_entry) + 1 ||
        load_acquire(&r->claim_epoch) != load_relaxed(&self->held_epoch))
        Py_RETURN_NONE; /* not ours (any more) */
    record_fail_claim(self, r, CLAIM_DEAD | CLAIM_EXITED);
    Py_RETURN_NONE;
}
