/*
 * tokenizer.c — the byte tokenizer and the dispatch to the BPE of a
 * tokenizer.json (datasets/bpe.c).  See tokenizer.h.
 */
#include "tokenizer.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ftb_tokenizer {
    ftb_bpe *bpe; /* NULL: byte tokenizer */
};

ftb_tokenizer *ftb_tokenizer_open(const char *spec, char *err, size_t errlen)
{
    ftb_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err, errlen, "tokenizer: out of memory");
        return NULL;
    }
    if (!spec || !*spec || !strcmp(spec, "byte")) return t;
    t->bpe = ftb_bpe_load(spec, err, errlen);
    if (!t->bpe) {
        free(t);
        return NULL;
    }
    return t;
}

void ftb_tokenizer_close(ftb_tokenizer *t)
{
    if (!t) return;
    ftb_bpe_free(t->bpe);
    free(t);
}

const char *ftb_tokenizer_kind(const ftb_tokenizer *t) { return t && t->bpe ? "bpe" : "byte"; }

int ftb_tokenizer_vocab(const ftb_tokenizer *t) { return t && t->bpe ? ftb_bpe_vocab(t->bpe) : 256; }

int ftb_tokenizer_encode(const ftb_tokenizer *t, const char *text, size_t len, int32_t **ids, int *n, int *cap,
                         char *err, size_t errlen)
{
    if (t && t->bpe) return ftb_bpe_encode(t->bpe, text, len, ids, n, cap, err, errlen);
    if ((size_t)*n + len > (size_t)INT32_MAX / 2) {
        snprintf(err, errlen, "tokenizer: text of %zu bytes is too long", len);
        return -1;
    }
    if ((size_t)*n + len > (size_t)*cap) {
        int c = *cap ? *cap : 64;
        while ((size_t)c < (size_t)*n + len) c *= 2;
        int32_t *g = realloc(*ids, (size_t)c * sizeof **ids);
        if (!g) {
            snprintf(err, errlen, "tokenizer: out of memory");
            return -1;
        }
        *ids = g;
        *cap = c;
    }
    for (size_t i = 0; i < len; i++) (*ids)[(*n)++] = (unsigned char)text[i];
    return 0;
}

size_t ftb_tokenizer_decode(const ftb_tokenizer *t, const int32_t *ids, int n, char *out, size_t outcap)
{
    if (t && t->bpe) return ftb_bpe_decode(t->bpe, ids, n, out, outcap);
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        const char *s;
        char one[2] = { 0, 0 };
        if (ids[i] >= 0 && ids[i] < 256) {
            one[0] = (char)ids[i];
            s = one;
        } else {
            s = "\xEF\xBF\xBD";
        }
        size_t l = ids[i] == 0 ? 1 : strlen(s);
        for (size_t j = 0; j < l; j++, k++)
            if (k + 1 < outcap) out[k] = s[j];
    }
    if (outcap) out[k < outcap ? k : outcap - 1] = 0;
    return k;
}
