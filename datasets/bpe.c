/* bpe.c — byte-level BPE of a Hugging Face tokenizer.json (see tokenizer.h). */
#include "tokenizer.h"

#include <stdio.h>

ftb_bpe *ftb_bpe_load(const char *path, char *err, size_t errlen)
{
    snprintf(err, errlen, "tokenizer %s: tokenizer.json support is not implemented yet (use the byte tokenizer)",
             path);
    return NULL;
}
void ftb_bpe_free(ftb_bpe *b) { (void)b; }
int ftb_bpe_vocab(const ftb_bpe *b) { (void)b; return 0; }
int ftb_bpe_encode(const ftb_bpe *b, const char *text, size_t len, int32_t **ids, int *n, int *cap, char *err,
                   size_t errlen)
{
    (void)b; (void)text; (void)len; (void)ids; (void)n; (void)cap;
    snprintf(err, errlen, "bpe: not implemented");
    return -1;
}
size_t ftb_bpe_decode(const ftb_bpe *b, const int32_t *ids, int n, char *out, size_t outcap)
{
    (void)b; (void)ids; (void)n;
    if (outcap) out[0] = 0;
    return 0;
}
