/*
 * bpe.c — the byte-level BPE of a Hugging Face tokenizer.json (GPT-2,
 * Qwen2/3, Llama 3, SmolLM2 ...), as the `tokenizers` library runs it:
 *
 *   1. added (special) tokens are split out first, matched verbatim;
 *   2. the pre-tokenizer splits the rest: a Split with a Regex pattern
 *      (behaviour Isolated: matches and the gaps between them are pieces),
 *      and/or ByteLevel with use_regex (the GPT-2 pattern), add_prefix_space;
 *   3. each piece's bytes are mapped to printable characters (GPT-2's
 *      bytes_to_unicode), one symbol per byte;
 *   4. the adjacent pair with the lowest merge rank is merged, again and
 *      again, until no pair has a rank (with ignore_merges, a piece that is
 *      itself in the vocabulary is taken whole first).
 * Regexes run on PCRE2 in UTF + UCP mode (\p{L}, \p{N}, Unicode \s).  The
 * normalizer is not applied: NFC leaves ASCII and already-composed text as
 * it is, which is what this harness feeds it; any other normalizer is
 * refused at load.  tests/fixtures/bpe/ holds a reference tokenization made
 * by an independent implementation (transformers.js) and its generator.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer.h"
#include "input_file.h"

#include <jansson.h>
#include <pcre2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const gpt2_pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* Open-addressing hash of byte strings (vocabulary) and of id pairs (merges). */
typedef struct {
    char **keys;
    int32_t *vals;
    size_t cap;
} str_map;

typedef struct {
    uint64_t *keys; /* (a << 32 | b) + 1, 0 = empty */
    int32_t *rank, *merged;
    size_t cap;
} pair_map;

struct ftb_bpe {
    str_map vocab;
    char **id_to_str; /* [n_ids]: the token's characters (UTF-8) */
    int n_ids;
    pair_map merges;
    int32_t byte_id[256]; /* the id of each byte's single-character token */
    char byte_char[256][4];
    int ignore_merges, add_prefix_space;
    pcre2_code *split; /* NULL: no regex split */
    char **added;      /* added tokens' content, in file order */
    int32_t *added_id;
    int n_added;
    int *is_added; /* [n_ids] */
    /* Finding the longest added token at a position without trying them
     * all: a hash of their contents (to the first token of that content),
     * and for each first byte the distinct lengths of the tokens that start
     * with it, longest first (added_lens[added_len_at[c] ..
     * added_len_at[c + 1]]).  Loading is O(n log n), matching at a position
     * costs one lookup per distinct length. */
    str_map added_index;
    size_t *added_lens;
    size_t added_len_at[257];
};

static int errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    /* One line, whatever the input: jansson quotes the text near an error,
     * which may hold a newline or other control characters. */
    for (char *c = err; *c; c++)
        if ((unsigned char)*c < 0x20) *c = '?';
    return -1;
}

static uint64_t fnv(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

static int str_map_init(str_map *m, size_t n)
{
    m->cap = 16;
    while (m->cap < 2 * n + 16) m->cap *= 2;
    m->keys = calloc(m->cap, sizeof *m->keys);
    m->vals = calloc(m->cap, sizeof *m->vals);
    return m->keys && m->vals ? 0 : -1;
}

static int32_t str_map_get(const str_map *m, const char *s, size_t n)
{
    for (size_t i = fnv(s, n) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (!m->keys[i]) return -1;
        if (strlen(m->keys[i]) == n && !memcmp(m->keys[i], s, n)) return m->vals[i];
    }
}

static void str_map_put(str_map *m, char *key, int32_t v)
{
    size_t n = strlen(key);
    for (size_t i = fnv(key, n) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (!m->keys[i]) {
            m->keys[i] = key;
            m->vals[i] = v;
            return;
        }
        if (!strcmp(m->keys[i], key)) {
            m->vals[i] = v;
            return;
        }
    }
}

static uint64_t pair_key(int32_t a, int32_t b) { return ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1; }

static size_t pair_slot(const pair_map *m, uint64_t k)
{
    uint64_t h = k * 0x9E3779B97F4A7C15ULL;
    size_t i = (size_t)(h >> 20) & (m->cap - 1);
    while (m->keys[i] && m->keys[i] != k) i = (i + 1) & (m->cap - 1);
    return i;
}

/* GPT-2's bytes_to_unicode: printable bytes map to themselves, the others
 * to U+0100 + n in byte order. */
static void byte_chars(char out[256][4])
{
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        unsigned cp = printable ? (unsigned)b : 256u + (unsigned)n++;
        memset(out[b], 0, 4);
        if (cp < 0x80) {
            out[b][0] = (char)cp;
        } else {
            out[b][0] = (char)(0xC0 | (cp >> 6));
            out[b][1] = (char)(0x80 | (cp & 0x3F));
        }
    }
}

