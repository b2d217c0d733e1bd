/*
 * gen_corpus.c — writes the seed corpora of the file-format fuzz targets
 * with the project's own writers (ftb_model_save, ftb_safetensors_write)
 * where it has them:
 *
 *   safetensors/    the micro model (fuzz_models.h) as F32 (ftb_model_save),
 *                   BF16, F16, a mix with a 3-d and an empty tensor, an empty
 *                   table; the tied variant; quantized (int4, int4-asym, int8,
 *                   f16 with metadata, as ftb_model_save writes them)
 *   checkpoint/     micro checkpoints as fuzz_checkpoint.c reads them:
 *                   config, index and shards joined by its separator
 *   config/         the zoo's shapes as Hugging Face config.json files, and
 *                   the micro configs ftb_model_save wrote
 *   dataset_bin/    flat int32 token files
 *   dataset_jsonl/  JSON Lines with input_ids, labels, loss_mask
 *
 * Usage: gen_corpus OUT_DIR (tests/fuzz/make_corpus.sh calls it with
 * tests/fuzz/corpus and adds the profile, cli and report seeds).  Every file
 * it writes is one the parser accepts (the replay test checks that).
 */
#include "ftbench.h"

#include "fuzz_models.h"

#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FZ_CK_SEP "\n==ftb-part==\n" /* as fuzz_checkpoint.c */

static const char *out_root;
static char tmp_root[512];

static void die(const char *what, const char *why)
{
    fprintf(stderr, "gen_corpus: %s: %s\n", what, why);
    exit(1);
}

static void mkdir_or_die(const char *path)
{
    if (mkdir(path, 0755) != 0 && errno != EEXIST) die(path, strerror(errno));
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) die(path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) die(path, "cannot read");
    fclose(f);
    buf[n] = 0;
    *len = (size_t)n;
    return buf;
}

/* A growable byte string. */
typedef struct {
    uint8_t *p;
    size_t n, cap;
} bytes;

static void put(bytes *b, const void *data, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (!b->p) die("memory", "out of memory");
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
}

static void put_file(bytes *b, const char *path)
{
    size_t n;
    char *s = slurp(path, &n);
    put(b, s, n);
    free(s);
}

static void emit(const char *target, const char *name, const void *data, size_t n)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", out_root, target);
    mkdir_or_die(path);
    snprintf(path, sizeof path, "%s/%s/%s", out_root, target, name);
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f) != 0) die(path, "cannot write");
}

static void emit_str(const char *target, const char *name, const char *s) { emit(target, name, s, strlen(s)); }

static void emit_file(const char *target, const char *name, const char *src)
{
    size_t n;
    char *s = slurp(src, &n);
    emit(target, name, s, n);
    free(s);
}

static const char *tmp_path(const char *name)
{
    static char buf[4][1024];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmp_root, name);
    return buf[k];
}

static ftb_model *micro(int variant)
{
    ftb_config c;
    char err[FTB_ERR_LEN];
    fz_micro_config(&c, variant);
    ftb_model *m = ftb_model_create(&c, 1234 + (uint64_t)variant, err, sizeof err);
    if (!m) die("micro model", err);
    return m;
}

/* ---- safetensors in other dtypes (the project writes F32 only) ---------- */

static uint16_t to_bf16(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1)) >> 16); /* round to nearest even */
}

static uint16_t to_f16(float x)
{
    /* Weights of a seeded model are small normals: no inf/NaN handling needed. */
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    uint32_t sign = (u >> 16) & 0x8000u;
    int e = (int)((u >> 23) & 0xff) - 127 + 15;
    uint32_t mant = u & 0x7fffffu;
    if (e <= 0) {
        if (e < -10) return (uint16_t)sign;
        mant |= 0x800000u;
        return (uint16_t)(sign | (mant >> (14 - e)));
    }
    if (e >= 31) return (uint16_t)(sign | 0x7c00u);
    return (uint16_t)(sign | ((uint32_t)e << 10) | (mant >> 13));
}

/* dtypes: per tensor "F32", "BF16" or "F16"; extra tensors appended. */
typedef struct {
    const char *name, *dtype;
    int ndim;
    int64_t shape[3];
    const float *data; /* NULL: zeros */
} st_entry;

