/* mem.c — the core's allocator front: every byte is tagged with a category,
 * live and peak bytes are tracked per category, and an optional timeline
 * records each allocation and free with the phase it happened in.
 *
 * Allocations come from the process allocator (jemalloc in normal builds)
 * or, for a step's saved activations and workspaces, from the step arena
 * (step_arena.c), with a 64-byte header in front that remembers size and
 * category, so a free needs no lookup.  Only the training thread allocates; the counters are
 * atomics so that a sampler thread may read them while it runs. */
#include "ftbench.h"
#include "model_internal.h"

#include <dlfcn.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HEADER 64
#define MAGIC  0x6674626d656d3031ULL /* "ftbmem01" */
/* jemalloc's first size class served by extents rather than slabs */
#define ARENA_MIN_BYTES ((size_t)16 << 10)
#define MAX_PHASES      4096

typedef struct {
    uint64_t magic;
    uint64_t bytes;
    uint32_t category;
} alloc_header;

static _Atomic int64_t live_bytes[FTB_MEM_NCAT];
static int64_t peak_bytes[FTB_MEM_NCAT];
static _Atomic int64_t live_sum;
static int64_t peak_sum;
static int64_t peak_split[FTB_MEM_NCAT];

static const char *category_names[FTB_MEM_NCAT] = { "weights",   "trainable",         "grads",
                                                    "optimizer", "saved_activations", "workspace" };

const char *ftb_mem_category_name(ftb_mem_category c)
{
    return (unsigned)c < FTB_MEM_NCAT ? category_names[c] : "unknown";
}

double ftb_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- phases ---- */
static char *phase_names[MAX_PHASES];
static int n_phases;
static _Atomic int current_phase;
static ftb_phase_listener phase_listener;
static void *phase_listener_data;

static int intern_phase(const char *label)
{
    for (int i = 0; i < n_phases; i++)
        if (strcmp(phase_names[i], label) == 0) return i;
    if (n_phases == MAX_PHASES) return MAX_PHASES - 1; /* last slot absorbs overflow */
    phase_names[n_phases] = strdup(label);
    return n_phases++;
}

void ftb_mem_set_phase(const char *label)
{
    if (n_phases == 0) intern_phase("init");
    atomic_store_explicit(&current_phase, intern_phase(label), memory_order_relaxed);
    if (phase_listener) phase_listener(label, phase_listener_data);
}

const char *ftb_mem_phase(void)
{
    if (n_phases == 0) return "init";
    return phase_names[atomic_load_explicit(&current_phase, memory_order_relaxed)];
}

const char *ftb_mem_phase_name(uint16_t phase) { return phase < n_phases ? phase_names[phase] : "init"; }

void ftb_mem_set_phase_listener(ftb_phase_listener fn, void *userdata)
{
    phase_listener = fn;
    phase_listener_data = userdata;
}

double ftb_phase(const char *label)
{
    ftb_mem_set_phase(label);
    return ftb_now();
}

/* ---- timeline ---- */
static ftb_mem_event *events;
static size_t event_capacity, event_count;
static int events_dropped;
static double timeline_t0;

void ftb_mem_timeline_enable(size_t capacity)
{
    free(events);
    events = NULL;
    event_capacity = event_count = 0;
    events_dropped = 0;
    if (capacity == 0) return;
    /* The timeline itself is the harness's, not the model's: plain malloc. */
    events = malloc(capacity * sizeof *events);
    if (events) event_capacity = capacity;
    timeline_t0 = ftb_now();
}

size_t ftb_mem_timeline_count(void) { return event_count; }
const ftb_mem_event *ftb_mem_timeline_events(void) { return events; }
int ftb_mem_timeline_dropped(void) { return events_dropped; }

