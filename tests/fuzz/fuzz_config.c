/*
 * fuzz_config.c — config.json (models/checkpoint_json.c, ftb_config_load_json).
 *
 * Input: the text of a config.json.  What is accepted must pass
 * ftb_config_validate (the loader promises a checked config); what is
 * refused must say why in one line.
 *
 * Seeds: tests/fuzz/corpus/config/ (gen_corpus.c: the zoo's shapes written
 * as Hugging Face does, with the keys it writes and some it leaves null).
 */
#include "ftbench.h"

#include "fuzz_common.h"

int fuzz_config_one(const uint8_t *data, size_t size)
{
    fz_scratch();
    char path[1024], err[FTB_ERR_LEN], why[FTB_ERR_LEN];
    fz_write("config.json", data, size);
    fz_path(path, sizeof path, "config.json");
    ftb_config cfg;
    memset(&cfg, 0x5a, sizeof cfg);
    err[0] = 0;
    if (ftb_config_load_json(path, &cfg, err, sizeof err) != 0) {
        fz_check_error(err, sizeof err, 1);
        return 0;
    }
    FZ_CHECK(memchr(cfg.name, 0, sizeof cfg.name) != NULL, "name not terminated");
    why[0] = 0;
    FZ_CHECK(ftb_config_validate(&cfg, why, sizeof why) == 0, "accepted an invalid config: %s", why);
    FZ_CHECK(ftb_config_param_count(&cfg) > 0, "parameter count %lld", (long long)ftb_config_param_count(&cfg));
    return 1;
}

FTB_FUZZ_ENTRY(fuzz_config_one)
