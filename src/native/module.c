/*
 * The module: its tables and its initialization, the top floor.
 *
 * Every other file of src/native owns one idea and exports its functions
 * through arena.h; this one only lists them -- the Arena type's methods,
 * the module's functions and constants -- and makes the module, once per
 * interpreter (PEP 489), with what is shared by the process made once
 * (process_init).  Nothing below calls into this file.
 */
#include "arena.h"

#include <string.h>

#define METHOD(name, flags, doc) {#name, (PyCFunction)(void (*)(void))Arena_##name, flags, doc}

static PyMethodDef Arena_methods[] = {
    METHOD(format, METH_VARARGS,
           "format(records, slots, links, small, large, cap, watermark) -> size: lay out a "
           "new segment."),
    METHOD(validate, METH_NOARGS, "validate(): check an existing segment's header."),
    METHOD(lock, METH_NOARGS, "Take the arena lock (allocation, attach table)."),
    METHOD(owner_reserve, METH_O,
           "owner_reserve(fd) -> label: take a free lock owner's byte with fd (Full if none)."),
    METHOD(owner_adopt, METH_VARARGS,
           "owner_adopt(label, fd): this process's locks carry label, held through fd."),
    METHOD(lock_label, METH_NOARGS, "lock_label() -> this process's label (0: none)."),
    METHOD(forget_descriptors, METH_NOARGS,
           "forget_descriptors(): locks anonymous, liveness unasked; the descriptors close next."),
    METHOD(lock_word, METH_O,
           "lock_word(index) -> a record's lock word, lock-free (-1: the arena lock's)."),
    METHOD(unlock, METH_NOARGS, "Release the arena lock."),
    METHOD(statistics, METH_NOARGS, "Counters of the arena."),
    METHOD(heap_statistics, METH_NOARGS, "Counters of the value heap."),
    METHOD(held_mark, METH_VARARGS, "held_mark(entry, index, held): set or clear a held bit."),
    METHOD(held_wipe, METH_O, "held_wipe(entry): clear an entry's bitmap."),
    METHOD(held_release_all, METH_O,
           "held_release_all(entry) -> count: give back every reference the entry holds."),
    METHOD(held_share, METH_VARARGS,
           "held_share(src, dst) -> count: the child's references (and bits, dst >= 0)."),
    METHOD(adopt_entry, METH_VARARGS,
           "adopt_entry(entry, epoch, fd): this process joined as attach entry, locked by fd."),
    METHOD(entry, METH_O, "entry(e) -> (state, epoch, pid) of an attach entry."),
    METHOD(entry_write, METH_VARARGS,
           "entry_write(e, state, pid) -> epoch; a new epoch on ENTRY_ATTACHED. Arena lock held."),
    METHOD(entry_alive, METH_VARARGS, "entry_alive(e, epoch) -> bool, asked of the kernel."),
    METHOD(entries, METH_NOARGS, "entries() -> [(e, state, epoch, pid)] of the used entries."),
    METHOD(free_entry, METH_NOARGS, "free_entry() -> the first free entry; Full if none."),
    METHOD(probe_dead, METH_VARARGS,
           "probe_dead(fd, limit) -> [(e, state)] of dead entries among the next `limit`."),
    METHOD(mark_unlinked, METH_NOARGS, "mark_unlinked(): the segment's name is going away."),
    METHOD(advise_huge, METH_NOARGS, "advise_huge() -> bool: MADV_HUGEPAGE on the value heap."),
    METHOD(is_unlinked, METH_NOARGS, "is_unlinked() -> bool."),
    METHOD(claim, METH_O, "claim(index): promise that this process sets the record."),
    METHOD(claim_abandon, METH_O, "claim_abandon(index): this process exits without setting it."),
    METHOD(record_alloc, METH_VARARGS, "record_alloc(kind) -> (index, serial); Full if none."),
    METHOD(record_retain, METH_VARARGS,
           "record_retain(index, serial, adopt) -> kind: take a reference."),
    METHOD(record_pin, METH_VARARGS, "record_pin(index): a reference for a pickle in flight."),
    METHOD(record_release, METH_VARARGS, "record_release(index) -> True if freed."),
    METHOD(record_give_back, METH_FASTCALL,
           "record_give_back(entry, index) -> True if freed: unmark held, then release."),
    METHOD(record_info, METH_VARARGS, "record_info(index) -> dict."),
    METHOD(is_set, METH_O, "is_set(index) -> bool, lock-free."),
    METHOD(state, METH_O, "state(index) -> generation << 1 | flag."),
    METHOD(set, METH_O, "set(index) -> True if this call raised the flag."),
    METHOD(clear, METH_O, "clear(index): lower the flag."),
    METHOD(store, METH_VARARGS,
           "store(index, which, parts, entry): store a pickle (one part) or a frame, raise the flag."),
    METHOD(block_alloc, METH_VARARGS,
           "block_alloc(length, entry) -> offset: a large block to write a value into."),
    METHOD(publish_spill, METH_VARARGS,
           "publish_spill(index, which, token, inode, length): store a spilled value, raise the flag."),
    METHOD(spill_tokens, METH_NOARGS, "spill_tokens() -> the tokens of every published spill file."),
    METHOD(spill_settings, METH_NOARGS, "spill_settings() -> (dir, name); dir '' when off."),
    METHOD(set_spill, METH_VARARGS, "set_spill(dir, name): where the arena spills (creator, once)."),
    METHOD(load, METH_VARARGS,
           "load(index, which, known, entry) -> (generation, slot, tag, data), in one call."),
    METHOD(holds, METH_VARARGS, "holds(index, which) -> bool."),
    METHOD(heap_forget, METH_O,
           "heap_forget(entry): give back the reader pins and unpublished blocks of a process."),
    METHOD(after_fork_child, METH_O,
           "after_fork_child(entry): pin the inherited block views for this new process."),
    METHOD(slot_alloc, METH_NOARGS, "slot_alloc() -> slot, owned by this process's entry."),
    METHOD(slot_free, METH_O, "slot_free(slot)."),
    METHOD(slot_owners, METH_NOARGS,
           "slot_owners() -> [(slot, entry, epoch)] of the slots in use."),
    METHOD(slot_reclaim, METH_VARARGS,
           "slot_reclaim(slot, entry, epoch) -> True if it freed that dead owner's slot."),
    METHOD(link_alloc, METH_O, "link_alloc(slot) -> link."),
    METHOD(link_free, METH_O, "link_free(link)."),
    METHOD(enqueue, METH_VARARGS, "enqueue(record, link, slot) -> state read under the lock."),
    METHOD(dequeue, METH_VARARGS, "dequeue(record, link) -> True if the link had fired."),
    METHOD(fired, METH_O, "fired(link) -> bool."),
    METHOD(fired_among, METH_O, "fired_among(links: dict) -> [fired links among its keys]."),
    METHOD(park, METH_VARARGS,
           "park(slot, timeout, watchlist=None) -> 0 timed out, 1 woken, 2 look again."),
    METHOD(reset, METH_O, "reset(slot): arm the slot's word."),
    METHOD(wake, METH_O, "wake(slot): wake the slot directly."),
    METHOD(loop_address, METH_VARARGS,
           "loop_address(slot, token) -> bytes: the abstract unix address of a loop's slot."),
    METHOD(set_loop, METH_VARARGS,
           "set_loop(slot, token): wake the slot by a datagram to that address (0: by futex)."),
    METHOD(wait, METH_FASTCALL, "wait(record, slot, timeout) -> bool, or None: needs a slot."),
    METHOD(wait_any, METH_VARARGS,
           "wait_any(records, slot, links, timeout) -> positions seen set, or None: needs a slot."),
    METHOD(recheck, METH_VARARGS,
           "recheck(index, generation) -> bool: moved since, a lost claim failed now."),
    METHOD(spinners, METH_NOARGS, "spinners() -> int: spin seats held now, by waiters of any process."),
    {NULL, NULL, 0, NULL},
};