static void record(ftb_mem_category c, int64_t delta)
{
    int64_t live = atomic_fetch_add_explicit(&live_bytes[c], delta, memory_order_relaxed) + delta;
    int64_t sum = atomic_fetch_add_explicit(&live_sum, delta, memory_order_relaxed) + delta;
    if (live > peak_bytes[c]) peak_bytes[c] = live;
    if (sum > peak_sum) {
        peak_sum = sum;
        for (int i = 0; i < FTB_MEM_NCAT; i++) peak_split[i] = atomic_load(&live_bytes[i]);
    }
    if (event_capacity) {
        if (event_count < event_capacity) {
            ftb_mem_event *e = &events[event_count++];
            e->t_sec = ftb_now() - timeline_t0;
            e->phase = (uint16_t)atomic_load_explicit(&current_phase, memory_order_relaxed);
            e->category = (uint8_t)c;
            e->delta = delta;
        } else {
            events_dropped = 1;
        }
    }
}

void ftb_mem_account(ftb_mem_category c, int64_t delta)
{
    if ((unsigned)c < FTB_MEM_NCAT && delta != 0) record(c, delta);
}

/* ---- allocation failure: the sticky flag and the injection hook ----
 * A hook or a leaf op that gets NULL from ftb_alloc has no way to return an
 * error through its signature; it skips its work instead, and the first
 * failure is remembered here until the next ftb_mem_clear_failure (which
 * forward/backward call on entry), so that the core notices it at the next
 * check and returns NaN with the failure's message.  The injection hook
 * (tests, FTBENCH_FAIL_ALLOC_AFTER) costs one predictable branch and one
 * increment per allocation. */
static int64_t alloc_calls;         /* ftb_alloc calls since the process began */
static int64_t fail_countdown = -1; /* allocations left before one fails; -1: off */
static int fail_persistent;
static struct {
    int failed, injected;
    size_t bytes;
    ftb_mem_category category;
    int phase;
} failure;

void ftb_mem_fail_after(int64_t n, int persistent)
{
    fail_countdown = n < 0 ? -1 : n;
    fail_persistent = persistent;
}

int64_t ftb_mem_alloc_calls(void) { return alloc_calls; }
int ftb_mem_failed(void) { return failure.failed; }
void ftb_mem_clear_failure(void) { memset(&failure, 0, sizeof failure); }

void ftb_mem_failure_message(char *err, size_t errlen)
{
    if (!err || !errlen) return;
    if (!failure.failed) {
        snprintf(err, errlen, "out of memory");
        return;
    }
    snprintf(err, errlen, "out of memory: %zu bytes of %s in phase '%s'%s", failure.bytes,
             ftb_mem_category_name(failure.category), ftb_mem_phase_name((uint16_t)failure.phase),
             failure.injected ? " (injected failure)" : "");
}

/* FTBENCH_FAIL_ALLOC_AFTER=N: the process's allocation N+1 fails (one
 * failure; "N+" fails that one and every later one).  For fault tests of the
 * executable; read once, before main. */
__attribute__((constructor)) static void read_fail_env(void)
{
    const char *v = getenv("FTBENCH_FAIL_ALLOC_AFTER");
    if (!v || !*v) return;
    char *end;
    long long n = strtoll(v, &end, 10);
    if (end == v || n < 0 || (*end && strcmp(end, "+") != 0)) {
        fprintf(stderr, "ftbench: FTBENCH_FAIL_ALLOC_AFTER: '%s' is not a count (N or N+)\n", v);
        return;
    }
    ftb_mem_fail_after(n, *end == '+');
}

static void *alloc_failed(ftb_mem_category c, size_t bytes, int injected)
{
    if (!failure.failed) {
        failure.failed = 1;
        failure.injected = injected;
        failure.bytes = bytes;
        failure.category = (unsigned)c < FTB_MEM_NCAT ? c : FTB_MEM_WORKSPACE;
        failure.phase = n_phases ? atomic_load_explicit(&current_phase, memory_order_relaxed) : 0;
    }
    return NULL;
}

