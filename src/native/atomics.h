/*
 * Atomics by name: every access to a field that another thread or process
 * may touch without holding the field's lock goes through one of these.
 *
 * arena.h's table of shared fields says, for each field, which lock guards
 * it and how a reader outside that lock loads it; the names here are the
 * words of that table.  A plain access to a shared field is then either
 * under the field's lock, or a bug that stands out in review, and
 * .ci/cited_names.py refuses a bare __atomic builtin outside this file.
 *
 * The orders, and what each is for:
 *   relaxed  a counter or a hint: no other memory is ordered by it
 *   acquire  a load that must see everything its writer did before its
 *            release (a published state, a flag that hands data over)
 *   release  a store that publishes what this thread wrote before it
 *   acq_rel  a read-modify-write that does both (an exchange that hands
 *            a word back, a CAS that takes what another released)
 * A CAS's failure order is the weakest that makes sense for its success
 * order (acquire for acq_rel, relaxed otherwise); cas_acq_rel_relaxed is the
 * one exception, for a seat taken by a spinner that reads nothing on failure.
 *
 * Why macros: they must work on every width (uint16_t pins, uint32_t words,
 * uint64_t offsets, pointers) with GCC's and clang's __atomic builtins, which
 * also work on plain shared-memory fields without _Atomic types (the layout
 * is the same on every CPU and libc, arena.h).
 */
#ifndef MPEVENT_ATOMICS_H
#define MPEVENT_ATOMICS_H

#define load_relaxed(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define load_acquire(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)

#define store_relaxed(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define store_release(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

#define exchange_acquire(p, v) __atomic_exchange_n((p), (v), __ATOMIC_ACQUIRE)
#define exchange_release(p, v) __atomic_exchange_n((p), (v), __ATOMIC_RELEASE)
#define exchange_acq_rel(p, v) __atomic_exchange_n((p), (v), __ATOMIC_ACQ_REL)

/* Compare and swap: 1 if *p was *expected and is now desired; else 0 with
 * *expected updated to what *p held. */
#define cas_relaxed(p, expected, desired) \
    __atomic_compare_exchange_n((p), (expected), (desired), 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)
#define cas_acquire(p, expected, desired) \
    __atomic_compare_exchange_n((p), (expected), (desired), 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)
#define cas_release(p, expected, desired) \
    __atomic_compare_exchange_n((p), (expected), (desired), 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED)
#define cas_acq_rel(p, expected, desired) \
    __atomic_compare_exchange_n((p), (expected), (desired), 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)
#define cas_acq_rel_relaxed(p, expected, desired) \
    __atomic_compare_exchange_n((p), (expected), (desired), 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)
/* May fail spuriously: only in a loop that retries. */
#define cas_weak_acq_rel(p, expected, desired) \
    __atomic_compare_exchange_n((p), (expected), (desired), 1, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)

/* Arithmetic and bits: *_fetch return the new value, fetch_* the old. */
#define add_fetch_relaxed(p, v) __atomic_add_fetch((p), (v), __ATOMIC_RELAXED)
#define add_fetch_acq_rel(p, v) __atomic_add_fetch((p), (v), __ATOMIC_ACQ_REL)
#define sub_fetch_relaxed(p, v) __atomic_sub_fetch((p), (v), __ATOMIC_RELAXED)
#define sub_fetch_acq_rel(p, v) __atomic_sub_fetch((p), (v), __ATOMIC_ACQ_REL)
#define and_fetch_release(p, v) __atomic_and_fetch((p), (v), __ATOMIC_RELEASE)
#define fetch_add_relaxed(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)
#define fetch_and_release(p, v) __atomic_fetch_and((p), (v), __ATOMIC_RELEASE)
#define fetch_and_acq_rel(p, v) __atomic_fetch_and((p), (v), __ATOMIC_ACQ_REL)
#define fetch_or_release(p, v) __atomic_fetch_or((p), (v), __ATOMIC_RELEASE)

#endif