static void write_safetensors(bytes *out, const st_entry *e, int n)
{
    json_t *h = json_object();
    json_object_set_new(h, "__metadata__", json_pack("{s:s}", "format", "pt"));
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        int64_t numel = 1;
        json_t *shape = json_array();
        for (int d = 0; d < e[i].ndim; d++) {
            numel *= e[i].shape[d];
            json_array_append_new(shape, json_integer(e[i].shape[d]));
        }
        uint64_t size = (uint64_t)numel * (strcmp(e[i].dtype, "F32") ? 2 : 4);
        json_object_set_new(h, e[i].name,
                            json_pack("{s:s,s:o,s:[I,I]}", "dtype", e[i].dtype, "shape", shape, "data_offsets",
                                      (json_int_t)off, (json_int_t)(off + size)));
        off += size;
    }
    char *text = json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(h);
    size_t len = strlen(text), padded = (len + 7) & ~(size_t)7;
    uint8_t hl[8];
    for (int i = 0; i < 8; i++) hl[i] = (uint8_t)(((uint64_t)padded >> (8 * i)) & 0xff);
    put(out, hl, 8);
    put(out, text, len);
    for (size_t i = len; i < padded; i++) put(out, " ", 1);
    free(text);
    for (int i = 0; i < n; i++) {
        int64_t numel = 1;
        for (int d = 0; d < e[i].ndim; d++) numel *= e[i].shape[d];
        for (int64_t k = 0; k < numel; k++) {
            float x = e[i].data ? e[i].data[k] : 0.0f;
            if (!strcmp(e[i].dtype, "F32")) {
                put(out, &x, 4);
            } else {
                uint16_t v = !strcmp(e[i].dtype, "BF16") ? to_bf16(x) : to_f16(x);
                uint8_t le[2] = { (uint8_t)(v & 0xff), (uint8_t)(v >> 8) };
                put(out, le, 2);
            }
        }
    }
}

/* The model's tensors as st entries, dtype chosen per tensor by pick. */
static int model_entries(const ftb_model *m, st_entry *e, const char *(*pick)(int i))
{
    int n = 0;
    for (int i = 0; i < m->n_params; i++) {
        const ftb_tensor *t = m->params[i];
        if (t->numel == 0 || (m->cfg.tie_embeddings && !strcmp(t->name, "lm_head.weight"))) continue;
        e[n] = (st_entry){ t->name, pick(i), t->ndim, { t->shape[0], t->shape[1], 0 }, t->data };
        n++;
    }
    return n;
}

static const char *all_bf16(int i)
{
    (void)i;
    return "BF16";
}
static const char *all_f16(int i)
{
    (void)i;
    return "F16";
}
static const char *mixed(int i) { return i % 3 == 0 ? "F32" : i % 3 == 1 ? "BF16" : "F16"; }

/* ---- seeds ---------------------------------------------------------------- */

/* A micro model with its block linears stored in format (group g) and its
 * embedding (and untied LM head) in embed, saved by ftb_model_save: the
 * quantized safetensors layout of docs/QUANT.md. */
static void quantized_save(int variant, const char *format, int g, const char *embed, const char *dir)
{
    char err[FTB_ERR_LEN];
    ftb_model *m = micro(variant);
    if (ftb_model_quantize(m, format, g, err, sizeof err) != 0 ||
        (embed && ftb_model_quantize_embeddings(m, embed, g, err, sizeof err) != 0) ||
        ftb_model_save(m, tmp_path(dir), err, sizeof err) != 0)
        die(format, err);
    ftb_model_free(m);
}

