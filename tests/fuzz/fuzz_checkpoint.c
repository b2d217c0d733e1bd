/*
 * fuzz_checkpoint.c — a whole Hugging Face checkpoint directory
 * (models/checkpoint_load.c, checkpoint_source.c, checkpoint_json.c: config.json,
 * model.safetensors.index.json, shards)
 * through ftb_model_load.
 *
 * Input: parts separated by FZ_CK_SEP:
 *   part 0      config.json
 *   part 1      model.safetensors.index.json (when empty: no index, and
 *               part 2 is written as model.safetensors instead)
 *   parts 2..5  the shards model-00001.safetensors ... model-00004.safetensors
 * Each part becomes a file of a fresh directory, which is loaded mapped and
 * copied; what loads must have every tensor its config implies.
 *
 * Seeds: tests/fuzz/corpus/checkpoint/ (gen_corpus.c: the micro model
 * sharded in two and in one file, tied and untied).
 */
#include "ftbench.h"

#include "fuzz_common.h"
#include "fuzz_models.h"

#define FZ_CK_SEP       "\n==ftb-part==\n"
#define FZ_CK_MAX_PARTS 6

int fuzz_checkpoint_one(const uint8_t *data, size_t size)
{
    const char *dir = fz_scratch();
    fz_part parts[FZ_CK_MAX_PARTS];
    int n = fz_split(data, size, FZ_CK_SEP, parts, FZ_CK_MAX_PARTS);
    fz_write("config.json", parts[0].p, parts[0].n);
    if (n > 1 && parts[1].n > 0) {
        fz_write("model.safetensors.index.json", parts[1].p, parts[1].n);
        for (int i = 2; i < n; i++) {
            char name[64];
            snprintf(name, sizeof name, "model-%05d.safetensors", i - 1);
            fz_write(name, parts[i].p, parts[i].n);
        }
    } else if (n > 2) {
        fz_write("model.safetensors", parts[2].p, parts[2].n);
    }

    char err[FTB_ERR_LEN];
    int loaded = 0;
    for (int map = 1; map >= 0; map--) {
        err[0] = 0;
        ftb_model *m = ftb_model_load(dir, map, err, sizeof err);
        if (m) {
            FZ_CHECK(m->n_params > 0, "a model without parameters");
            FZ_CHECK(ftb_config_validate(&m->cfg, err, sizeof err) == 0, "loaded an invalid config: %s", err);
            fz_touch_model(m);
            FZ_CHECK(ftb_model_find(m, "model.embed_tokens.weight") != NULL, "no embedding");
            ftb_model_free(m);
            loaded++;
        } else {
            fz_check_error(err, sizeof err, 1);
        }
    }
    FZ_CHECK(loaded == 0 || loaded == 2, "loaded with map=1 but not map=0, or the reverse: %s", err);
    return loaded == 2;
}

FTB_FUZZ_ENTRY(fuzz_checkpoint_one)