void ftb_bpe_free(ftb_bpe *b)
{
    if (!b) return;
    for (int i = 0; i < b->n_ids; i++) free(b->id_to_str[i]);
    free(b->id_to_str);
    free(b->vocab.keys); /* the keys are id_to_str's strings */
    free(b->vocab.vals);
    free(b->merges.keys);
    free(b->merges.rank);
    free(b->merges.merged);
    if (b->split) pcre2_code_free(b->split);
    for (int i = 0; i < b->n_added; i++) free(b->added[i]);
    free(b->added_index.keys); /* the keys are b->added's strings */
    free(b->added_index.vals);
    free(b->added_lens);
    free(b->added);
    free(b->added_id);
    free(b->is_added);
    free(b);
}

int ftb_bpe_vocab(const ftb_bpe *b) { return b->n_ids; }

static int compile(ftb_bpe *b, const char *pattern, const char *path, char *err, size_t errlen)
{
    int ec;
    PCRE2_SIZE off;
    b->split = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &ec, &off, NULL);
    if (!b->split) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return errf(err, errlen, "tokenizer %s: pre-tokenizer regex does not compile at %zu: %s", path, (size_t)off,
                    (const char *)msg);
    }
    return 0;
}

/* One pre-tokenizer of the pipeline (a Sequence's member or the whole). */
static int pre_tokenizer(ftb_bpe *b, json_t *p, const char *path, char *err, size_t errlen)
{
    const char *type = json_string_value(json_object_get(p, "type"));
    if (!type) return errf(err, errlen, "tokenizer %s: pre_tokenizer without a \"type\"", path);
    if (!strcmp(type, "Sequence")) {
        json_t *list = json_object_get(p, "pretokenizers");
        size_t i;
        json_t *q;
        if (!json_is_array(list))
            return errf(err, errlen, "tokenizer %s: Sequence pre_tokenizer without \"pretokenizers\"", path);
        json_array_foreach(list, i, q) if (pre_tokenizer(b, q, path, err, errlen)) return -1;
        return 0;
    }
    if (!strcmp(type, "ByteLevel")) {
        b->add_prefix_space = json_is_true(json_object_get(p, "add_prefix_space"));
        json_t *ur = json_object_get(p, "use_regex");
        if ((!ur || json_is_true(ur)) && !b->split) return compile(b, gpt2_pattern, path, err, errlen);
        return 0;
    }
    if (!strcmp(type, "Split")) {
        const char *re = json_string_value(json_object_get(json_object_get(p, "pattern"), "Regex"));
        const char *beh = json_string_value(json_object_get(p, "behavior"));
        if (!re) return errf(err, errlen, "tokenizer %s: Split pre_tokenizer without a Regex pattern", path);
        if (beh && strcmp(beh, "Isolated"))
            return errf(err, errlen, "tokenizer %s: Split behavior '%s' is not supported (Isolated is)", path, beh);
        if (json_is_true(json_object_get(p, "invert")))
            return errf(err, errlen, "tokenizer %s: an inverted Split is not supported", path);
        if (b->split)
            return errf(err, errlen, "tokenizer %s: more than one regex pre-tokenizer is not supported", path);
        return compile(b, re, path, err, errlen);
    }
    if (!strcmp(type, "Digits") || !strcmp(type, "Punctuation") || !strcmp(type, "Whitespace") ||
        !strcmp(type, "Metaspace"))
        return errf(err, errlen, "tokenizer %s: pre_tokenizer %s is not supported (byte-level BPE only)", path, type);
    return errf(err, errlen, "tokenizer %s: unknown pre_tokenizer type '%s'", path, type);
}

/* (first byte, length) of an added token, to sort. */
typedef struct {
    unsigned char first;
    size_t len;
} added_shape;

static int added_shape_order(const void *pa, const void *pb)
{
    const added_shape *a = pa, *b = pb;
    if (a->first != b->first) return a->first < b->first ? -1 : 1;
    return a->len > b->len ? -1 : a->len < b->len; /* longest first */
}

