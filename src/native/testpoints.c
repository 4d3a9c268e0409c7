/*
 * Test points: named places in the protocols where a test can stop a thread
 * and let another run first, so an interleaving that matters is forced on
 * the real code instead of hoped for with sleeps.
 *
 * Compiled in only with -DMPEVENT_TEST_POINTS (the sanitizer and
 * ThreadSanitizer builds of CI, .ci/sanitize and .ci/tsan); otherwise
 * TEST_POINT() is nothing and the test surface (testing.c) says so, so
 * tests/shm/test_interleavings.py skips and says why.  No Python here:
 * testing.c is the points' face to tests.
 *
 * The contract, per point (a name; a few may be armed at once):
 *   - test_point_arm(name): the next thread to reach the point stops there.
 *   - test_point_reached(name, timeout_ns): wait until a thread stopped
 *     there.
 *   - test_point_release(name): let it go on; the point is disarmed, so a
 *     thread passing it again (a retry loop) does not stop.
 * A thread stopped at a point that holds the GIL gives it up while stopped
 * (TEST_POINT_GIL), so the test's other threads run.
 */
#include "arena.h"

#ifdef MPEVENT_TEST_POINTS

#include <string.h>

#define POINTS 8
#define POINT_NAME 32
#define POINT_IDLE 0u
#define POINT_ARMED 1u
#define POINT_STOPPED 2u

typedef struct {
    char name[POINT_NAME];
    uint32_t state;    /* POINT_*; the futex test_point_reached sleeps on */
    uint32_t releases; /* bumped by each release: the futex a stopped thread sleeps on
                        * (not state: a point released and armed again at once
                        * would read STOPPED again to a thread not yet awake) */
} Point;

static Point points[POINTS];
static uint32_t armed; /* points armed or stopped: 0 keeps test_point() one load */
static uint32_t points_lock; /* a local_lock around arming and finding names */

static Point *
point_named(const char *name)
{
    for (int i = 0; i < POINTS; i++)
        if (load_acquire(&points[i].state) != POINT_IDLE && strcmp(points[i].name, name) == 0)
            return &points[i];
    return NULL;
}

void
test_point(const char *name, int holds_gil)
{
    if (load_acquire(&armed) == 0) return;
    local_lock(&points_lock);
    Point *p = point_named(name);
    uint32_t expected = POINT_ARMED;
    uint32_t releases = p != NULL ? load_acquire(&p->releases) : 0;
    int stops = p != NULL && cas_acq_rel(&p->state, &expected, POINT_STOPPED);
    local_unlock(&points_lock);
    if (!stops) return;
    os_wake_private(&p->state, 1 << 30);
    PyThreadState *saved = holds_gil ? PyEval_SaveThread() : NULL;
    while (load_acquire(&p->releases) == releases) os_wait_private(&p->releases, releases, -1);
    if (holds_gil) PyEval_RestoreThread(saved);
}

/* Arm `name`: 0, -1 armed already, -2 every point is armed, -3 too long. */
int
test_point_arm(const char *name)
{
    if (strlen(name) >= POINT_NAME) return -3;
    local_lock(&points_lock);
    Point *free_point = NULL;
    for (int i = 0; i < POINTS && free_point == NULL; i++)
        if (load_acquire(&points[i].state) == POINT_IDLE) free_point = &points[i];
    int taken = point_named(name) != NULL;
    if (!taken && free_point != NULL) {
        strcpy(free_point->name, name);
        add_fetch_acq_rel(&armed, 1);
        store_release(&free_point->state, POINT_ARMED);
    }
    local_unlock(&points_lock);
    return taken ? -1 : free_point == NULL ? -2 : 0;
}

/* Wait up to `timeout_ns` for a thread to stop at `name` (no GIL needed):
 * 1 one did, 0 none in time, -1 the point is not armed. */
int
test_point_reached(const char *name, long long timeout_ns)
{
    local_lock(&points_lock);
    Point *p = point_named(name);
    local_unlock(&points_lock);
    if (p == NULL) return -1;
    long long deadline = os_now_ns() + timeout_ns;
    for (;;) {
        uint32_t state = load_acquire(&p->state);
        long long left = deadline - os_now_ns();
        if (state == POINT_STOPPED) return 1;
        if (left <= 0) return 0;
        os_wait_private(&p->state, state, left);
    }
}

/* Let the thread stopped at `name` go on, and disarm it: 0, or -1 not armed. */
int
test_point_release(const char *name)
{
    local_lock(&points_lock);
    Point *p = point_named(name);
    if (p != NULL) {
        add_fetch_acq_rel(&p->releases, 1);
        store_release(&p->state, POINT_IDLE);
        sub_fetch_acq_rel(&armed, 1);
    }
    local_unlock(&points_lock);
    if (p == NULL) return -1;
    os_wake_private(&p->releases, 1 << 30);
    return 0;
}

#endif
