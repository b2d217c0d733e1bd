/* step_arena.c — where a step's saved activations and workspaces live, so
 * that the next step finds them already in memory.
 *
 * Why: a step frees everything it allocates in these two categories by its
 * end (transformer.c's run, the methods' hooks).  From the process
 * allocator those pages go back to the kernel — jemalloc purges its dirty
 * pages within seconds and a block of 8 MiB or more at once — and the next
 * step takes a page fault and a zeroed page for every 4 KiB of them again:
 * ~125,000 faults per step for smollm2-135m LoRA at 512 tokens, most of the
 * saved activations.  Keeping the pages (jemalloc without decay) removes
 * the faults but raises the peak: its placement of a later step differs
 * from the first's and the retained pages fragment (+44 MiB, 4 %, measured;
 * docs/CORE.md, "What is kept across steps").
 *
 * So these blocks come from one reserved range of address space, placed by
 * a deterministic best fit whose state depends only on the blocks now live.
 * A step that starts with the same live blocks and allocates the same
 * sizes in the same order gets the same addresses, touches the same pages,
 * and no page more: later steps fault nothing for their buffers and peak
 * exactly where the first step did.  Freed ranges keep their pages
 * (nothing is returned to the kernel), so the resident size between steps
 * is the first step's high-water mark of the range — below the step's own
 * peak, which it already reached.
 *
 * The range is reserved PROT_NONE (no commit charge, nothing resident) and
 * opened for reading and writing as the highest block grows.  The free
 * ranges are kept out of band, in address order, so that nothing is written
 * into a free page.  Only the training thread allocates (mem.c); a mutex
 * still guards the lists, for a hook that would allocate from a thread. */
#include "cpu.h"
#include "model_internal.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define COMMIT_STEP      ((size_t)2 << 20) /* the range opens 2 MiB at a time    */
#define MIN_RESERVE      ((size_t)256 << 20)
#define EMULATED_RESERVE ((size_t)512 << 20)

typedef struct {
    size_t off, len;
} span;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int state; /* 0 not tried, 1 ready, -1 off (disabled, or no reservation) */
static unsigned char *base;
static size_t reserved, committed, high_water;
static span *free_spans; /* address order, coalesced; the last one runs to the end */
static int n_free, cap_free;
static int64_t fallbacks;

/* FTBENCH_STEP_ARENA=0 turns the arena off (before/after measurements);
 * read once, at the first allocation that could use it. */
static int wanted(void)
{
    if (FTB_EXACT_ALLOC) return 0;
    const char *v = getenv("FTBENCH_STEP_ARENA");
    return !(v && strcmp(v, "0") == 0);
}

/* Address space for the largest step this machine can hold: its physical
 * memory (a step larger than that cannot be resident anyway), halved
 * while the kernel refuses it (an address-space limit). */
static int reserve(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    size_t want = pages > 0 && page > 0 ? (size_t)pages * (size_t)page : (size_t)4 << 30;
    /* A user-mode emulator (qemu-aarch64) keeps flags for every guest page
     * of a mapping, reserved or not: the 24 GiB range cost it ~143 MiB of
     * its own memory, counted in the cell's RSS (a tiny LoRA cell 165 MiB
     * instead of 22; CI's arm64 suites went over their budgets).  There the
     * range is EMULATED_RESERVE (~3 MiB of flags); a larger step falls back
     * to the allocator. */
    if (ftb_cpu()->emulated && want > EMULATED_RESERVE) want = EMULATED_RESERVE;
    for (; want >= MIN_RESERVE; want /= 2) {
        void *p = mmap(NULL, want, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) continue;
        cap_free = 16;
        free_spans = malloc((size_t)cap_free * sizeof *free_spans);
        if (!free_spans) {
            munmap(p, want);
            return -1;
        }
        base = p;
        reserved = want;
        free_spans[0] = (span){ 0, want };
        n_free = 1;
        return 0;
    }
    return -1;
}