/* Builds added_index and the per-first-byte lengths; -1 on out of memory. */
static int index_added(ftb_bpe *b)
{
    if (str_map_init(&b->added_index, (size_t)b->n_added)) return -1;
    added_shape *shapes = malloc(((size_t)b->n_added + 1) * sizeof *shapes);
    b->added_lens = malloc(((size_t)b->n_added + 1) * sizeof *b->added_lens);
    if (!shapes || !b->added_lens) {
        free(shapes);
        return -1;
    }
    for (int a = 0; a < b->n_added; a++) {
        size_t n = strlen(b->added[a]);
        /* The same content twice: the first keeps it, as the earlier
         * longest-first scan in file order did. */
        if (str_map_get(&b->added_index, b->added[a], n) < 0) str_map_put(&b->added_index, b->added[a], a);
        shapes[a] = (added_shape){ (unsigned char)b->added[a][0], n };
    }
    qsort(shapes, (size_t)b->n_added, sizeof *shapes, added_shape_order);
    size_t k = 0;
    int s = 0;
    for (int c = 0; c < 256; c++) {
        b->added_len_at[c] = k;
        for (; s < b->n_added && shapes[s].first == c; s++)
            if (k == b->added_len_at[c] || b->added_lens[k - 1] != shapes[s].len) b->added_lens[k++] = shapes[s].len;
    }
    b->added_len_at[256] = k;
    free(shapes);
    return 0;
}

/* The added token that starts text[0..len) and is longest, or -1. */
static int added_at(const ftb_bpe *b, const char *text, size_t len)
{
    unsigned char c = (unsigned char)text[0];
    for (size_t k = b->added_len_at[c]; k < b->added_len_at[c + 1]; k++) {
        size_t n = b->added_lens[k];
        if (n > len) continue;
        int32_t a = str_map_get(&b->added_index, text, n);
        if (a >= 0) return a;
    }
    return -1;
}

