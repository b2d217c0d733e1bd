/*
 * tokenizer.h — text to token ids for tasks and instruction data.
 *
 *   byte                    the default: one token per UTF-8 byte, id = byte
 *                           value (0..255).  Fits every zoo vocabulary of at
 *                           least 256 ids and needs no file.
 *   PATH (tokenizer.json)   a Hugging Face tokenizer.json of a byte-level BPE
 *                           model (GPT-2, Qwen2, Llama 3, SmolLM2 ...):
 *                           pre-tokenizer regex split, byte-to-unicode
 *                           mapping, merges by rank (datasets/bpe.c).
 *
 * Encoding is deterministic and never allocates behind the caller's back
 * beyond the output array it returns.
 */
#ifndef FTB_TOKENIZER_H
#define FTB_TOKENIZER_H

#include "ftbench.h"

typedef struct ftb_tokenizer ftb_tokenizer;

/* "byte" (or NULL) or a tokenizer.json path.  NULL with err naming the file
 * and the problem on failure. */
ftb_tokenizer *ftb_tokenizer_open(const char *spec, char *err, size_t errlen);
void ftb_tokenizer_close(ftb_tokenizer *t);
/* "byte" or "bpe". */
const char *ftb_tokenizer_kind(const ftb_tokenizer *t);
/* One more than the largest id the tokenizer can produce. */
int ftb_tokenizer_vocab(const ftb_tokenizer *t);

/* Appends the ids of text[0..len) to *ids (grown with realloc; *n ids are
 * already there, *cap the capacity).  0, or -1 with err. */
int ftb_tokenizer_encode(const ftb_tokenizer *t, const char *text, size_t len, int32_t **ids, int *n, int *cap,
                         char *err, size_t errlen);
/* Writes the text of ids (invalid ids as "\xEF\xBF\xBD") into out, NUL
 * terminated and truncated to outcap; returns the full length. */
size_t ftb_tokenizer_decode(const ftb_tokenizer *t, const int32_t *ids, int n, char *out, size_t outcap);

/* Internal: the byte-level BPE behind a tokenizer.json (datasets/bpe.c). */
typedef struct ftb_bpe ftb_bpe;
ftb_bpe *ftb_bpe_load(const char *path, char *err, size_t errlen);
void ftb_bpe_free(ftb_bpe *b);
int ftb_bpe_vocab(const ftb_bpe *b);
int ftb_bpe_encode(const ftb_bpe *b, const char *text, size_t len, int32_t **ids, int *n, int *cap, char *err,
                   size_t errlen);
size_t ftb_bpe_decode(const ftb_bpe *b, const int32_t *ids, int n, char *out, size_t outcap);

#endif