static PyType_Slot Arena_slots[] = {
    {Py_tp_dealloc, Arena_dealloc},
    {Py_tp_doc, "Arena(fd, size): map a segment holding records, slots, links and values."},
    {Py_tp_methods, Arena_methods},
    {Py_bf_getbuffer, Arena_getbuffer},
    {Py_tp_init, Arena_init},
    {Py_tp_new, PyType_GenericNew},
    {0, NULL},
};

static PyType_Spec Arena_spec = {
    .name = "mpevent.shm._native.Arena",
    .basicsize = sizeof(ArenaObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = Arena_slots,
};

/* lock_faults() -> int: lock calls that failed where no caller could be told. */
static PyObject *
native_lock_faults(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromUnsignedLong(lock_fault_count());
}

/* populate_supported() -> bool: can this kernel reserve shared pages before
 * they are touched (MADV_POPULATE_WRITE, Linux 5.14+)?  For `doctor`. */
static PyObject *
native_populate_supported(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    void *page = os_map_scratch(page_size);
    if (page == NULL) return PyErr_SetFromErrno(PyExc_OSError);
    int error = os_populate(page, page_size);
    os_unmap(page, page_size);
    return PyBool_FromLong(error == 0);
}

/* spin_limit() -> int: pause instructions a waiter may spin before parking. */
static PyObject *
native_spin_limit(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLong(load_relaxed(&spin_limit));
}

/* main_interpreter() -> bool: is this the process's main interpreter? */
static PyObject *
native_main_interpreter(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(PyInterpreterState_Get() == PyInterpreterState_Main());
}

static PyMethodDef native_functions[] = {
    {"main_interpreter", native_main_interpreter, METH_NOARGS,
     "main_interpreter() -> bool: True unless called in a subinterpreter."},
    {"spin_limit", native_spin_limit, METH_NOARGS,
     "spin_limit() -> int: how long a waiter spins before parking (0: never)."},
    {"set_handover", native_set_handover, METH_O,
     "set_handover(on) -> bool: yield the CPU after waking another process when nothing "
     "else is runnable (spin.c); returns the setting it replaced."},
    {"set_spin_limit", native_set_spin_limit, METH_O,
     "set_spin_limit(limit or None) -> int: set the spin limit (None: the default); "
     "returns the one in force (0 with one usable CPU)."},
    {"wakeup_sender", native_wakeup_sender, METH_NOARGS,
     "wakeup_sender() -> int: this process's socket for event loops' wakeups (kept for life)."},
    {"spin_stats", native_spin_stats, METH_NOARGS,
     "spin_stats() -> dict: this process's spin decisions (spun, won, same_cpu, "
     "no_seat, low_budget) and the limit and seats in force."},
    {"fs_type", native_fs_type, METH_O, "fs_type(path) -> int: statfs(2) f_type of path's filesystem."},
    {"segment_kind", native_segment_kind, METH_O,
     "segment_kind(fd) -> (formatted, layout_version) of a segment file's header."},
    {"lock_faults", native_lock_faults, METH_NOARGS,
     "lock_faults() -> int: lock calls that failed where no caller could be told (0)."},
    {"populate_supported", native_populate_supported, METH_NOARGS,
     "populate_supported() -> bool: MADV_POPULATE_WRITE works here (Linux 5.14+)."},
    {"segment_size", native_segment_size, METH_VARARGS,
     "segment_size(records, slots, links, small, large) -> bytes such an arena spans."},
    {"untrack", native_untrack, METH_O,
     "untrack(obj): leave the cyclic garbage collector out of an acyclic object."},
    {"set_hooks", native_set_hooks, METH_O,
     "set_hooks(wait_path): the Python wait Handle.wait hands every blocking case to."},
    {"copy_bytes", native_copy_bytes, METH_O,
     "copy_bytes(buffer) -> bytes: a private copy, its pages faulted in at once."},
    {"ofd_lock", native_ofd_lock, METH_VARARGS,
     "ofd_lock(fd, start, length, wait) -> True if taken, False if another holds it."},
    {"ofd_unlock", native_ofd_unlock, METH_VARARGS, "ofd_unlock(fd, start, length)."},
    {"ofd_held", native_ofd_held, METH_VARARGS,
     "ofd_held(fd, start, length) -> True if another open file description locks a byte."},
    {"before_fork", native_before_fork, METH_NOARGS,
     "before_fork(): hold every block this process views across a fork."},
    {NULL, NULL, 0, NULL},
};

/*
 * The module is initialized in two phases (PEP 489), and says how it may
 * be used:
 *   - free-threaded builds: the GIL stays off (Py_MOD_GIL_NOT_USED).  The
 *     C code keeps no state that threads share without a lock word, a
 *     local lock (the watch, the block views) or an atomic: each file
 *     says which (handle.c for a handle's arena pointer, spin.c for the
 *     spin settings).  The Python side's shared state is under its own
 *     locks.
 *   - subinterpreters, each with its own GIL: supported.  Every Python
 *     object the C code keeps -- the types, Full, the wait path, the list
 *     of block views -- is in the module's state, one per interpreter
 *     (NativeState, arena.h); an arena reaches it through its type.  What
 *     is shared holds no Python object and runs once per process
 *     (process_init): the page size, the spin settings, the watch and its
 *     fork hooks.  Each interpreter attaches to an arena as a process
 *     would (its own descriptor, attach entry and OFD locks), so the
 *     liveness rules need nothing new.
 */
/* Once per process, under a local lock: interpreters with their own GIL
 * may import the module at once.  (Not pthread_once: since glibc 2.34 it
 * would make the wheel manylinux_2_34.) */
static uint32_t process_lock;
static int process_ready;

static void
process_init(void)
{
    local_lock(&process_lock);
    if (!process_ready) {
        page_size = os_page_size();
        spin_init();
        watch_init();
        process_ready = 1;
    }
    local_unlock(&process_lock);
}

static int
add_type(PyObject *m, PyTypeObject **slot, PyType_Spec *spec, PyObject *base)
{
    *slot = (PyTypeObject *)PyType_FromModuleAndSpec(m, spec, base);
    if (*slot == NULL) return -1;
    const char *name = strrchr(spec->name, '.') + 1;
    return PyModule_AddObjectRef(m, name, (PyObject *)*slot);
}

static int
native_exec(PyObject *m)
{
    NativeState *state = PyModule_GetState(m);
    process_init();
    state->full_error = PyErr_NewExceptionWithDoc(
        "mpevent.shm._native.Full",
        "A table of an arena (records, waiter slots, links, attach entries) has no free row.",
        PyExc_MemoryError, NULL);
    if (state->full_error == NULL) return -1;
    if (PyModule_AddObjectRef(m, "Full", state->full_error) < 0) return -1;
    state->gevent_name = PyUnicode_InternFromString("gevent");
    if (state->gevent_name == NULL) return -1;
    if (add_type(m, &state->arena_type, &Arena_spec, NULL) < 0 ||
        add_type(m, &state->handle_type, &HandleSpec, NULL) < 0 ||
        add_type(m, &state->event_handle_type, &EventHandleSpec,
                 (PyObject *)state->handle_type) < 0 ||
        add_type(m, &state->view_type, &BlockViewSpec, NULL) < 0 ||
        add_type(m, &state->notifier_type, &NotifierSpec, NULL) < 0 ||
        add_type(m, &state->watchlist_type, &WatchlistSpec, NULL) < 0)
        return -1;
    /* Last, and apart: what only tests call (testing.c). */
    if (PyModule_AddFunctions(m, Testing_functions) < 0) return -1;
    if (PyModule_AddIntConstant(m, "ATTACH_OFFSET", ATTACH_OFFSET) < 0 ||
        PyModule_AddIntConstant(m, "ATTACH_ENTRIES", ATTACH_ENTRIES) < 0 ||
        PyModule_AddIntConstant(m, "ATTACH_ENTRY_SIZE", ATTACH_ENTRY_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "SMALL_MAX", SMALL_MAX) < 0 ||
        PyModule_AddIntConstant(m, "VALUE_INLINE", VALUE_INLINE) < 0 ||
        PyModule_AddIntConstant(m, "VALUE_SMALL", VALUE_SMALL) < 0 ||
        PyModule_AddIntConstant(m, "VALUE_LARGE", VALUE_LARGE) < 0 ||
        PyModule_AddIntConstant(m, "VALUE_SPILLED", VALUE_SPILLED) < 0 ||
        PyModule_AddIntConstant(m, "VALUE_PICKLE", VALUE_PICKLE) < 0 ||
        PyModule_AddIntConstant(m, "VALUE_FAILED", VALUE_FAILED) < 0 ||
        PyModule_AddIntConstant(m, "LAYOUT_VERSION", LAYOUT_VERSION) < 0 ||
        PyModule_AddIntConstant(m, "ENTRY_FREE", ENTRY_FREE) < 0 ||
        PyModule_AddIntConstant(m, "ENTRY_ATTACHED", ENTRY_ATTACHED) < 0 ||
        PyModule_AddIntConstant(m, "ENTRY_RECLAIMING", ENTRY_RECLAIMING) < 0 ||
        PyModule_AddIntConstant(m, "PAGE", (long)page_size) < 0 ||
        PyModule_AddIntConstant(m, "BLOCK_HEADER", (long)BLOCK_HEADER) < 0 ||
        PyModule_AddIntConstant(m, "HUGE_PAGE", (long)os_huge_page_size()) < 0 ||
        PyModule_AddIntConstant(m, "LOCK_WAITERS", (long)LOCK_WAITERS) < 0 ||
        PyModule_AddIntConstant(m, "LOCK_CHECK_MS", LOCK_CHECK_NS / 1000000) < 0 ||
        PyModule_AddIntConstant(m, "HEADER_LAYOUT_VERSION", offsetof(Header, layout_version)) < 0 ||
        PyModule_AddIntConstant(m, "HEADER_PAGE_SIZE", offsetof(Header, page_size)) < 0 ||
        PyModule_AddIntConstant(m, "RECHECK_MS", RECHECK_NS / 1000000) < 0 ||
        PyModule_AddIntConstant(m, "NOTIFY_TICK", (long)NOTIFY_TICK) < 0 ||
        PyModule_AddIntConstant(m, "SPIN_LIMIT_MAX", SPIN_LIMIT_MAX) < 0)
        return -1;
    return 0;
}

/* Every Python object of the module state, listed once for traverse and clear. */
#define STATE_OBJECTS(DO)                                                                        \
    DO(full_error) DO(arena_type) DO(handle_type) DO(event_handle_type) DO(view_type)            \
        DO(notifier_type) DO(watchlist_type) DO(wait_path) DO(gevent_name)

static int
native_traverse(PyObject *m, visitproc visit, void *arg)
{
    NativeState *state = PyModule_GetState(m);
#define VISIT(field) Py_VISIT(state->field);
    STATE_OBJECTS(VISIT)
#undef VISIT
    return 0;
}

static int
native_clear(PyObject *m)
{
    NativeState *state = PyModule_GetState(m);
#define CLEAR(field) Py_CLEAR(state->field);
    STATE_OBJECTS(CLEAR)
#undef CLEAR
    return 0;
}

static void
native_free(void *m)
{
    native_clear((PyObject *)m);
}

static PyModuleDef_Slot native_slots[] = {
    {Py_mod_exec, native_exec},
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
#ifdef Py_GIL_DISABLED
    {Py_mod_gil, Py_MOD_GIL_NOT_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "mpevent.shm._native",
    .m_doc = "Shared-memory records, waiter slots, futex parking and the value heap of mpevent.",
    .m_size = sizeof(NativeState),
    .m_methods = native_functions,
    .m_slots = native_slots,
    .m_traverse = native_traverse,
    .m_clear = native_clear,
    .m_free = native_free,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    return PyModuleDef_Init(&native_module);
}