ftb_bpe *ftb_bpe_load(const char *path, char *err, size_t errlen)
{
    /* Real tokenizer.json files are 2-20 MB (Llama 3's 9 MB, Qwen's 7 MB);
     * 512 MiB leaves room for any real one and refuses an endless input. */
    char why[512];
    size_t text_len = 0;
    char *text = ftb_input_read(path, "tokenizer.json", (size_t)512 << 20, &text_len, why, sizeof why);
    if (!text) {
        errf(err, errlen, "tokenizer %s", why);
        return NULL;
    }
    json_error_t je;
    json_t *root = json_loadb(text, text_len, JSON_REJECT_DUPLICATES, &je);
    free(text);
    if (!root) {
        if (je.line <= 0)
            errf(err, errlen, "tokenizer %s: %s", path, je.text);
        else
            errf(err, errlen, "tokenizer %s:%d: not valid JSON: %s", path, je.line, je.text);
        return NULL;
    }
    ftb_bpe *b = calloc(1, sizeof *b);
    json_t *model = json_object_get(root, "model");
    json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
    const char *mtype = json_string_value(json_object_get(model, "type"));
    int rc = 0;
    if (!b)
        rc = errf(err, errlen, "tokenizer %s: out of memory", path);
    else if (!json_is_object(model))
        rc = errf(err, errlen, "tokenizer %s: no \"model\" object (is this a Hugging Face tokenizer.json?)", path);
    else if (mtype && strcmp(mtype, "BPE"))
        rc = errf(err, errlen, "tokenizer %s: model type '%s' is not supported (byte-level BPE only)", path, mtype);
    else if (!json_is_object(vocab) || !json_is_array(merges))
        rc = errf(err, errlen, "tokenizer %s: model.vocab must be an object and model.merges an array", path);
    json_t *norm = json_object_get(root, "normalizer");
    const char *ntype = json_string_value(json_object_get(norm, "type"));
    if (rc == 0 && norm && !json_is_null(norm) && (!ntype || strcmp(ntype, "NFC")))
        rc = errf(err, errlen, "tokenizer %s: normalizer '%s' is not supported (none or NFC)", path,
                  ntype ? ntype : "?");
    json_t *added = json_object_get(root, "added_tokens");
    /* Ids: the vocabulary's and the added tokens'. */
    int max_id = -1;
    const char *key;
    json_t *v;
    if (rc == 0) {
        json_object_foreach(vocab, key, v)
        {
            if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= (1 << 24)) {
                rc = errf(err, errlen, "tokenizer %s: vocab entry \"%.40s\" has no valid id", path, key);
                break;
            }
            if (json_integer_value(v) > max_id) max_id = (int)json_integer_value(v);
        }
        size_t i;
        json_t *a;
        json_array_foreach(added, i, a)
        {
            json_t *id = json_object_get(a, "id");
            if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= (1 << 24) ||
                !json_is_string(json_object_get(a, "content"))) {
                rc = errf(err, errlen, "tokenizer %s: added_tokens[%zu] needs an id and a content", path, i);
                break;
            }
            if (json_integer_value(id) > max_id) max_id = (int)json_integer_value(id);
        }
        if (rc == 0 && max_id < 0) rc = errf(err, errlen, "tokenizer %s: empty vocabulary", path);
    }
    if (rc == 0) {
        b->n_ids = max_id + 1;
        b->id_to_str = calloc((size_t)b->n_ids, sizeof *b->id_to_str);
        b->is_added = calloc((size_t)b->n_ids, sizeof *b->is_added);
        if (!b->id_to_str || !b->is_added || str_map_init(&b->vocab, json_object_size(vocab)))
            rc = errf(err, errlen, "tokenizer %s: out of memory", path);
    }
    if (rc == 0) {
        json_object_foreach(vocab, key, v)
        {
            int id = (int)json_integer_value(v);
            if (b->id_to_str[id]) {
                rc = errf(err, errlen, "tokenizer %s: id %d is given to two vocab entries", path, id);
                break;
            }
            b->id_to_str[id] = strdup(key);
            str_map_put(&b->vocab, b->id_to_str[id], id);
        }
        size_t i;
        json_t *a;
        b->added = calloc(json_array_size(added) + 1, sizeof *b->added);
        b->added_id = calloc(json_array_size(added) + 1, sizeof *b->added_id);
        json_array_foreach(added, i, a)
        {
            if (rc) break;
            int id = (int)json_integer_value(json_object_get(a, "id"));
            const char *content = json_string_value(json_object_get(a, "content"));
            if (!*content) continue;
            b->added[b->n_added] = strdup(content);
            b->added_id[b->n_added++] = id;
            b->is_added[id] = 1;
            if (!b->id_to_str[id]) b->id_to_str[id] = strdup(content);
        }
        if (rc == 0 && index_added(b)) rc = errf(err, errlen, "tokenizer %s: out of memory", path);
    }
    if (rc == 0) {
        byte_chars(b->byte_char);
        for (int c = 0; c < 256 && rc == 0; c++) {
            b->byte_id[c] = str_map_get(&b->vocab, b->byte_char[c], strlen(b->byte_char[c]));
            if (b->byte_id[c] < 0)
                rc = errf(err, errlen,
                          "tokenizer %s: byte 0x%02x has no token: not a byte-level BPE (every byte must be in the "
                          "vocabulary)",
                          path, c);
        }
    }
    /* Merges: "a b" strings or ["a", "b"] pairs, in rank order. */
    if (rc == 0) {
        size_t n = json_array_size(merges);
        b->merges.cap = 16;
        while (b->merges.cap < 2 * n + 16) b->merges.cap *= 2;
        b->merges.keys = calloc(b->merges.cap, sizeof *b->merges.keys);
        b->merges.rank = calloc(b->merges.cap, sizeof *b->merges.rank);
        b->merges.merged = calloc(b->merges.cap, sizeof *b->merges.merged);
        if (!b->merges.keys || !b->merges.rank || !b->merges.merged)
            rc = errf(err, errlen, "tokenizer %s: out of memory", path);
        for (size_t r = 0; rc == 0 && r < n; r++) {
            json_t *m = json_array_get(merges, r);
            char lbuf[1024], rbuf[1024];
            if (json_is_string(m)) {
                const char *s = json_string_value(m), *sp = strchr(s, ' ');
                if (!sp || strchr(sp + 1, ' ') || sp == s || !sp[1] || (size_t)(sp - s) >= sizeof lbuf ||
                    strlen(sp + 1) >= sizeof rbuf) {
                    rc = errf(err, errlen, "tokenizer %s: merges[%zu] \"%.60s\" is not \"left right\"", path, r, s);
                    break;
                }
                memcpy(lbuf, s, (size_t)(sp - s));
                lbuf[sp - s] = 0;
                snprintf(rbuf, sizeof rbuf, "%s", sp + 1);
            } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
                       json_is_string(json_array_get(m, 1))) {
                snprintf(lbuf, sizeof lbuf, "%s", json_string_value(json_array_get(m, 0)));
                snprintf(rbuf, sizeof rbuf, "%s", json_string_value(json_array_get(m, 1)));
            } else {
                rc = errf(err, errlen, "tokenizer %s: merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]", path, r);
                break;
            }
            int32_t a = str_map_get(&b->vocab, lbuf, strlen(lbuf)), c = str_map_get(&b->vocab, rbuf, strlen(rbuf));
            char both[2048];
            snprintf(both, sizeof both, "%s%s", lbuf, rbuf);
            int32_t ab = str_map_get(&b->vocab, both, strlen(both));
            if (a < 0 || c < 0 || ab < 0) {
                rc = errf(err, errlen,
                          "tokenizer %s: merges[%zu] (\"%.40s\" + \"%.40s\") uses or makes a token not in "
                          "the vocabulary",
                          path, r, lbuf, rbuf);
                break;
            }
            uint64_t k = pair_key(a, c);
            size_t slot = pair_slot(&b->merges, k);
            if (!b->merges.keys[slot]) { /* a repeated pair keeps its first (best) rank */
                b->merges.keys[slot] = k;
                b->merges.rank[slot] = (int32_t)r;
                b->merges.merged[slot] = ab;
            }
        }
    }
    if (rc == 0) {
        b->ignore_merges = json_is_true(json_object_get(model, "ignore_merges"));
        json_t *pt = json_object_get(root, "pre_tokenizer");
        if (!pt || json_is_null(pt))
            rc = errf(err, errlen, "tokenizer %s: no pre_tokenizer: not a byte-level BPE", path);
        else
            rc = pre_tokenizer(b, pt, path, err, errlen);
    }
    json_decref(root);
    if (rc) {
        ftb_bpe_free(b);
        return NULL;
    }
    return b;
}

