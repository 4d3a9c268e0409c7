/*
 * The test surface: every entry point that only tests call, in one table,
 * each named testing_*.  Nothing in mpevent/ calls them (.ci/lists.py
 * refuses a testing_ name outside tests/), and the module adds them last
 * (module.c), so a reader of the real tables never meets them.
 *
 *   - testing_record_lock(arena, index): take a record's lock and keep it,
 *     as a process killed holding it leaves it.
 *   - testing_record_half_set(arena, index): what a setter killed mid-set()
 *     leaves: the lock taken and the new state published, nobody dequeued
 *     or woken.  The caller is meant to die right after.
 *   - testing_points(): whether this build has test points (testpoints.c;
 *     -DMPEVENT_TEST_POINTS, CI's sanitizer stages); without them the three
 *     below raise.
 *   - testing_point_arm(name), testing_point_reached(name, timeout) -> bool
 *     (the GIL released while it waits), testing_point_release(name): stop
 *     the next thread that reaches a named point, see it stopped, let it go.
 *   - testing_copy_huge_threshold(ns_per_mib) -> (the threshold it
 *     replaced, copies advised huge so far in this process): how slow a
 *     huge populate of copy_bytes may be before it counts against huge
 *     pages (heap.c), and a fresh verdict: 0 makes every one slow, so two
 *     copies turn huge pages off.
 */
#include "arena.h"

/* The record an (arena, index) argument pair names, its lock taken and
 * kept; NULL with an exception. */
static Record *
locked_record(PyObject *args, const char *format, ArenaObject **arena)
{
    PyObject *arena_arg, *index;
    if (!PyArg_ParseTuple(args, format, &arena_arg, &index)) return NULL;
    *arena = arena_argument(arena_arg, "the test surface");
    Record *r = *arena == NULL ? NULL : parse_record(*arena, index);
    if (r != NULL) lock_record(*arena, r);
    return r;
}

static PyObject *
testing_record_lock(PyObject *module, PyObject *args)
{
    ArenaObject *a;
    if (locked_record(args, "OO:testing_record_lock", &a) == NULL) return NULL;
    Py_RETURN_NONE;
}

static PyObject *
testing_record_half_set(PyObject *module, PyObject *args)
{
    ArenaObject *a;
    Record *r = locked_record(args, "OO:testing_record_half_set", &a);
    if (r == NULL) return NULL;
    uint32_t state = load_acquire(&r->state);
    store_release(&r->state, ((GENERATION(state) + 1) << 1) | STATE_FLAG);
    Py_RETURN_NONE;
}

#ifdef MPEVENT_TEST_POINTS
#define POINTS_BUILT 1
#else
#define POINTS_BUILT 0
/* Never called: point_name() refuses first in a build without points. */
#define test_point_arm(name) (-2)
#define test_point_reached(name, timeout_ns) (-1)
#define test_point_release(name) (-1)
#endif

static PyObject *
testing_points(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(POINTS_BUILT);
}

/* The point's name, or NULL with an exception (also when the build has none). */
static const char *
point_name(PyObject *arg)
{
    if (!POINTS_BUILT) {
        PyErr_SetString(PyExc_RuntimeError,
                        "this build has no test points: build with -DMPEVENT_TEST_POINTS "
                        "(as .ci/sanitize does)");
        return NULL;
    }
    return PyUnicode_AsUTF8(arg);
}

static PyObject *
testing_point_arm(PyObject *module, PyObject *arg)
{
    const char *name = point_name(arg);
    if (name == NULL) return NULL;
    switch (test_point_arm(name)) {
    case 0:
        Py_RETURN_NONE;
    case -1:
        return PyErr_Format(PyExc_RuntimeError, "test point %R is armed already", arg);
    case -2:
        return PyErr_Format(PyExc_RuntimeError, "all test points are armed (%R is one too many)",
                            arg);
    default:
        return PyErr_Format(PyExc_ValueError, "test point name %R is too long", arg);
    }
}

static PyObject *
testing_point_reached(PyObject *module, PyObject *args)
{
    PyObject *arg;
    double timeout;
    if (!PyArg_ParseTuple(args, "Ud:testing_point_reached", &arg, &timeout)) return NULL;
    const char *name = point_name(arg);
    if (name == NULL) return NULL;
    int reached;
    Py_BEGIN_ALLOW_THREADS
    reached = test_point_reached(name, (long long)(timeout * 1e9));
    Py_END_ALLOW_THREADS
    if (reached < 0) return PyErr_Format(PyExc_RuntimeError, "test point %R is not armed", arg);
    return PyBool_FromLong(reached);
}

static PyObject *
testing_point_release(PyObject *module, PyObject *arg)
{
    const char *name = point_name(arg);
    if (name == NULL) return NULL;
    if (test_point_release(name) < 0)
        return PyErr_Format(PyExc_RuntimeError, "test point %R is not armed", arg);
    Py_RETURN_NONE;
}

static PyObject *
testing_copy_huge_threshold(PyObject *module, PyObject *arg)
{
    long long ns_per_mib = PyLong_AsLongLong(arg);
    if (ns_per_mib == -1 && PyErr_Occurred()) return NULL;
    if (ns_per_mib < 0) return PyErr_Format(PyExc_ValueError, "a threshold is >= 0, not %lld", ns_per_mib);
    unsigned long long copies;
    long long was = copy_huge_threshold_set(ns_per_mib, &copies);
    return Py_BuildValue("LK", was, copies);
}

PyMethodDef Testing_functions[] = {
    {"testing_record_lock", testing_record_lock, METH_VARARGS,
     "testing_record_lock(arena, index): lock a record and keep it (fault tests)."},
    {"testing_record_half_set", testing_record_half_set, METH_VARARGS,
     "testing_record_half_set(arena, index): lock, publish the flag, wake nobody."},
    {"testing_points", testing_points, METH_NOARGS,
     "testing_points() -> bool: this build stops threads at named test points."},
    {"testing_point_arm", testing_point_arm, METH_O,
     "testing_point_arm(name): the next thread to reach the point stops there."},
    {"testing_point_reached", testing_point_reached, METH_VARARGS,
     "testing_point_reached(name, timeout) -> bool: a thread stopped at the point in time."},
    {"testing_point_release", testing_point_release, METH_O,
     "testing_point_release(name): the stopped thread goes on; the point is disarmed."},
    {"testing_copy_huge_threshold", testing_copy_huge_threshold, METH_O,
     "testing_copy_huge_threshold(ns_per_mib) -> (was, huge copies): set the threshold, reset the verdict."},
    {NULL, NULL, 0, NULL},
};
