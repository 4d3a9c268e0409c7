/*
 * What the Relacy models here share: the futex, and how a model is run.
 *
 * Futex wait and wake (os_wait_word, os_wake_word, futex_wake_all) are
 * Relacy's own park and unpark on the atomic.  The value check and the park
 * are one step (as the kernel does it under its hash-bucket lock), with a
 * seq_cst fence before the check and before a wake (the kernel's full
 * barrier); a word that moved returns at once (EAGAIN, reported as woken);
 * no spurious returns.
 *   - Untimed: a sleep that nobody ends is reported as a DEADLOCK: that is
 *     how a lost wakeup shows.
 *   - Timed (a caller's deadline, RECHECK_NS, LOCK_CHECK_NS): after the value
 *     check the timeout may pass at any later point: a scheduling point,
 *     then "timed out".  Not a park: this Relacy version crashes when two
 *     threads are in a timed park on one atomic.
 *
 * run_model: the exploration every model uses, the context-bound scheduler
 * with a bound of 3 (deterministic); prints the interleavings explored and
 * returns the exit status, 0 if the model holds, 1 if not.
 */
#ifndef MODELS_FUTEX_HPP
#define MODELS_FUTEX_HPP

#include <relacy/relacy.hpp>

#include <cstdio>

static const int WOKEN = 0, TIMED_OUT = 1;
static const bool UNTIMED = false, TIMED = true;

/* futex wait while w holds expected: WOKEN, or TIMED_OUT (timed only) */
inline int os_wait_word(rl::atomic<unsigned>& w, unsigned expected, bool timed = UNTIMED)
{
    rl::context& c = rl::ctx();
    c.sched();
    c.atomic_thread_fence_seq_cst();
    unsigned now;
    {
        rl::preemption_disabler off(c);
        now = w.load(rl::mo_acquire, $);
    }
    if (now != expected) return WOKEN; /* EAGAIN */
    if (timed) {
        c.sched();
        return TIMED_OUT;
    }
    w.wait(c, false, false, $);
    return WOKEN;
}

/* futex wake of up to count sleepers on w */
inline void os_wake_word(rl::atomic<unsigned>& w, int count)
{
    rl::context& c = rl::ctx();
    c.sched();
    c.atomic_thread_fence_seq_cst();
    w.wake(c, count, $);
}

inline void futex_wake_all(rl::atomic<unsigned>& w) { os_wake_word(w, 16); }

template <typename Model>
int run_model(const char* name)
{
    rl::test_params p;
    p.search_type = rl::sched_bound;
    p.context_bound = 3;
    bool ok = rl::simulate<Model>(p);
    std::printf("%s: %s, %llu interleavings\n", name, ok ? "holds" : "BROKEN",
                (unsigned long long)p.stop_iteration);
    return ok ? 0 : 1;
}

#endif
