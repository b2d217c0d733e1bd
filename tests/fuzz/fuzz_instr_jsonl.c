/*
 * fuzz_instr_jsonl.c — instruction data as JSON Lines
 * (datasets/task_jsonl.c: {"prompt", "answer"} text lines, tokenized with
 * bytes, or {"input_ids", "loss_mask"} pre-tokenized ones).
 *
 * Input: the file's text, loaded with the byte tokenizer, every 3rd line
 * held out.  What loads must hand out examples whose tokens lie below the
 * vocabulary it says it needs, with a non-empty answer, a prompt and answer
 * no longer than the longest example, and the two splits adding up; a
 * refusal must say why in one line.
 *
 * Seeds: tests/fuzz/corpus/instr_jsonl/ (make_corpus.sh).
 */
#include "tasks.h"

#include "fuzz_common.h"

int fuzz_instr_jsonl_one(const uint8_t *data, size_t size)
{
    fz_scratch();
    char path[1024], err[512];
    fz_write("instr.jsonl", data, size);
    fz_path(path, sizeof path, "instr.jsonl");
    ftb_tokenizer *bytes = ftb_tokenizer_open("byte", err, sizeof err);
    FZ_CHECK(bytes != NULL, "byte tokenizer: %s", err);
    err[0] = 0;
    ftb_instr *d = ftb_instr_load(path, bytes, 3, err, sizeof err);
    if (!d) {
        fz_check_error(err, sizeof err, 1);
        ftb_tokenizer_close(bytes);
        return 0;
    }
    int vocab = ftb_instr_vocab_needed(d), longest = ftb_instr_max_tokens(d);
    FZ_CHECK(vocab > 0, "vocabulary needed %d", vocab);
    int64_t total = 0;
    for (int s = 0; s < 2; s++) {
        int64_t n = ftb_instr_count(d, (ftb_split)s);
        FZ_CHECK(n >= 0, "split %d has %lld examples", s, (long long)n);
        total += n;
        for (int64_t i = 0; i < n; i++) {
            const int32_t *tok;
            int np = -1, na = -1;
            ftb_instr_get(d, (ftb_split)s, i, &tok, &np, &na);
            FZ_CHECK(np >= 0 && na > 0 && np + na <= longest, "example %lld: prompt %d answer %d longest %d",
                     (long long)i, np, na, longest);
            for (int k = 0; k < np + na; k++)
                FZ_CHECK(tok[k] >= 0 && tok[k] < vocab, "example %lld token %d = %d, vocabulary %d", (long long)i, k,
                         tok[k], vocab);
        }
    }
    FZ_CHECK(total > 0, "a file with no example was accepted");
    ftb_instr_free(d);
    ftb_tokenizer_close(bytes);
    return 1;
}

FTB_FUZZ_ENTRY(fuzz_instr_jsonl_one)
