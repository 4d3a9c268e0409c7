/*
 * Spinning before parking: when a waiter watches the state word first.
 *
 * A ping-pong between two processes costs two futex wakeups when both
 * sides sleep at once; a waiter that watches the state word for a few
 * microseconds first often sees the set() arrive and never sleeps, and the
 * setter, finding nobody queued, makes no system call at all.  A spin only
 * pays while the setter runs on *another* CPU, so a waiter spins only when
 * all of these hold (each one check, in this order):
 *
 *   1. spin_limit > 0: MPEVENT_SPIN (pause instructions), checked by
 *      Python and given to set_spin_limit(); SPIN_DEFAULT otherwise; 0
 *      with fewer than two usable CPUs (affinity, cgroup v2 quota), where
 *      a spinning waiter could only delay its setter.
 *   2. The thread's budget (adaptive, as glibc's adaptive mutexes): a spin
 *      that sees the set doubles it back toward the limit, one that does
 *      not takes a quarter off; below SPIN_MIN the thread parks at once and
 *      tries the whole limit again every SPIN_REPROBE waits.
 *   3. The thread's own last set() woke nobody parked (spin_woke_sleeper;
 *      every SPIN_REPROBE-th wait spins anyway): a thread it woke from
 *      sleep is often placed on its waker's CPU, where our spin would keep
 *      it from running -- the partner we wait for.  Two threads that
 *      both spin find nobody parked and keep spinning.
 *   4. Spins on this record have not missed SPIN_RECORD_MISSES times in a
 *      row (Record.spin_misses; every SPIN_REPROBE-th wait spins anyway):
 *      a record whose sets come long after its waiters start (a broadcast,
 *      a result of slow work) would cost every waiter of every process a
 *      whole window each time.  A spin that sees the set resets the count.
 *   5. Not on the CPU the record's last set() ran on (Record.setter_cpu):
 *      there the setter, usually the next setter too, can only run once we
 *      stop.  The kernel's optimistic spinning asks the same question
 *      ("is the owner running elsewhere?") of its own data; this is our
 *      nearest hint, and a wrong one costs one spin window.
 *   6. A free seat (Header.spin_seats): at most usable CPUs - 1 waiters of
 *      one arena spin at once, so N waiters of a broadcast do not take every
 *      CPU from the setter.  A seat holds a lease (CLOCK_MONOTONIC ns) that
 *      its spinner renews every SPIN_RENEW pauses; a lapsed lease is a free
 *      seat, so a spinner killed in its seat frees it within SPIN_SEAT_NS.
 *
 * Only blocking OS-thread waits spin (wait_record); the hub, asyncio and
 * gevent waits never do.  The GIL is released while spinning.  The choice
 * of SPIN_DEFAULT and the figures are in docs/design.md.
 *
 * The other side of the same question, handing over after a wake
 * (handover_after_wake): a waiter woken from sleep is often queued on its
 * waker's CPU (wake-affine placement; some VM kernels pack every wakeup so),
 * where it runs only once the waker blocks, is preempted or yields.  So
 * whatever set() and its caller do after the wake -- returning to Python,
 * refilling the reserve, dropping a handle, entering their own wait -- is
 * added to the woken's latency.  After a set() that woke a parked waiter,
 * the setter yields its CPU when
 *
 *   1. handing over is on (MPEVENT_HANDOVER, checked by Python and given
 *      to set_handover(); on by default), and this process may use two
 *      CPUs or more (as rule 1 above: on one CPU the setter blocks soon
 *      anyway, and the yield is one more system call);
 *   2. nothing on the whole machine is runnable but the setter and the
 *      task it woke (os_runnable_tasks() <= 2), as this thread last saw it,
 *      within the last millisecond.
 *
 * Then the yield either runs the woken at once on this CPU or returns at
 * once.  With any other task runnable it could cost the setter a whole
 * time slice (a 64 KiB set() took 1.7 ms beside two busy loops), so it is
 * not made.  Measured in docs/design.md ("Handing the CPU over").
 */
#include "arena.h"

#define SPIN_DEFAULT 10000
#define SPIN_MIN 16
#define SPIN_REPROBE 32
#define SPIN_RECORD_MISSES 4
#define SPIN_SEAT_NS 5000000LL /* a seat's lease, renewed while its spinner spins */
#define SPIN_RENEW 1024        /* pauses between renewals: tens of microseconds */

