/*
 * task_passkey.c — long-context retrieval: a pass key hidden in filler.
 *
 *   "Find and remember the pass key. The grass is green. ... The pass key
 *    is 48213. Remember it. ... The sun is yellow.\nWhat is the pass key?
 *    The pass key is" -> " 48213\n"
 *
 * The fixed text is 112 bytes with a 5-digit key, so a byte-tokenized
 * example fits from len=128 up.
 *
 * The example is built in tokens, so `len` is exact whatever the
 * tokenizer: the fixed parts are tokenized, the filler is whole sentences
 * cut to fill the rest, and the needle goes in at the sentence boundary
 * nearest to depth × (filler tokens).  The filler carries no information,
 * so the key can only come from the needle, at that depth.
 */
#include "tasks.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const intro = "Find and remember the pass key.";
static const char *const sentences[5] = { " The grass is green.", " The sky is blue.", " The sun is yellow.",
                                          " Here we go.", " There and back again." };
static const char *const question = "\nWhat is the pass key? The pass key is";

typedef struct {
    int32_t *ids;
    int n, cap;
} toks;

static int enc(const ftb_tokenizer *tok, toks *t, const char *s, char *err, size_t errlen)
{
    return ftb_tokenizer_encode(tok, s, strlen(s), &t->ids, &t->n, &t->cap, err, errlen);
}

long ftb_passkey_generate(const ftb_passkey_opts *o, const ftb_tokenizer *tok, uint64_t *rng, int32_t **ids, int *n,
                          int *cap, int *n_prompt, int *needle_pos, char *err, size_t errlen)
{
    long lo = 1;
    for (int i = 1; i < o->digits; i++) lo *= 10;
    long key = lo + (long)ftb_task_below(rng, (uint64_t)(9 * lo));
    double depth = o->depth >= 0 ? o->depth : (double)(ftb_task_rand(rng) >> 11) * 0x1.0p-53;
    char needle[160], ans[64];
    snprintf(needle, sizeof needle, " The pass key is %ld. Remember it.", key);
    snprintf(ans, sizeof ans, " %ld\n", key);

    toks head = { 0 }, nd = { 0 }, tail = { 0 }, an = { 0 }, sent[5];
    memset(sent, 0, sizeof sent);
    long rc = key;
    if (enc(tok, &head, intro, err, errlen) || enc(tok, &nd, needle, err, errlen) ||
        enc(tok, &tail, question, err, errlen) || enc(tok, &an, ans, err, errlen))
        rc = -1;
    for (int i = 0; rc >= 0 && i < 5; i++)
        if (enc(tok, &sent[i], sentences[i], err, errlen)) rc = -1;
    int fixed = head.n + nd.n + tail.n + an.n;
    int budget = o->len - fixed;
    if (rc >= 0 && budget < 0) {
        snprintf(err, errlen, "passkey: len=%d is shorter than the %d tokens of its fixed text", o->len, fixed);
        rc = -1;
    }
    if (rc >= 0 && (size_t)*cap < (size_t)o->len) {
        int32_t *g = realloc(*ids, (size_t)o->len * sizeof **ids);
        if (!g) {
            snprintf(err, errlen, "passkey: out of memory for %d tokens", o->len);
            rc = -1;
        } else {
            *ids = g;
            *cap = o->len;
        }
    }
    if (rc >= 0) {
        /* Filler sentences in a seeded order; the needle at the boundary
         * nearest its depth (a boundary past the budget is the end). */
        int target = (int)(depth * budget + 0.5);
        int32_t *out = *ids;
        int k = 0;
        memcpy(out, head.ids, (size_t)head.n * sizeof *out);
        k = head.n;
        int filled = 0, placed = 0;
        *needle_pos = -1;
        while (filled < budget || !placed) {
            int si = (int)ftb_task_below(rng, 5);
            const toks *s = &sent[si];
            int take = s->n < budget - filled ? s->n : budget - filled;
            /* Place the needle before this sentence if this boundary is at
             * least as close to the target as the next one. */
            if (!placed && (filled + take / 2 >= target || take == 0)) {
                *needle_pos = k;
                memcpy(out + k, nd.ids, (size_t)nd.n * sizeof *out);
                k += nd.n;
                placed = 1;
            }
            memcpy(out + k, s->ids, (size_t)take * sizeof *out);
            k += take;
            filled += take;
        }
        memcpy(out + k, tail.ids, (size_t)tail.n * sizeof *out);
        k += tail.n;
        *n_prompt = k;
        memcpy(out + k, an.ids, (size_t)an.n * sizeof *out);
        k += an.n;
        *n = k;
    }
    free(head.ids);
    free(nd.ids);
    free(tail.ids);
    free(an.ids);
    for (int i = 0; i < 5; i++) free(sent[i].ids);
    return rc;
}
