/* offload.c — block checkpoints kept in a memory-mapped file instead of the
 * heap (MeBP's scheme).  Each checkpoint is a shared mapping of an unlinked
 * temporary file: once written and consumed by the forward pass, its pages
 * are dropped from the process (madvise DONTNEED) and live on in the page
 * cache or on storage; backward faults them back in.  The bytes are counted
 * as offloaded, not as resident saved activations. */
#include "ftbench.h"
#include "offload.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static _Atomic int64_t offloaded_live, offloaded_peak;

int64_t ftb_offload_live(void) { return offloaded_live; }
int64_t ftb_offload_peak(void) { return offloaded_peak; }
void ftb_offload_reset_peak(void) { offloaded_peak = offloaded_live; }

float *ftb_offload_alloc(const char *dir, size_t bytes, char *err, size_t errlen)
{
    if (!dir) dir = getenv("TMPDIR");
    if (!dir || !*dir) dir = "/var/tmp"; /* on storage, unlike a tmpfs /tmp */
    char path[4096];
    snprintf(path, sizeof path, "%s/ftbench-offload-XXXXXX", dir);
    int fd = mkstemp(path);
    if (fd < 0) {
        snprintf(err, errlen, "offload: cannot create a file in %s", dir);
        return NULL;
    }
    unlink(path); /* gone when unmapped, even if the process dies */
    size_t len = bytes + 64;
    if (ftruncate(fd, (off_t)len)) {
        close(fd);
        snprintf(err, errlen, "offload: cannot size a %zu-byte file in %s", len, dir);
        return NULL;
    }
    unsigned char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        snprintf(err, errlen, "offload: cannot map a file in %s", dir);
        return NULL;
    }
    memcpy(p, &len, sizeof len); /* header: the length, for unmapping */
    int64_t live = atomic_fetch_add(&offloaded_live, (int64_t)bytes) + (int64_t)bytes;
    if (live > offloaded_peak) offloaded_peak = live;
    return (float *)(p + 64);
}

void ftb_offload_evict(float *p)
{
    if (!p) return;
    unsigned char *base = (unsigned char *)p - 64;
    size_t len;
    memcpy(&len, base, sizeof len);
    /* Write back, then drop the pages from this process: the page cache
     * holds them now, outside the process's resident set. */
    msync(base, len, MS_SYNC);
    madvise(base, len, MADV_DONTNEED);
}

void ftb_offload_free(float *p)
{
    if (!p) return;
    unsigned char *base = (unsigned char *)p - 64;
    size_t len;
    memcpy(&len, base, sizeof len);
    atomic_fetch_sub(&offloaded_live, (int64_t)(len - 64));
    munmap(base, len);
}