__thread int spin_woke_sleeper; /* this thread's last set() woke a parked waiter */
/* Set by set_spin_limit() from any thread, read by every waiter: relaxed
 * atomics (a waiter that reads the old limit once spins by the old rule). */
int spin_limit = 0;        /* set_spin_limit(); 0: never spin */
int spin_seats_usable = 0; /* seats of an arena a waiter may take */
static int handover_on = 1;       /* set_handover() */
static int handover_cpus_ok = 0;  /* two usable CPUs or more (spin_configure) */
static __thread int spin_budget = -1;
static __thread unsigned spin_skipped;

/* Counted per process for spin_stats() (tests, the benchmark's CPU column). */
static uint64_t spin_counts[7];
static uint64_t handovers; /* yields after a wake */
enum { SPUN, WON, SAME_CPU, NO_SEAT, LOW_BUDGET, AFTER_WAKE, RECORD_MISSES };

static void
count_spin(int what)
{
    fetch_add_relaxed(&spin_counts[what], 1);
}

/* Apply a limit (< 0: the default) and the CPU rule; returns the limit in force. */
static int
spin_configure(long requested)
{
    double cpus = os_usable_cpus();
    int seats = (int)cpus - 1;
    if (seats > SPIN_SEATS) seats = SPIN_SEATS;
    int limit = requested < 0 ? SPIN_DEFAULT : (int)requested;
    if (seats < 1) limit = 0;
    store_relaxed(&spin_seats_usable, limit > 0 ? seats : 0);
    store_relaxed(&spin_limit, limit);
    store_relaxed(&handover_cpus_ok, seats >= 1);
    spin_budget = -1;
    return limit;
}

void
spin_init(void)
{
    spin_configure(-1);
    /* Handing over reads the machine's runnable count through a descriptor
     * kept open: open it at import, not at some later set(), so that it is
     * there from the start, like the module itself. */
    os_runnable_tasks();
}

/* Take a free seat of the arena: its index, or -1 if none is free. */
static int
take_seat(Header *h, long long now)
{
    int usable = load_relaxed(&spin_seats_usable);
    for (int i = 0; i < usable; i++) {
        int64_t lease = load_relaxed(&h->spin_seats[i]);
        if (lease > now) continue;
        if (cas_acq_rel_relaxed(&h->spin_seats[i], &lease, now + SPIN_SEAT_NS)) {
            return i;
        }
    }
    return -1;
}

/* Spin until the flag is up or the thread's budget runs out; 1 if it is up. */
int
spin_for_flag(ArenaObject *self, Record *r)
{
    int limit = load_relaxed(&spin_limit);
    if (limit <= 0) return 0;
    if (spin_budget < 0 || spin_budget > limit) spin_budget = limit;
    if (spin_budget < SPIN_MIN) {
        /* Re-probe with the whole limit: a peer that also stopped spinning
         * answers only after a futex wakeup, and a short probe would never
         * see it, leaving both sides asleep for good. */
        if (++spin_skipped % SPIN_REPROBE != 0) {
            count_spin(LOW_BUDGET);
            return 0;
        }
        spin_budget = limit;
    }
    if (spin_woke_sleeper) {
        spin_woke_sleeper = 0;
        if (++spin_skipped % SPIN_REPROBE != 0) {
            count_spin(AFTER_WAKE);
            return 0;
        }
    }
    uint8_t misses = load_relaxed(&r->spin_misses);
    if (misses >= SPIN_RECORD_MISSES && ++spin_skipped % SPIN_REPROBE != 0) {
        count_spin(RECORD_MISSES);
        return 0;
    }
    int cpu = os_cpu();
    if (cpu >= 0 && load_relaxed(&r->setter_cpu) == cpu + 1) {
        count_spin(SAME_CPU);
        return 0;
    }
    int seat = take_seat(self->header, os_now_ns());
    if (seat < 0) {
        count_spin(NO_SEAT);
        return 0;
    }
    count_spin(SPUN);
    int seen = 0;
    int budget = spin_budget;
    Py_BEGIN_ALLOW_THREADS
    for (int i = 0; i < budget; i++) {
        if (load_acquire(&r->state) & STATE_FLAG) {
            seen = 1;
            break;
        }
        if (i % SPIN_RENEW == SPIN_RENEW - 1) {
            /* Still here: the seat stays ours (a dead spinner's lapses). */
            store_relaxed(&self->header->spin_seats[seat], os_now_ns() + SPIN_SEAT_NS);
        }
        cpu_relax();
    }
    store_release(&self->header->spin_seats[seat], 0);
    Py_END_ALLOW_THREADS
    if (seen) {
        count_spin(WON);
        if (misses != 0) store_relaxed(&r->spin_misses, 0);
        spin_budget = budget * 2 > limit ? limit : budget * 2;
    } else {
        /* Counted without a lock: two spinners may count one miss, which
         * only makes the hint a little quicker. */
        misses = load_relaxed(&r->spin_misses);
        if (misses < 0xff) store_relaxed(&r->spin_misses, misses + 1);
        spin_budget = budget - budget / 4; /* a quarter less: one late set is noise */
    }
    return seen;
}

