/*
 * fuzz_tokenizer.c — tokenizer.json (datasets/bpe.c through
 * datasets/tokenizer.c: vocabulary, merges, added tokens, pre-tokenizer
 * regexes).
 *
 * Input: the text of a tokenizer.json, optionally followed by a line
 * "==ftb-text==" and text to encode with it.  A tokenizer that loads must
 * encode that text (and a fixed sample) to ids inside its vocabulary, and
 * decode them back within the length it reports; a refusal must say why in
 * one line.
 *
 * Seeds: tests/fuzz/corpus/tokenizer/ (make_corpus.sh: the BPE fixture of
 * tests/fixtures/bpe/ cut down, with added tokens, each pre-tokenizer kind
 * and sample text).
 */
#include "tokenizer.h"

#include "fuzz_common.h"

static void fz_tok_roundtrip(const ftb_tokenizer *t, const char *text, size_t len)
{
    char err[512] = "";
    int32_t *ids = NULL;
    int n = 0, cap = 0;
    if (ftb_tokenizer_encode(t, text, len, &ids, &n, &cap, err, sizeof err) != 0) {
        /* Invalid UTF-8 is refused by the regex pre-tokenizer: with a reason. */
        fz_check_error(err, sizeof err, 1);
        free(ids);
        return;
    }
    int vocab = ftb_tokenizer_vocab(t);
    for (int i = 0; i < n; i++) FZ_CHECK(ids[i] >= 0 && ids[i] < vocab, "id %d of %d outside 0..%d", i, ids[i], vocab);
    size_t need = ftb_tokenizer_decode(t, ids, n, NULL, 0);
    char *out = malloc(need + 1);
    FZ_CHECK(out != NULL, "out of memory");
    size_t got = ftb_tokenizer_decode(t, ids, n, out, need + 1);
    FZ_CHECK(got == need && out[need] == 0, "decode wrote %zu bytes, said %zu", got, need);
    free(out);
    free(ids);
}

int fuzz_tokenizer_one(const uint8_t *data, size_t size)
{
    fz_scratch();
    fz_part parts[2];
    int np = fz_split(data, size, "\n==ftb-text==\n", parts, 2);
    char path[1024], err[512];
    fz_write("tokenizer.json", parts[0].p, parts[0].n);
    fz_path(path, sizeof path, "tokenizer.json");
    err[0] = 0;
    ftb_tokenizer *t = ftb_tokenizer_open(path, err, sizeof err);
    if (!t) {
        fz_check_error(err, sizeof err, 1);
        return 0;
    }
    FZ_CHECK(!strcmp(ftb_tokenizer_kind(t), "bpe"), "a file loaded as '%s'", ftb_tokenizer_kind(t));
    static const char sample[] = "Hello, world! <|endoftext|> 123 caf\xc3\xa9  \n\tend";
    fz_tok_roundtrip(t, sample, sizeof sample - 1);
    /* The text part is capped: a pattern from the input may backtrack
     * exponentially in the text's length (PCRE2's match limit bounds it). */
    if (np == 2) fz_tok_roundtrip(t, (const char *)parts[1].p, parts[1].n < 4096 ? parts[1].n : 4096);
    ftb_tokenizer_close(t);
    return 1;
}

FTB_FUZZ_ENTRY(fuzz_tokenizer_one)
