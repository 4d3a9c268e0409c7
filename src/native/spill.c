/*
 * Spilled values: the ones shared memory cannot hold, in files on disk.
 *
 * When /dev/shm or the cap (MPEVENT_MAX_SHM) cannot take a value, the
 * writer (mpevent/shm/_spill.py) puts its frame in a file of the spill
 * directory the arena's creator chose (Header.spill_dir) and publishes a
 * VALUE_SPILLED slot: the file's token (its name) and inode (its identity).
 *
 * The protocol, written where it is used:
 *
 *   writer   creates <dir>/<arena>-<token>.spill (O_EXCL, 0600), holds an
 *            OFD lock on byte 0 of it while it writes, publishes the slot
 *            (Arena_publish_spill, record lock), and only then closes the
 *            file, which drops the lock.  A writer killed before publishing
 *            leaves a file nobody holds a lock on and no slot names: an
 *            orphan, which clean() removes (_spill.remove_orphans).
 *   reader   opens the file *under the record lock* (spill_open), so the
 *            file it opens is the one the slot names: the slot cannot be
 *            released, and the file unlinked, meanwhile.  It then checks
 *            the inode, owner and mode (Python) and maps the file; the
 *            mapping outlives the file's name.
 *   release  whoever releases the slot (a new set(), the record's last
 *            reference, the reclaim of a dead process) unlinks the file
 *            under the record lock (spill_release).  Views already mapped
 *            keep their pages: unlinking a mapped file frees nothing yet.
 *   arena    the last leaver, and clean() for an abandoned arena, removes
 *            every <arena>-*.spill file (Python).
 *
 * No lock is added: the record lock orders publish, open and release of a
 * slot's file; the OFD lock only tells a cleaner that a writer still lives.
 */
#include "arena.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* The path of the file a token names (SPILL_PATH_MAX bytes), or -1 if the
 * arena has no spill directory or the path does not fit. */
int
spill_path(ArenaObject *a, uint64_t token, char *path, size_t size)
{
    Header *h = a->header;
    if (h->spill_dir[0] == '\0') return -1;
    int n = snprintf(path, size, "%.*s/%.*s-%016llx.spill", (int)SPILL_DIR_MAX, h->spill_dir,
                     (int)SPILL_NAME_MAX, h->spill_name, (unsigned long long)token);
    return n > 0 && (size_t)n < size ? 0 : -1;
}

/* Record lock held: the slot is being released; its file goes. */
void
spill_release(ArenaObject *a, const ValueSlot *slot)
{
    char path[SPILL_PATH_MAX];
    if (spill_path(a, slot->where.spill.token, path, sizeof path) == 0) {
        /* ENOENT: a cleaner or the last leaver got there first. */
        int error = os_unlink(path);
        if (error != 0 && error != ENOENT)
            add_fetch_relaxed(&a->header->spill_errors, 1);
    }
    sub_fetch_relaxed(&a->header->spilled_values, 1);
    sub_fetch_relaxed(&a->header->spilled_bytes, slot->length);
}

/* Record lock held: a read-only descriptor of the slot's file, or -1 with
 * errno set (no exception: the caller holds the lock). */
int
spill_open(ArenaObject *a, const ValueSlot *slot)
{
    char path[SPILL_PATH_MAX];
    if (spill_path(a, slot->where.spill.token, path, sizeof path) < 0) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return os_open_read(path);
}

/* spill_tokens() -> set of the tokens every live record's slots name (for clean). */
PyObject *
Arena_spill_tokens(ArenaObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *tokens = PySet_New(NULL);
    if (tokens == NULL) return NULL;
    uint32_t bump = load_acquire(&self->header->record_bump);
    for (uint32_t i = 0; i < bump; i++) {
        Record *r = record_at(self, i);
        ValueSlot *slots = (ValueSlot *)r->payload;
        if (load_acquire(&slots[0].tag) != VALUE_SPILLED &&
            load_acquire(&slots[1].tag) != VALUE_SPILLED)
            continue; /* a slot only becomes spilled under the lock, after its file exists */
        lock_record(self, r);
        uint64_t found[2];
        int n = 0;
        for (int which = 0; which < 2; which++)
            if (slots[which].tag == VALUE_SPILLED) found[n++] = slots[which].where.spill.token;
        unlock_word(self, &r->lock);
        for (int k = 0; k < n; k++) {
            PyObject *token = PyLong_FromUnsignedLongLong(found[k]);
            if (token == NULL || PySet_Add(tokens, token) < 0) {
                Py_XDECREF(token);
                Py_DECREF(tokens);
                return NULL;
            }
            Py_DECREF(token);
        }
    }
    return tokens;
}

/* spill_settings() -> (dir, name): where this arena spills ("" = off), and its file prefix. */
PyObject *
Arena_spill_settings(ArenaObject *self, PyObject *Py_UNUSED(ignored))
{
    Header *h = self->header;
    return Py_BuildValue("(s#s#)", h->spill_dir, (Py_ssize_t)strnlen(h->spill_dir, SPILL_DIR_MAX),
                         h->spill_name, (Py_ssize_t)strnlen(h->spill_name, SPILL_NAME_MAX));
}

/* fs_type(path) -> int: statfs(2)'s f_type of the filesystem holding path. */
PyObject *
native_fs_type(PyObject *module, PyObject *arg)
{
    PyObject *encoded;
    if (!PyUnicode_FSConverter(arg, &encoded)) return NULL;
    long long type = 0;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = os_fs_type(PyBytes_AS_STRING(encoded), &type);
    Py_END_ALLOW_THREADS
    if (rc != 0) {
        errno = rc;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, arg);
        Py_DECREF(encoded);
        return NULL;
    }
    Py_DECREF(encoded);
    return PyLong_FromLongLong(type);
}

/* set_spill(dir, name): the creator's choice, once, right after format(). */
PyObject *
Arena_set_spill(ArenaObject *self, PyObject *args)
{
    const char *dir, *name;
    Py_ssize_t dir_len, name_len;
    if (!PyArg_ParseTuple(args, "s#s#:set_spill", &dir, &dir_len, &name, &name_len)) return NULL;
    if ((size_t)dir_len >= SPILL_DIR_MAX) {
        PyErr_Format(PyExc_ValueError,
                     "MPEVENT_SPILL_DIR must be under %u bytes long, not %zd: choose a shorter path",
                     SPILL_DIR_MAX, dir_len);
        return NULL;
    }
    if ((size_t)name_len >= SPILL_NAME_MAX) {
        PyErr_Format(PyExc_ValueError, "an arena name for spill files is at most %u bytes",
                     SPILL_NAME_MAX - 1);
        return NULL;
    }
    Header *h = self->header;
    if (h->spill_name[0] != '\0') {
        PyErr_SetString(PyExc_RuntimeError, "the arena's spill directory is set already");
        return NULL;
    }
    memcpy(h->spill_dir, dir, (size_t)dir_len);
    h->spill_dir[dir_len] = '\0';
    memcpy(h->spill_name, name, (size_t)name_len);
    h->spill_name[name_len] = '\0';
    Py_RETURN_NONE;
}
