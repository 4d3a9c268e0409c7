/*
 * Liveness: which attached processes live, as the kernel vouches for it.
 *
 * A pid names a process only inside one PID namespace: containers that
 * share /dev/shm (docker --ipc=host, a Kubernetes pod) each have their own
 * pid 1, so no pid or start time may decide who is alive.  Instead every
 * attached process holds an open-file-description lock (F_OFD_SETLK, a
 * write lock) on byte `entry` of the segment file, through a descriptor of
 * its own, for as long as it is attached.  The kernel drops that lock when
 * the last descriptor of the open file description closes: at exit, at
 * SIGKILL, in any namespace, and a reused pid cannot fake it.  SQLite's
 * unix VFS tells the live users of a -shm file apart the same way.
 *
 * The protocol (the Python side is mpevent/shm/_attach.py):
 *
 *   - joining: under the arena lock, take a FREE entry, lock its byte
 *     (non-blocking; nobody else can hold the byte of a FREE entry except
 *     a cleaner holding the whole range, see below), write it ATTACHED
 *     with a new epoch.  Then refuse if the segment is marked unlinked.
 *   - an entry is dead when it is ATTACHED and nobody holds its byte.  Its
 *     reclaimer, under the arena lock, locks the byte itself and writes it
 *     RECLAIMING; it gives the references back outside the lock, then
 *     writes it FREE under the lock and only then unlocks the byte.  A
 *     RECLAIMING entry whose byte nobody holds had a reclaimer that died
 *     midway: it is written FREE and nothing more is released, so what
 *     was left leaks and nothing is released twice.
 *   - leaving, and unlinking: under the arena lock, write the own entry
 *     FREE, then try to lock the whole table range (one call).  If that
 *     succeeds nobody else is attached: mark the segment unlinked, unlink
 *     its name.  The own byte is unlocked before the arena lock is
 *     released, so two last leavers cannot both see the other.
 *   - cleaning: an arena is abandoned when one lock over its whole table
 *     range succeeds (nobody holds any entry's byte); the cleaner marks it
 *     unlinked and unlinks it while it holds that lock.  A joiner that
 *     finds its byte held by a cleaner waits for the lock, then sees the
 *     mark and gives up.
 *   - creating: the creator locks byte 0 right after creating the file,
 *     before formatting it, so a half-formatted arena of a live creator is
 *     never taken for abandoned.
 *
 * Lock order: the arena lock, then OFD locks (only ever taken non-blocking
 * under it).  A process blocks on an OFD lock (F_OFD_SETLKW) only with no
 * lock of ours held.
 *
 * Fork: the child must be alive in its own right from its first
 * instruction, and must not keep its parent looking alive.  So the parent,
 * before the fork, opens a second descriptor (a new open file
 * description) and locks a FREE entry with it for the child; the child
 * closes its inherited copy of the parent's descriptor, the parent closes
 * its copy of the child's.  Every descriptor is O_CLOEXEC: a child that
 * execs inherits nothing.
 *
 * Claims: a record's claim names the attach entry (and its epoch) of the
 * process that promised to set it.  When that entry is found dead while
 * the flag is down, the record is failed: CLAIM_DEAD is written and the
 * record is set like any set(), so every waiter of every kind wakes by
 * the one path it already has, and later readers see the same failure.
 */
#include "arena.h"

#include <errno.h>
#include <string.h>

/* --- OFD locks ----------------------------------------------------- */

PyObject *
native_ofd_lock(PyObject *module, PyObject *args)
{
    int fd, wait;
    long long start, length;
    if (!PyArg_ParseTuple(args, "iLLp:ofd_lock", &fd, &start, &length, &wait)) return NULL;
    for (;;) {
        int rc;
        if (wait) {
            Py_BEGIN_ALLOW_THREADS
            rc = os_ofd_lock(fd, start, length, 1);
            Py_END_ALLOW_THREADS
        } else {
            rc = os_ofd_lock(fd, start, length, 0);
        }
        if (rc == 0) Py_RETURN_TRUE;
        if (rc == EAGAIN) Py_RETURN_FALSE;
        errno = rc;
        if (rc != EINTR) return PyErr_SetFromErrno(PyExc_OSError);
        if (PyErr_CheckSignals() < 0) return NULL;
    }
}