static void safetensors_seeds(ftb_model *m0, ftb_model *m1)
{
    char err[FTB_ERR_LEN];
    if (ftb_model_save(m0, tmp_path("micro"), err, sizeof err) != 0) die("ftb_model_save", err);
    if (ftb_model_save(m1, tmp_path("micro-tied"), err, sizeof err) != 0) die("ftb_model_save", err);
    emit_file("safetensors", "micro-f32.safetensors", tmp_path("micro/model.safetensors"));
    emit_file("safetensors", "micro-tied-f32.safetensors", tmp_path("micro-tied/model.safetensors"));

    st_entry e[64];
    bytes b = { 0 };
    int n = model_entries(m0, e, all_bf16);
    write_safetensors(&b, e, n);
    emit("safetensors", "micro-bf16.safetensors", b.p, b.n);
    b.n = 0;
    n = model_entries(m0, e, all_f16);
    write_safetensors(&b, e, n);
    emit("safetensors", "micro-f16.safetensors", b.p, b.n);
    b.n = 0;
    n = model_entries(m0, e, mixed);
    e[n++] = (st_entry){ "extra.3d", "F16", 3, { 2, 3, 2 }, NULL };
    e[n++] = (st_entry){ "extra.empty", "F32", 2, { 0, 4, 0 }, NULL };
    e[n++] = (st_entry){ "extra.scalar", "BF16", 0, { 0, 0, 0 }, NULL };
    write_safetensors(&b, e, n);
    emit("safetensors", "micro-mixed-extra.safetensors", b.p, b.n);
    b.n = 0;
    write_safetensors(&b, e, 0);
    emit("safetensors", "empty-table.safetensors", b.p, b.n);
    free(b.p);

    quantized_save(0, "int4", 8, "int8", "q-int4");
    emit_file("safetensors", "micro-int4g8-embed-int8.safetensors", tmp_path("q-int4/model.safetensors"));
    quantized_save(0, "int4-asym", 4, "bf16", "q-int4-asym");
    emit_file("safetensors", "micro-int4asym-g4-embed-bf16.safetensors", tmp_path("q-int4-asym/model.safetensors"));
    quantized_save(0, "f16", 8, "int4", "q-f16");
    emit_file("safetensors", "micro-f16-embed-int4.safetensors", tmp_path("q-f16/model.safetensors"));
    quantized_save(1, "int8", 8, "int8", "q-int8-tied");
}

/* config SEP index SEP shard1 SEP shard2 ..., the shards holding the
 * model's tensors in turn. */