void *ftb_alloc(ftb_mem_category c, size_t bytes)
{
    alloc_calls++;
    if (__builtin_expect(fail_countdown >= 0, 0)) {
        if (fail_countdown == 0) {
            if (!fail_persistent) fail_countdown = -1;
            return alloc_failed(c, bytes, 1);
        }
        fail_countdown--;
    }
    if ((unsigned)c >= FTB_MEM_NCAT) return alloc_failed(c, bytes, 0);
#if FTB_EXACT_ALLOC
    /* Checking builds: the exact size (posix_memalign, unlike aligned_alloc,
     * needs no multiple of the alignment), so that an overrun of even one
     * float is seen by ASan and valgrind. */
    size_t total = HEADER + bytes;
    if (total < bytes) return alloc_failed(c, bytes, 0); /* overflow */
    void *block;
    if (posix_memalign(&block, 64, total)) return alloc_failed(c, bytes, 0);
    unsigned char *raw = block;
#else
    size_t total = HEADER + ((bytes + 63) & ~(size_t)63);
    if (total < bytes) return alloc_failed(c, bytes, 0); /* overflow */
    /* A step's own buffers go to the step arena, whose pages stay from one
     * step to the next (step_arena.c); small ones stay in jemalloc's slabs,
     * which keep their pages in use. */
    unsigned char *raw =
        (c == FTB_MEM_SAVED || c == FTB_MEM_WORKSPACE) && total >= ARENA_MIN_BYTES ? ftb_step_arena_alloc(total) : NULL;
    /* aligned_alloc wants a multiple of the alignment; it is the faster
     * path in jemalloc (measured: posix_memalign costs 5-10 ns more). */
    if (!raw) raw = aligned_alloc(64, total);
    if (!raw) return alloc_failed(c, bytes, 0);
#endif
    alloc_header *h = (alloc_header *)raw;
    h->magic = MAGIC;
    h->bytes = bytes;
    h->category = c;
    record(c, (int64_t)bytes);
    return raw + HEADER;
}

void *ftb_calloc(ftb_mem_category c, size_t bytes)
{
    void *p = ftb_alloc(c, bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

void ftb_free(void *p)
{
    if (!p) return;
    alloc_header *h = (alloc_header *)((unsigned char *)p - HEADER);
    if (h->magic != MAGIC) abort(); /* not ours: a core bug, fail loudly */
    h->magic = 0;
    record((ftb_mem_category)h->category, -(int64_t)h->bytes);
#if !FTB_EXACT_ALLOC
    if (ftb_step_arena_owns(h)) {
        ftb_step_arena_free(h, HEADER + ((h->bytes + 63) & ~(size_t)63));
        return;
    }
#endif
    free(h);
}

void ftb_mem_recategorize(void *p, ftb_mem_category c)
{
    alloc_header *h = (alloc_header *)((unsigned char *)p - HEADER);
    if (h->magic != MAGIC) abort();
    record((ftb_mem_category)h->category, -(int64_t)h->bytes);
    h->category = c;
    record(c, (int64_t)h->bytes);
}

void ftb_mem_get_stats(ftb_mem_stats *out)
{
    memset(out, 0, sizeof *out);
    for (int i = 0; i < FTB_MEM_NCAT; i++) {
        out->live[i] = atomic_load(&live_bytes[i]);
        out->peak[i] = peak_bytes[i];
        out->peak_total_at[i] = peak_split[i];
    }
    out->live_total = atomic_load(&live_sum);
    out->peak_total = peak_sum;
}

void ftb_mem_reset_peaks(void)
{
    for (int i = 0; i < FTB_MEM_NCAT; i++) peak_split[i] = peak_bytes[i] = atomic_load(&live_bytes[i]);
    peak_sum = atomic_load(&live_sum);
}

/* jemalloc is found at run time so that sanitizer builds (which bring their
 * own allocator) still link; they report "not jemalloc". */
int ftb_jemalloc_stats(size_t *allocated, size_t *active, size_t *resident)
{
    typedef int (*mallctl_fn)(const char *, void *, size_t *, void *, size_t);
    mallctl_fn mallctl = (mallctl_fn)dlsym(RTLD_DEFAULT, "mallctl");
    if (!mallctl) return -1;
    uint64_t epoch = 1;
    size_t esz = sizeof epoch;
    mallctl("epoch", &epoch, &esz, &epoch, esz); /* refresh the cached stats */
    size_t sz = sizeof(size_t);
    if (mallctl("stats.allocated", allocated, &sz, NULL, 0)) return -1;
    sz = sizeof(size_t);
    if (mallctl("stats.active", active, &sz, NULL, 0)) return -1;
    sz = sizeof(size_t);
    if (mallctl("stats.resident", resident, &sz, NULL, 0)) return -1;
    return 0;
}