PyObject *
native_ofd_unlock(PyObject *module, PyObject *args)
{
    int fd;
    long long start, length;
    if (!PyArg_ParseTuple(args, "iLL:ofd_unlock", &fd, &start, &length)) return NULL;
    int rc = os_ofd_unlock(fd, start, length);
    if (rc != 0) {
        errno = rc;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

PyObject *
native_ofd_held(PyObject *module, PyObject *args)
{
    int fd;
    long long start, length;
    if (!PyArg_ParseTuple(args, "iLL:ofd_held", &fd, &start, &length)) return NULL;
    int held = os_ofd_held(fd, start, length);
    if (held < 0) return PyErr_SetFromErrno(PyExc_OSError);
    return PyBool_FromLong(held);
}

/* --- lock owners ------------------------------------------------------ */

/*
 * Every process that maps an arena takes a lock owner before it takes any
 * lock of the arena, and keeps it for as long as its descriptor is open:
 * it locks byte OWNER_BYTE(owner) of the file (non-blocking; a byte held
 * by another description belongs to a live process) and bumps the owner's
 * epoch, so labels of the byte's earlier holders no longer match.  Its lock
 * words carry LOCK_LABEL(owner, epoch) (locks.c).  A lock owner is not the
 * attach entry: a process takes locks before it joins (to join), after it
 * leaves (handles still released at exit), while it reclaims the dead, and
 * to clean arenas it never joined; an entry's byte comes and goes with
 * those, the owner's byte lives with the mapping.
 *
 * A fork: the parent takes an owner for the child with the child's own
 * descriptor before the fork (_attach.prepare_child), and the child adopts
 * it first thing, before it takes a lock; a child inherits the parent's
 * label until then and must take no lock before.
 */

/* 1 if the owner of `label` lives (or this process cannot tell: never
 * take a lock over on doubt), 0 if it is dead.  No GIL needed. */
int
owner_alive(ArenaObject *a, uint32_t label)
{
    if (label == load_relaxed(&a->lock_label) || label == LOCK_ANONYMOUS) return 1;
    uint32_t owner = LOCK_OWNER_OF(label);
    if (owner >= LOCK_OWNERS) return 1;
    /* The epoch first: only the byte's holder bumps it, so a label whose
     * epoch moved is of a holder that let the byte go.  Then the byte: a
     * holder alive holds it (a newer holder that has not bumped the epoch
     * yet looks alive for one more sleep, which is safe).  The descriptor
     * is used under the process lock, so forget_descriptors cannot close
     * it meanwhile (a reused number would ask another file). */
    uint32_t epoch = load_acquire(&owner_at(a, owner)->epoch);
    local_lock(&a->process_lock);
    int alive = a->owner_fd < 0 || ((epoch & LOCK_EPOCH_MASK) == LOCK_EPOCH_OF(label) &&
                                    os_ofd_held(a->owner_fd, OWNER_BYTE(owner), 1) != 0);
    local_unlock(&a->process_lock); /* an error counts as alive */
    return alive;
}

/* owner_reserve(fd) -> label: lock a free owner's byte through fd. */
PyObject *
Arena_owner_reserve(ArenaObject *self, PyObject *arg)
{
    int fd;
    if (!PyArg_Parse(arg, "i:owner_reserve", &fd)) return NULL;
    /* Start at a place of our own, so that joiners rarely probe the same bytes. */
    uint32_t start = (uint32_t)os_pid() * 2654435761u % LOCK_OWNERS;
    for (uint32_t n = 0; n < LOCK_OWNERS; n++) {
        uint32_t owner = (start + n) % LOCK_OWNERS;
        int rc = os_ofd_lock(fd, OWNER_BYTE(owner), 1, 0);
        if (rc == EAGAIN) continue;
        if (rc != 0) {
            errno = rc;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        LockOwner *o = owner_at(self, owner);
        uint32_t epoch = add_fetch_acq_rel(&o->epoch, 1);
        store_relaxed(&o->pid, (uint32_t)os_pid());
        return PyLong_FromUnsignedLong(LOCK_LABEL(owner, epoch));
    }
    PyErr_Format(self->state->full_error,
                 "all %u lock owners of the arena are in use: that many processes map it",
                 LOCK_OWNERS);
    return NULL;
}

/* owner_adopt(label, fd): from now on this process's locks carry `label`. */
PyObject *
Arena_owner_adopt(ArenaObject *self, PyObject *args)
{
    unsigned int label;
    int fd;
    if (!PyArg_ParseTuple(args, "Ii:owner_adopt", &label, &fd)) return NULL;
    if (label == 0 || LOCK_OWNER_OF(label) >= LOCK_OWNERS) {
        PyErr_Format(PyExc_ValueError, "%u is not a lock owner's label", label);
        return NULL;
    }
    local_lock(&self->process_lock);
    store_relaxed(&self->lock_label, label);
    self->owner_fd = fd;
    local_unlock(&self->process_lock);
    Py_RETURN_NONE;
}

/*
 * forget_descriptors(): this process's descriptors of the segment are
 * about to be closed while the mapping lives on (a subinterpreter that
 * ends; see mpevent.shm._arena.leave_all).  From now on its locks are
 * anonymous and its liveness questions answer "alive": a closed number
 * may be reused by another file, whose locks must never be read as ours.
 */
PyObject *
Arena_forget_descriptors(ArenaObject *self, PyObject *Py_UNUSED(ignored))
{
    local_lock(&self->process_lock); /* waits for a liveness question in flight */
    store_relaxed(&self->lock_label, 0);
    self->owner_fd = -1;
    self->live_fd = -1;
    local_unlock(&self->process_lock);
    Py_RETURN_NONE;
}

PyObject *
Arena_lock_label(ArenaObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromUnsignedLong(load_relaxed(&self->lock_label));
}

/* --- the attach table ---------------------------------------------- */

static int
parse_entry_index(PyObject *arg, uint32_t *entry)
{
    unsigned long value = PyLong_AsUnsignedLong(arg);
    if (value == (unsigned long)-1 && PyErr_Occurred()) return -1;
    if (value >= ATTACH_ENTRIES) {
        PyErr_Format(PyExc_ValueError, "attach entry %lu is outside the table", value);
        return -1;
    }
    *entry = (uint32_t)value;
    return 0;
}

/*
 * 1 if the process that joined `entry` at `epoch` lives, 0 if not, and 1
 * when this process cannot ask (no descriptor): never reclaim on doubt.
 * Needs no GIL (the watch calls it).
 */
int
entry_alive(ArenaObject *a, uint32_t entry, uint32_t epoch)
{
    AttachEntry *e = entry_at(a, entry);
    if (load_acquire(&e->state) != ENTRY_ATTACHED) return 0;
    if (load_acquire(&e->epoch) != epoch) return 0;
    /* Our own lock never conflicts with our own open file description. */
    if (load_relaxed(&a->held_entry) == (long)entry) return 1;
    local_lock(&a->process_lock); /* see owner_alive */
    int alive = a->live_fd < 0 || os_ofd_held(a->live_fd, entry, 1) != 0;
    local_unlock(&a->process_lock); /* an error counts as alive */
    return alive;
}

PyObject *
Arena_entry(ArenaObject *self, PyObject *arg)
{
    uint32_t entry;
    if (parse_entry_index(arg, &entry) < 0) return NULL;
    AttachEntry *e = entry_at(self, entry);
    return Py_BuildValue("III", load_acquire(&e->state),
                         load_acquire(&e->epoch),
                         load_relaxed(&e->pid));
}

/* entry_write(e, state, pid) -> epoch.  The caller holds the arena lock. */
PyObject *
Arena_entry_write(ArenaObject *self, PyObject *args)
{
    unsigned long entry;
    unsigned int state, pid;
    if (!PyArg_ParseTuple(args, "kII:entry_write", &entry, &state, &pid)) return NULL;
    if (entry >= ATTACH_ENTRIES || state > ENTRY_RECLAIMING) {
        PyErr_Format(PyExc_ValueError, "no attach entry %lu in state %u", entry, state);
        return NULL;
    }
    AttachEntry *e = entry_at(self, (uint32_t)entry);
    uint32_t epoch = e->epoch;
    if (state == ENTRY_ATTACHED && e->state != ENTRY_ATTACHED) {
        epoch++;
        store_release(&e->epoch, epoch);
    }
    store_relaxed(&e->pid, pid);
    store_release(&e->state, state);
    return PyLong_FromUnsignedLong(epoch);
}

PyObject *
Arena_entry_alive(ArenaObject *self, PyObject *args)
{
    unsigned long entry;
    unsigned int epoch;
    if (!PyArg_ParseTuple(args, "kI:entry_alive", &entry, &epoch)) return NULL;
    if (entry >= ATTACH_ENTRIES) Py_RETURN_FALSE;
    return PyBool_FromLong(entry_alive(self, (uint32_t)entry, epoch));
}

PyObject *
Arena_entries(ArenaObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *list = PyList_New(0);
    if (list == NULL) return NULL;
    for (uint32_t i = 0; i < ATTACH_ENTRIES; i++) {
        AttachEntry *e = entry_at(self, i);
        uint32_t state = load_acquire(&e->state);
        if (state == ENTRY_FREE) continue;
        if (append_new(list, Py_BuildValue("IIII", i, state,
                                           load_acquire(&e->epoch),
                                           load_relaxed(&e->pid))) < 0) {
            Py_DECREF(list);
            return NULL;
        }
    }
    return list;
}

/* free_entry() -> the first FREE entry; Full when all are used (arena lock held). */
PyObject *
Arena_free_entry(ArenaObject *self, PyObject *Py_UNUSED(ignored))
{
    for (uint32_t i = 0; i < ATTACH_ENTRIES; i++)
        if (load_acquire(&entry_at(self, i)->state) == ENTRY_FREE)
            return PyLong_FromUnsignedLong(i);
    PyErr_Format(self->state->full_error, "all %u attach entries of the arena are in use (one per process)",
                 ATTACH_ENTRIES);
    return NULL;
}

/*
 * probe_dead(fd, limit) -> [(e, state)]: with the descriptor fd, look at the next `limit` used entries
 * from the table's probe cursor (ATTACH_ENTRIES: all of them) and return
 * those whose byte nobody holds -- dead processes (ATTACHED) and dead
 * reclaimers (RECLAIMING).  One fcntl per entry looked at: joins and
 * leaves call it with a small limit, so their cost does not grow with the
 * number of processes attached.  The caller holds the arena lock.
 */
PyObject *
Arena_probe_dead(ArenaObject *self, PyObject *args)
{
    int fd;
    unsigned long limit;
    if (!PyArg_ParseTuple(args, "ik:probe_dead", &fd, &limit)) return NULL;
    Header *h = self->header;
    uint32_t found[ATTACH_ENTRIES][2];
    uint32_t count = 0, looked = 0;
    uint32_t start = h->probe_cursor % ATTACH_ENTRIES, i = start;
    int error = 0;
    do {
        AttachEntry *e = entry_at(self, i);
        uint32_t state = load_acquire(&e->state);
        if (state != ENTRY_FREE && (long)i != load_relaxed(&self->held_entry)) {
            int held = os_ofd_held(fd, i, 1);
            if (held < 0) {
                error = errno;
                break;
            }
            if (!held) {
                found[count][0] = i;
                found[count][1] = state;
                count++;
            }
            looked++;
        }
        i = (i + 1) % ATTACH_ENTRIES;
    } while (i != start && looked < limit);
    h->probe_cursor = i;
    if (error) {
        errno = error;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *list = PyList_New(count);
    if (list == NULL) return NULL;
    for (uint32_t n = 0; n < count; n++) {
        PyObject *item = Py_BuildValue("II", found[n][0], found[n][1]);
        if (item == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, n, item);
    }
    return list;
}

PyObject *
Arena_mark_unlinked(ArenaObject *self, PyObject *Py_UNUSED(ignored))
{
    store_release(&self->header->unlinked, 1);
    Py_RETURN_NONE;
}

PyObject *
Arena_is_unlinked(ArenaObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(load_acquire(&self->header->unlinked));
}