static void sharded_seed(const char *name, ftb_model *m, const char *config_path, int nshards)
{
    char err[FTB_ERR_LEN];
    ftb_tensor *list[8][64];
    int count[8] = { 0 };
    json_t *wm = json_object();
    int k = 0;
    for (int i = 0; i < m->n_params; i++) {
        ftb_tensor *t = m->params[i];
        if (t->numel == 0 || (m->cfg.tie_embeddings && !strcmp(t->name, "lm_head.weight"))) continue;
        int s = (k++ * nshards) / (m->n_params);
        if (s >= nshards) s = nshards - 1;
        list[s][count[s]++] = t;
        char file[64];
        snprintf(file, sizeof file, "model-%05d.safetensors", s + 1);
        json_object_set_new(wm, t->name, json_string(file));
    }
    json_t *index = json_pack("{s:{s:I},s:o}", "metadata", "total_size",
                              (json_int_t)(4 * ftb_config_param_count(&m->cfg)), "weight_map", wm);
    char *text = json_dumps(index, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(index);

    bytes b = { 0 };
    put_file(&b, config_path);
    put(&b, FZ_CK_SEP, strlen(FZ_CK_SEP));
    put(&b, text, strlen(text));
    free(text);
    for (int s = 0; s < nshards; s++) {
        const char *p = tmp_path("shard.safetensors");
        if (ftb_safetensors_write(p, list[s], count[s], err, sizeof err) != 0) die("ftb_safetensors_write", err);
        put(&b, FZ_CK_SEP, strlen(FZ_CK_SEP));
        put_file(&b, p);
    }
    emit("checkpoint", name, b.p, b.n);
    free(b.p);
}

static void checkpoint_seeds(ftb_model *m0, ftb_model *m1)
{
    /* safetensors_seeds saved both models already. */
    sharded_seed("micro-2-shards", m0, tmp_path("micro/config.json"), 2);
    sharded_seed("micro-tied-3-shards", m1, tmp_path("micro-tied/config.json"), 3);
    sharded_seed("micro-1-shard", m0, tmp_path("micro/config.json"), 1);
    bytes b = { 0 };
    put_file(&b, tmp_path("micro/config.json"));
    put(&b, FZ_CK_SEP FZ_CK_SEP, 2 * strlen(FZ_CK_SEP)); /* empty index: single file */
    put_file(&b, tmp_path("micro/model.safetensors"));
    emit("checkpoint", "micro-single-file", b.p, b.n);
    b.n = 0;
    put_file(&b, tmp_path("micro-tied/config.json"));
    put(&b, FZ_CK_SEP FZ_CK_SEP, 2 * strlen(FZ_CK_SEP));
    st_entry e[64];
    int n = model_entries(m1, e, mixed);
    write_safetensors(&b, e, n);
    emit("checkpoint", "micro-tied-single-mixed-dtypes", b.p, b.n);
    b.n = 0;
    put_file(&b, tmp_path("q-int8-tied/config.json"));
    put(&b, FZ_CK_SEP FZ_CK_SEP, 2 * strlen(FZ_CK_SEP));
    put_file(&b, tmp_path("q-int8-tied/model.safetensors"));
    emit("checkpoint", "micro-tied-int8-single-file", b.p, b.n);
    free(b.p);
}

static void config_seeds(void)
{
    emit_file("config", "micro.json", tmp_path("micro/config.json"));
    emit_file("config", "micro-tied.json", tmp_path("micro-tied/config.json"));
    for (int i = 0; i < ftb_zoo_count(); i++) {
        const ftb_config *c = ftb_zoo_at(i);
        int qwen = c->qkv_bias;
        json_t *o = json_object();
        json_object_set_new(o, "_name_or_path", json_string(c->name));
        json_object_set_new(o, "architectures", json_pack("[s]", qwen ? "Qwen2ForCausalLM" : "LlamaForCausalLM"));
        json_object_set_new(o, "attention_dropout", json_real(0.0));
        json_object_set_new(o, "bos_token_id", json_integer(1));
        json_object_set_new(o, "eos_token_id", i % 2 ? json_pack("[i,i]", 2, 3) : json_integer(2));
        json_object_set_new(o, "hidden_act", json_string("silu"));
        json_object_set_new(o, "hidden_size", json_integer(c->dim));
        json_object_set_new(o, "initializer_range", json_real(0.02));
        json_object_set_new(o, "intermediate_size", json_integer(c->ffn_dim));
        json_object_set_new(o, "max_position_embeddings", json_integer(c->max_seq));
        json_object_set_new(o, "model_type", json_string(qwen ? "qwen2" : "llama"));
        json_object_set_new(o, "num_attention_heads", json_integer(c->n_heads));
        json_object_set_new(o, "num_hidden_layers", json_integer(c->n_layers));
        /* Some leave the defaultable keys out or null, as HF files do. */
        if (i % 3 == 0)
            json_object_set_new(o, "num_key_value_heads", json_integer(c->n_kv_heads));
        else if (i % 3 == 1)
            json_object_set_new(o, "num_key_value_heads", json_null());
        if (c->head_dim * c->n_heads != c->dim || i % 2)
            json_object_set_new(o, "head_dim", json_integer(c->head_dim));
        else
            json_object_set_new(o, "head_dim", json_null());
        json_object_set_new(o, "rms_norm_eps", json_real(c->norm_eps));
        json_object_set_new(o, "rope_theta", json_real(c->rope_theta));
        if (!qwen && c->max_seq > 100000)
            json_object_set_new(o, "rope_scaling",
                                json_pack("{s:f,s:f,s:f,s:i,s:s}", "factor", 32.0, "high_freq_factor", 4.0,
                                          "low_freq_factor", 1.0, "original_max_position_embeddings", 8192, "rope_type",
                                          "llama3"));
        else
            json_object_set_new(o, "rope_scaling", json_null());
        json_object_set_new(o, "tie_word_embeddings", json_boolean(c->tie_embeddings));
        if (!qwen) {
            json_object_set_new(o, "attention_bias", json_boolean(0));
            json_object_set_new(o, "mlp_bias", json_boolean(0));
        } else {
            json_object_set_new(o, "use_sliding_window", json_boolean(0));
            json_object_set_new(o, "sliding_window", json_integer(c->max_seq));
        }
        json_object_set_new(o, "torch_dtype", json_string("bfloat16"));
        json_object_set_new(o, "transformers_version", json_string("4.45.0"));
        json_object_set_new(o, "use_cache", json_boolean(1));
        json_object_set_new(o, "vocab_size", json_integer(c->vocab_size));
        char *text = json_dumps(o, JSON_INDENT(2) | JSON_REAL_PRECISION(9));
        json_decref(o);
        char name[96];
        snprintf(name, sizeof name, "%s.json", c->name);
        emit_str("config", name, text);
        free(text);
    }
}

static void put_le32(bytes *b, int32_t v)
{
    uint8_t le[4] = { (uint8_t)(v & 0xff), (uint8_t)((v >> 8) & 0xff), (uint8_t)((v >> 16) & 0xff),
                      (uint8_t)((v >> 24) & 0xff) };
    put(b, le, 4);
}

static void dataset_seeds(void)
{
    bytes b = { 0 };
    for (int i = 0; i < 100; i++) put_le32(&b, i);
    emit("dataset_bin", "ascending-100.bin", b.p, b.n);
    b.n = 0;
    uint64_t s = 42;
    for (int i = 0; i < 300; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        put_le32(&b, (int32_t)((s >> 33) % 50000));
    }
    emit("dataset_bin", "random-300.bin", b.p, b.n);
    b.n = 0;
    put_le32(&b, 7);
    put_le32(&b, 49999);
    emit("dataset_bin", "two-tokens.bin", b.p, b.n);
    b.n = 0;
    for (int i = 0; i < 17; i++) put_le32(&b, 0);
    emit("dataset_bin", "zeros-17.bin", b.p, b.n);
    free(b.p);

    emit_str("dataset_jsonl", "input-ids.jsonl",
             "{\"input_ids\": [1, 2, 3, 4, 5, 6, 7, 8]}\n"
             "{\"input_ids\": [101, 2023, 2003, 1037, 3231, 102]}\n"
             "{\"input_ids\": [49999]}\n"
             "{\"input_ids\": [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]}\n");
    emit_str("dataset_jsonl", "labels.jsonl",
             "{\"input_ids\": [10, 11, 12, 13, 14], \"labels\": [-100, -100, 12, 13, 14]}\n"
             "{\"input_ids\": [20, 21], \"labels\": [20, -100]}\n"
             "{\"labels\": [1, 2, 3], \"input_ids\": [1, 2, 3], \"source\": \"x\"}\n");
    emit_str("dataset_jsonl", "loss-mask.jsonl",
             "{\"input_ids\": [5, 6, 7, 8], \"loss_mask\": [0, 0, 1, 1]}\n"
             "{\"input_ids\": [9, 10, 11], \"loss_mask\": [false, true, true]}\n");
    emit_str("dataset_jsonl", "blank-lines-crlf.jsonl",
             "\n{\"input_ids\": [3, 1, 4, 1, 5, 9, 2, 6]}\r\n\r\n  {\"input_ids\": [2, 7, 1, 8]}  \n\n");
    bytes l = { 0 };
    put(&l, "{\"input_ids\": [", 15);
    for (int i = 0; i < 150; i++) {
        char num[16];
        snprintf(num, sizeof num, "%s%d", i ? ", " : "", (i * 7919) % 50000);
        put(&l, num, strlen(num));
    }
    put(&l, "]}\n", 3);
    emit("dataset_jsonl", "long-example.jsonl", l.p, l.n);
    free(l.p);
}

static int rm_tree(const char *path)
{
    char cmd[1100];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    return system(cmd);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gen_corpus OUT_DIR\n");
        return 2;
    }
    out_root = argv[1];
    mkdir_or_die(out_root);
    const char *t = getenv("TMPDIR");
    snprintf(tmp_root, sizeof tmp_root, "%s/ftb-gen-corpus.XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(tmp_root)) die(tmp_root, strerror(errno));
    ftb_model *m0 = micro(0), *m1 = micro(1);
    safetensors_seeds(m0, m1);
    checkpoint_seeds(m0, m1);
    config_seeds();
    dataset_seeds();
    ftb_model_free(m0);
    ftb_model_free(m1);
    rm_tree(tmp_root);
    return 0;
}