static int push(int32_t **ids, int *n, int *cap, int32_t v)
{
    if (*n == *cap) {
        int c = *cap ? 2 * *cap : 64;
        int32_t *g = realloc(*ids, (size_t)c * sizeof *g);
        if (!g) return -1;
        *ids = g;
        *cap = c;
    }
    (*ids)[(*n)++] = v;
    return 0;
}

/* BPE of one pre-tokenized piece. */
static int encode_piece(const ftb_bpe *b, const char *s, size_t len, int32_t **ids, int *n, int *cap)
{
    if (!len) return 0;
    char *mapped = malloc(len * 2 + 1);
    int32_t *sym = malloc(len * sizeof *sym);
    if (!mapped || !sym) {
        free(mapped);
        free(sym);
        return -1;
    }
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        const char *c = b->byte_char[(unsigned char)s[i]];
        for (size_t j = 0; c[j]; j++) mapped[k++] = c[j];
        sym[i] = b->byte_id[(unsigned char)s[i]];
    }
    int32_t whole = b->ignore_merges ? str_map_get(&b->vocab, mapped, k) : -1;
    int rc = 0;
    if (whole >= 0) {
        rc = push(ids, n, cap, whole);
    } else {
        size_t ns = len;
        for (;;) {
            int32_t best = INT32_MAX, best_id = -1;
            for (size_t i = 0; i + 1 < ns; i++) {
                size_t slot = pair_slot(&b->merges, pair_key(sym[i], sym[i + 1]));
                if (b->merges.keys[slot] && b->merges.rank[slot] < best) {
                    best = b->merges.rank[slot];
                    best_id = b->merges.merged[slot];
                }
            }
            if (best_id < 0) break;
            /* Merge every occurrence of that pair, left to right. */
            size_t w = 0;
            for (size_t i = 0; i < ns;) {
                if (i + 1 < ns) {
                    size_t slot = pair_slot(&b->merges, pair_key(sym[i], sym[i + 1]));
                    if (b->merges.keys[slot] && b->merges.rank[slot] == best) {
                        sym[w++] = best_id;
                        i += 2;
                        continue;
                    }
                }
                sym[w++] = sym[i++];
            }
            ns = w;
        }
        for (size_t i = 0; i < ns && rc == 0; i++) rc = push(ids, n, cap, sym[i]);
    }
    free(mapped);
    free(sym);
    return rc;
}

