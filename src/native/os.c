/*
 * Linux: the one file that talks to the kernel (os.h has the interface
 * and what other kernels would use).
 */
#define _GNU_SOURCE
#include "atomics.h"
#include "os.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/statfs.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14; older headers lack it */
#endif

/* --- shared words ---------------------------------------------------- */

static int
futex_wait(uint32_t *word, int op, uint32_t expected, long long timeout_ns)
{
    struct timespec ts;
    ts.tv_sec = (time_t)(timeout_ns / 1000000000LL);
    ts.tv_nsec = (long)(timeout_ns % 1000000000LL);
    long rc = syscall(SYS_futex, word, op, expected, timeout_ns < 0 ? NULL : &ts, NULL, 0);
    if (rc == 0 || errno == EAGAIN) return 0; /* woken, or the word had moved */
    return errno;
}

int
os_wait_word(uint32_t *word, uint32_t expected, long long timeout_ns)
{
    return futex_wait(word, FUTEX_WAIT, expected, timeout_ns);
}

void
os_wake_word(uint32_t *word, int count)
{
    syscall(SYS_futex, word, FUTEX_WAKE, count, NULL, NULL, 0);
}

int
os_wait_private(uint32_t *word, uint32_t expected, long long timeout_ns)
{
    return futex_wait(word, FUTEX_WAIT_PRIVATE, expected, timeout_ns);
}

void
os_wake_private(uint32_t *word, int count)
{
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, count, NULL, NULL, 0);
}

void
os_notify_fd(int fd, uint64_t count)
{
    while (write(fd, &count, sizeof count) < 0 && errno == EINTR) {
    }
}

/* --- datagrams to event loops ----------------------------------------- */

size_t
os_loop_address(uint32_t token, uint32_t slot, char *path, size_t size)
{
    /* Abstract (a leading NUL): no file, gone with its socket. */
    int n = snprintf(path + 1, size - 1, "mpevent-loop-%08x-%u", token, slot);
    path[0] = '\0';
    return n < 0 ? 0 : (size_t)n + 1;
}

int
os_wakeup_sender(void)
{
    static int sender = -1; /* one unbound socket per process, made on first use */
    int fd = load_acquire(&sender);
    if (fd >= 0) return fd;
    int made = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (made < 0) return -1;
    int none = -1;
    if (cas_acq_rel(&sender, &none, made))
        return made;
    close(made); /* another thread made one first */
    return none;
}

int
os_send_wakeup(uint32_t token, uint32_t slot)
{
    int fd = os_wakeup_sender();
    if (fd < 0) return errno;
    struct sockaddr_un to = {.sun_family = AF_UNIX};
    size_t length = os_loop_address(token, slot, to.sun_path, sizeof to.sun_path);
    socklen_t size = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + length);
    for (;;) {
        if (sendto(fd, "w", 1, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&to, size) >= 0)
            return 0;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0; /* unread ones will wake it */
        if (errno != EINTR) return errno;
    }
}

/* --- liveness locks -------------------------------------------------- */

static int
ofd(int fd, int command, short type, long long start, long long length)
{
    struct flock lock = {.l_type = type, .l_whence = SEEK_SET, .l_start = start,
                         .l_len = length, .l_pid = 0};
    return fcntl(fd, command, &lock);
}

int
os_ofd_lock(int fd, long long start, long long length, int wait)
{
    if (ofd(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, F_WRLCK, start, length) == 0) return 0;
    return errno == EACCES ? EAGAIN : errno;
}

int
os_ofd_unlock(int fd, long long start, long long length)
{
    return ofd(fd, F_OFD_SETLK, F_UNLCK, start, length) == 0 ? 0 : errno;
}

int
os_ofd_held(int fd, long long start, long long length)
{
    struct flock lock = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = start,
                         .l_len = length, .l_pid = 0};
    if (fcntl(fd, F_OFD_GETLK, &lock) < 0) return -1;
    return lock.l_type != F_UNLCK;
}

/* --- memory ---------------------------------------------------------- */

int
os_populate(void *addr, size_t length)
{
    if (madvise(addr, length, MADV_POPULATE_WRITE) == 0) return 0;
    return errno == EINVAL ? ENOSYS : errno;
}

void
os_punch(void *addr, size_t length)
{
    madvise(addr, length, MADV_REMOVE);
}

int
os_advise_huge(void *addr, size_t length)
{
    return madvise(addr, length, MADV_HUGEPAGE) == 0;
}

