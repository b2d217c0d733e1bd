/* sampler.c — see sampler.h. */
#include "sampler.h"
#include "ftbench.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct ftb_sampler {
    pthread_t thread;
    int running;
    atomic_int stop;
    int fd;
    double t0, period;
    long page;
    ftb_rss_sample *buf;
    size_t cap, n;
    int64_t max_rss, max_tree;
    ftb_tree_shared *tree;
    pid_t self;
    int tree_countdown;
};

int64_t ftb_statm_resident_bytes(const char *statm, long page_bytes)
{
    /* statm: size resident shared ...; parse the second field by hand. */
    const char *p = statm;
    while (*p && *p != ' ') p++;
    while (*p == ' ') p++;
    if (*p < '0' || *p > '9') return -1;
    int64_t v = 0;
    while (*p >= '0' && *p <= '9') v = v * 10 + (*p++ - '0');
    return v * page_bytes;
}

#define TREE_PERIOD 0.01 /* seconds between sums over the process tree */

/* The tree's RSS now: the process alone when it has no child (one
 * syscall), else the /proc scan. */
static void sample_tree(ftb_sampler *s, int64_t self_rss)
{
    int64_t t = self_rss;
    int np = 1;
    if (ftb_has_children()) {
        int64_t sum = ftb_proctree_rss(s->self, &np);
        if (sum > t) t = sum;
        if (s->tree) atomic_fetch_add(&s->tree->samples, 1);
    }
    if (t > s->max_tree) s->max_tree = t;
    if (!s->tree) return;
    atomic_store(&s->tree->now_bytes, t);
    if (t > atomic_load(&s->tree->max_bytes)) atomic_store(&s->tree->max_bytes, t);
    if (np > atomic_load(&s->tree->max_procs)) atomic_store(&s->tree->max_procs, np);
}

static int64_t read_rss(ftb_sampler *s)
{
    char b[96];
    ssize_t r = pread(s->fd, b, sizeof b - 1, 0);
    if (r <= 0) return -1;
    b[r] = 0;
    return ftb_statm_resident_bytes(b, s->page);
}

static void add_ns(struct timespec *t, long ns)
{
    t->tv_nsec += ns;
    while (t->tv_nsec >= 1000000000L) {
        t->tv_nsec -= 1000000000L;
        t->tv_sec++;
    }
}

static void *run(void *arg)
{
    ftb_sampler *s = arg;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    /* At least one sample, however late the thread is scheduled (under
     * load it once ran only after ftb_sampler_stop: no sample at all), and
     * one more after the stop is seen: the window's end. */
    for (;;) {
        int stopping = atomic_load_explicit(&s->stop, memory_order_relaxed);
        int64_t rss = read_rss(s);
        if (rss > s->max_rss) s->max_rss = rss;
        if (--s->tree_countdown <= 0) {
            sample_tree(s, rss);
            s->tree_countdown = s->period >= TREE_PERIOD ? 1 : (int)(TREE_PERIOD / s->period);
        }
        if (s->cap == 0) {
            /* No timeline: only the maxima are kept. */
        } else if (s->n == s->cap) {
            /* Full: keep every other sample and sample half as often, so a
             * long cell keeps an even (coarser) record in fixed memory. */
            size_t m = 0;
            for (size_t i = 0; i < s->n; i += 2) s->buf[m++] = s->buf[i];
            s->n = m;
            s->period *= 2;
        }
        if (s->cap) {
            ftb_rss_sample *x = &s->buf[s->n];
            x->t = ftb_now() - s->t0;
            x->rss = rss;
            /* The phase pointer is read racily; labels are interned and never
             * freed, so the worst case is the neighbouring phase's label. */
            x->phase = ftb_mem_phase();
            s->n++;
        }
        if (stopping) break;
        add_ns(&next, (long)(s->period * 1e9));
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR)
            ;
    }
    return NULL;
}

ftb_sampler *ftb_sampler_start(double t0, double period_sec, size_t capacity, ftb_tree_shared *tree)
{
    return ftb_sampler_start_paged(t0, period_sec, capacity, tree, sysconf(_SC_PAGESIZE));
}

ftb_sampler *ftb_sampler_start_paged(double t0, double period_sec, size_t capacity, ftb_tree_shared *tree,
                                     long page_bytes)
{
    ftb_sampler *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->t0 = t0;
    s->period = period_sec > 0 ? period_sec : 1e-3;
    s->cap = capacity == 0 ? 0 : capacity < 16 ? 16 : capacity;
    s->max_tree = -1;
    s->tree = tree;
    s->self = getpid();
    s->page = page_bytes > 0 ? page_bytes : 4096;
    s->fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    /* Touch the buffer now so its pages count before the measurement, not
     * as a slow creep inside it. */
    s->buf = calloc(s->cap ? s->cap : 1, sizeof *s->buf);
    if (s->fd < 0 || !s->buf) {
        ftb_sampler_free(s);
        return NULL;
    }
    memset(s->buf, 0, s->cap * sizeof *s->buf);
    if (pthread_create(&s->thread, NULL, run, s) != 0) {
        ftb_sampler_free(s);
        return NULL;
    }
    s->running = 1;
    return s;
}

void ftb_sampler_stop(ftb_sampler *s)
{
    if (!s || !s->running) return;
    atomic_store(&s->stop, 1);
    pthread_join(s->thread, NULL);
    s->running = 0;
}

size_t ftb_sampler_count(const ftb_sampler *s) { return s ? s->n : 0; }
const ftb_rss_sample *ftb_sampler_samples(const ftb_sampler *s) { return s ? s->buf : NULL; }
double ftb_sampler_period(const ftb_sampler *s) { return s ? s->period : 0; }
int64_t ftb_sampler_max_rss(const ftb_sampler *s) { return s ? s->max_rss : -1; }
int64_t ftb_sampler_max_tree_rss(const ftb_sampler *s) { return s ? s->max_tree : -1; }
size_t ftb_sampler_buffer_bytes(const ftb_sampler *s) { return s ? s->cap * sizeof *s->buf : 0; }

void ftb_sampler_free(ftb_sampler *s)
{
    if (!s) return;
    ftb_sampler_stop(s);
    if (s->fd >= 0) close(s->fd);
    free(s->buf);
    free(s);
}