/* Pre-tokenize a span without added tokens, then BPE each piece. */
static int encode_span(const ftb_bpe *b, const char *s, size_t len, int32_t **ids, int *n, int *cap, char *err,
                       size_t errlen)
{
    if (!b->split) return encode_piece(b, s, len, ids, n, cap) ? errf(err, errlen, "tokenizer: out of memory") : 0;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(b->split, NULL);
    if (!md) return errf(err, errlen, "tokenizer: out of memory");
    size_t pos = 0, gap = 0;
    int rc = 0;
    while (pos < len && rc == 0) {
        int r = pcre2_match(b->split, (PCRE2_SPTR)s, len, pos, 0, md, NULL);
        if (r == PCRE2_ERROR_NOMATCH) break;
        if (r < 0) {
            PCRE2_UCHAR msg[128];
            pcre2_get_error_message(r, msg, sizeof msg);
            rc = errf(err, errlen, "tokenizer: text is not valid UTF-8 or the regex failed: %s", (const char *)msg);
            break;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (me == ms) { /* empty match: step one character */
            pos = ms + 1;
            while (pos < len && ((unsigned char)s[pos] & 0xC0) == 0x80) pos++;
            continue;
        }
        if (ms > gap && encode_piece(b, s + gap, ms - gap, ids, n, cap))
            rc = errf(err, errlen, "tokenizer: out of memory");
        if (rc == 0 && encode_piece(b, s + ms, me - ms, ids, n, cap))
            rc = errf(err, errlen, "tokenizer: out of memory");
        pos = gap = me;
    }
    if (rc == 0 && gap < len && encode_piece(b, s + gap, len - gap, ids, n, cap))
        rc = errf(err, errlen, "tokenizer: out of memory");
    pcre2_match_data_free(md);
    return rc;
}

int ftb_bpe_encode(const ftb_bpe *b, const char *text, size_t len, int32_t **ids, int *n, int *cap, char *err,
                   size_t errlen)
{
    char *buf = NULL;
    if (b->add_prefix_space && len && text[0] != ' ') {
        buf = malloc(len + 2);
        if (!buf) return errf(err, errlen, "tokenizer: out of memory");
        buf[0] = ' ';
        memcpy(buf + 1, text, len);
        text = buf;
        len++;
    }
    size_t start = 0;
    int rc = 0;
    for (size_t i = 0; i < len && rc == 0;) {
        int hit = b->n_added ? added_at(b, text + i, len - i) : -1;
        if (hit < 0) {
            i++;
            continue;
        }
        if (i > start) rc = encode_span(b, text + start, i - start, ids, n, cap, err, errlen);
        if (rc == 0 && push(ids, n, cap, b->added_id[hit])) rc = errf(err, errlen, "tokenizer: out of memory");
        i += strlen(b->added[hit]);
        start = i;
    }
    if (rc == 0 && start < len) rc = encode_span(b, text + start, len - start, ids, n, cap, err, errlen);
    free(buf);
    return rc;
}

size_t ftb_bpe_decode(const ftb_bpe *b, const int32_t *ids, int n, char *out, size_t outcap)
{
    size_t k = 0;
#define EMIT(ch)                                 \
    do {                                         \
        if (k + 1 < outcap) out[k] = (char)(ch); \
        k++;                                     \
    } while (0)
    for (int i = 0; i < n; i++) {
        const char *s = ids[i] >= 0 && ids[i] < b->n_ids ? b->id_to_str[ids[i]] : NULL;
        if (!s) {
            EMIT(0xEF);
            EMIT(0xBF);
            EMIT(0xBD);
            continue;
        }
        if (b->is_added[ids[i]]) {
            for (; *s; s++) EMIT(*s);
            continue;
        }
        /* Characters back to bytes (the inverse of byte_chars). */
        while (*s) {
            int byte = -1, len = ((unsigned char)*s & 0xE0) == 0xC0 ? 2 : 1;
            for (int c = 0; c < 256; c++)
                if (!strncmp(b->byte_char[c], s, (size_t)len) && (int)strlen(b->byte_char[c]) == len) {
                    byte = c;
                    break;
                }
            if (byte < 0) {
                EMIT(0xEF);
                EMIT(0xBF);
                EMIT(0xBD);
                s++;
                while (((unsigned char)*s & 0xC0) == 0x80) s++;
                continue;
            }
            EMIT(byte);
            s += len;
        }
    }
#undef EMIT
    if (outcap) out[k < outcap ? k : outcap - 1] = 0;
    return k;
}