/* --- the machine ----------------------------------------------------- */

int
os_cpu(void)
{
    return sched_getcpu();
}

int
os_runnable_tasks(void)
{
    /* /proc/loadavg, opened once per process (-2: not yet, -1: it cannot
     * be); a race opens it twice and closes the loser.  Close-on-exec,
     * and a fork's child reads the same file through the same descriptor
     * (pread: no shared offset). */
    static int fd = -2;
    int known = load_acquire(&fd);
    if (known == -2) {
        int opened = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
        int expected = -2;
        if (!cas_acq_rel(&fd, &expected, opened < 0 ? -1 : opened)) {
            if (opened >= 0) close(opened);
        }
        known = load_acquire(&fd);
    }
    if (known < 0) return -1;
    char text[96]; /* "0.44 0.43 0.59 1/107 420\n" */
    ssize_t got = pread(known, text, sizeof text - 1, 0);
    if (got <= 0) return -1;
    text[got] = '\0';
    char *slash = strchr(text, '/');
    if (slash == NULL) return -1;
    char *start = slash;
    while (start > text && start[-1] != ' ') start--;
    return atoi(start);
}

void
os_yield(void)
{
    sched_yield();
}

double
os_usable_cpus(void)
{
    cpu_set_t set;
    double cpus = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
    FILE *f = fopen("/sys/fs/cgroup/cpu.max", "re");
    if (f != NULL) {
        char quota[32];
        long period = 0;
        if (fscanf(f, "%31s %ld", quota, &period) == 2 && period > 0 &&
            quota[0] >= '0' && quota[0] <= '9') {
            double limit = (double)atol(quota) / (double)period;
            if (limit < cpus) cpus = limit;
        }
        fclose(f);
    }
    return cpus;
}

size_t
os_page_size(void)
{
    static size_t page;
    size_t known = load_relaxed(&page);
    if (known == 0) {
        long value = sysconf(_SC_PAGESIZE);
        known = value > 0 ? (size_t)value : 4096;
        store_relaxed(&page, known);
    }
    return known;
}

size_t
os_huge_page_size(void)
{
    static long long huge = -1; /* read once; a race reads the same file twice */
    long long known = load_relaxed(&huge);
    if (known < 0) {
        unsigned long long size = 0;
        FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size", "re");
        if (f != NULL) {
            if (fscanf(f, "%llu", &size) != 1) size = 0;
            fclose(f);
        }
        /* Only a power of two is a page size: anything else means none. */
        known = (size & (size - 1)) == 0 ? (long long)size : 0;
        store_relaxed(&huge, known);
    }
    return (size_t)known;
}

long long
os_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* --- mappings, files, processes ---------------------------------------- */

void *
os_map_shared(int fd, size_t length)
{
    /* MAP_NORESERVE: a segment is mostly holes; pages are reserved one
     * range at a time (os_populate). */
    void *base = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
    return base == MAP_FAILED ? NULL : base;
}

void *
os_map_scratch(size_t length)
{
    void *base = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return base == MAP_FAILED ? NULL : base;
}

void
os_unmap(void *addr, size_t length)
{
    munmap(addr, length);
}

long long
os_read_at(int fd, void *buffer, size_t length, long long offset)
{
    return (long long)pread(fd, buffer, length, (off_t)offset);
}

int
os_open_read(const char *path)
{
    return open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
}

void
os_close(int fd)
{
    close(fd);
}

int
os_unlink(const char *path)
{
    return unlink(path) == 0 ? 0 : errno;
}

int
os_fs_type(const char *path, long long *type)
{
    struct statfs info;
    if (statfs(path, &info) != 0) return errno;
    *type = (long long)info.f_type;
    return 0;
}

unsigned int
os_pid(void)
{
    return (unsigned int)getpid();
}

_Static_assert(sizeof(sigset_t) <= sizeof(os_signals), "os_signals holds a sigset_t");
_Static_assert(sizeof(((struct sockaddr_un *)0)->sun_path) == OS_LOOP_ADDRESS_MAX,
               "OS_LOOP_ADDRESS_MAX is sun_path's size");

void
os_block_signals(os_signals *before)
{
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, (sigset_t *)before);
}

void
os_restore_signals(const os_signals *before)
{
    sigprocmask(SIG_SETMASK, (const sigset_t *)before, NULL);
}

int
os_at_fork(void (*prepare)(void), void (*parent)(void), void (*child)(void))
{
    return pthread_atfork(prepare, parent, child);
}
