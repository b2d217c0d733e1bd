/* offload.h — checkpoints in memory-mapped files (see offload.c). */
#ifndef FTB_OFFLOAD_H
#define FTB_OFFLOAD_H
#include <stddef.h>

/* A buffer of bytes backed by an unlinked file in dir (NULL: $TMPDIR, else
 * /var/tmp).  NULL with err on failure. */
float *ftb_offload_alloc(const char *dir, size_t bytes, char *err, size_t errlen);
/* Writes the buffer back and drops its pages from the resident set. */
void ftb_offload_evict(float *p);
void ftb_offload_free(float *p);

#endif