/* A thread's last look at the machine (rule 2): when, and what it saw.
 * Looked at again after HANDOVER_LOOK_NS: a busy ping-pong sets thousands
 * of times a second, and one pread per set() measured 1.2 us, a sixth of a
 * loaded round trip.  A machine that turned busy within the window costs
 * at most the yields of that window. */
#define HANDOVER_LOOK_NS 1000000LL
static __thread long long handover_looked_ns = -HANDOVER_LOOK_NS;
static __thread int handover_quiet;

/* After a set() that woke `woken` parked waiters (the top: handing over). */
void
handover_after_wake(int woken)
{
    if (woken <= 0 || !load_relaxed(&handover_on) || !load_relaxed(&handover_cpus_ok)) return;
    long long now = os_now_ns();
    if (now - handover_looked_ns >= HANDOVER_LOOK_NS) {
        int runnable = os_runnable_tasks();
        handover_quiet = runnable >= 0 && runnable <= 2;
        handover_looked_ns = now;
    }
    if (!handover_quiet) return;
    fetch_add_relaxed(&handovers, 1);
    os_yield();
}

/* set_handover(on) -> bool: hand the CPU over after a wake (the top); the
 * setting it replaced. */
PyObject *
native_set_handover(PyObject *module, PyObject *arg)
{
    int on = PyObject_IsTrue(arg);
    if (on < 0) return NULL;
    return PyBool_FromLong(exchange_acq_rel(&handover_on, on));
}

/* spinners() -> int: seats of this arena held now (waiters spinning in any process). */
PyObject *
Arena_spinners(ArenaObject *self, PyObject *Py_UNUSED(ignored))
{
    long long now = os_now_ns();
    long held = 0;
    for (int i = 0; i < SPIN_SEATS; i++) {
        held += load_relaxed(&self->header->spin_seats[i]) > now;
    }
    return PyLong_FromLong(held);
}

/* set_spin_limit(limit or None) -> int: the limit in force (0 on one CPU). */
PyObject *
native_set_spin_limit(PyObject *module, PyObject *arg)
{
    long requested = -1;
    if (arg != Py_None) {
        requested = PyLong_AsLong(arg);
        if (requested == -1 && PyErr_Occurred()) return NULL;
        if (requested < 0 || requested > SPIN_LIMIT_MAX) {
            PyErr_Format(PyExc_ValueError,
                         "a spin limit of %ld is out of range: give 0 (never spin) to "
                         "%d pause instructions",
                         requested, SPIN_LIMIT_MAX);
            return NULL;
        }
    }
    return PyLong_FromLong(spin_configure(requested));
}

/* spin_stats() -> dict: this process's spin decisions since import. */
PyObject *
native_spin_stats(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue(
        "{s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:i,s:i,s:K,s:i}", "spun",
        (unsigned long long)load_relaxed(&spin_counts[SPUN]), "won",
        (unsigned long long)load_relaxed(&spin_counts[WON]), "same_cpu",
        (unsigned long long)load_relaxed(&spin_counts[SAME_CPU]),
        "no_seat", (unsigned long long)load_relaxed(&spin_counts[NO_SEAT]),
        "low_budget",
        (unsigned long long)load_relaxed(&spin_counts[LOW_BUDGET]),
        "after_wake",
        (unsigned long long)load_relaxed(&spin_counts[AFTER_WAKE]),
        "record_misses",
        (unsigned long long)load_relaxed(&spin_counts[RECORD_MISSES]),
        "limit", load_relaxed(&spin_limit), "seats",
        load_relaxed(&spin_seats_usable), "handovers",
        (unsigned long long)load_relaxed(&handovers), "handover",
        load_relaxed(&handover_on) && load_relaxed(&handover_cpus_ok));
}