static int ready(void)
{
    if (state == 0) state = wanted() && reserve() == 0 ? 1 : -1;
    return state == 1;
}

/* Opens the range up to end (PROT_NONE -> read/write); 0 or -1. */
static int commit_to(size_t end)
{
    if (end <= committed) return 0;
    size_t to = (end + COMMIT_STEP - 1) / COMMIT_STEP * COMMIT_STEP;
    if (to > reserved) to = reserved;
    if (mprotect(base + committed, to - committed, PROT_READ | PROT_WRITE) != 0) return -1;
    committed = to;
    return 0;
}

void *ftb_step_arena_alloc(size_t bytes)
{
    pthread_mutex_lock(&lock);
    void *p = NULL;
    if (!ready()) goto out;
    /* Best fit: the smallest free span that holds the block, the lowest
     * of equals; the block takes its low end.  The tail span is taken only
     * when no hole fits. */
    int best = -1;
    for (int i = 0; i < n_free; i++)
        if (free_spans[i].len >= bytes && (best < 0 || free_spans[i].len < free_spans[best].len)) best = i;
    if (best < 0) goto out;
    span *s = &free_spans[best];
    if (commit_to(s->off + bytes) != 0) goto out;
    p = base + s->off;
    if (s->off + bytes > high_water) high_water = s->off + bytes;
    s->off += bytes;
    s->len -= bytes;
    if (s->len == 0) {
        memmove(s, s + 1, (size_t)(n_free - best - 1) * sizeof *s);
        n_free--;
    }
out:
    if (!p && state == 1) fallbacks++;
    pthread_mutex_unlock(&lock);
    return p;
}

int ftb_step_arena_owns(const void *p)
{
    /* base and reserved are set once, before any block is handed out */
    const unsigned char *c = p;
    return base && c >= base && c < base + reserved;
}

void ftb_step_arena_free(void *p, size_t bytes)
{
    pthread_mutex_lock(&lock);
    size_t off = (size_t)((unsigned char *)p - base), end = off + bytes;
    int i = 0; /* the first free span after the block */
    while (i < n_free && free_spans[i].off < off) i++;
    int joins_prev = i > 0 && free_spans[i - 1].off + free_spans[i - 1].len == off;
    int joins_next = i < n_free && free_spans[i].off == end;
    if (joins_prev && joins_next) {
        free_spans[i - 1].len += bytes + free_spans[i].len;
        memmove(&free_spans[i], &free_spans[i + 1], (size_t)(n_free - i - 1) * sizeof *free_spans);
        n_free--;
    } else if (joins_prev) {
        free_spans[i - 1].len += bytes;
    } else if (joins_next) {
        free_spans[i].off = off;
        free_spans[i].len += bytes;
    } else {
        if (n_free == cap_free) {
            span *g = realloc(free_spans, (size_t)cap_free * 2 * sizeof *g);
            if (!g) { /* cannot record the hole: it stays unused (never wrong) */
                pthread_mutex_unlock(&lock);
                return;
            }
            free_spans = g;
            cap_free *= 2;
        }
        memmove(&free_spans[i + 1], &free_spans[i], (size_t)(n_free - i) * sizeof *free_spans);
        free_spans[i] = (span){ off, bytes };
        n_free++;
    }
    pthread_mutex_unlock(&lock);
}

void ftb_step_arena_stats(ftb_step_arena_info *out)
{
    pthread_mutex_lock(&lock);
    memset(out, 0, sizeof *out);
    out->enabled = ready();
    out->reserved_bytes = (int64_t)reserved;
    out->high_water_bytes = (int64_t)high_water;
    size_t free_below = 0; /* of the range up to the high-water mark */
    for (int i = 0; i < n_free && free_spans[i].off < high_water; i++) {
        size_t end = free_spans[i].off + free_spans[i].len;
        free_below += (end > high_water ? high_water : end) - free_spans[i].off;
    }
    out->live_bytes = (int64_t)(high_water - free_below);
    out->fallbacks = fallbacks;
    pthread_mutex_unlock(&lock);
}
