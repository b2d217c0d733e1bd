/* offload.c (kit) — what mebp and mesp share around their block
 * checkpoints: the options offload_dir and residency, and the lazy block
 * residency of a base mapped from a file (MeBP's scheme, which MeSP keeps). */
#include "ftbench_kit.h"

#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int ftb_kit_offload_options(const ftb_options *o, const char **dir, int *lazy, char *err, size_t errlen)
{
    *dir = ftb_opt_str(o, "offload_dir", "");
    const char *residency = ftb_opt_str(o, "residency", "lazy");
    if (strcmp(residency, "lazy") && strcmp(residency, "as-given")) {
        snprintf(err, errlen, "option residency: '%s' is not lazy or as-given", residency);
        return -1;
    }
    *lazy = !strcmp(residency, "lazy");
    struct stat sb;
    if ((*dir)[0] && (stat(*dir, &sb) != 0 || !S_ISDIR(sb.st_mode) || access(*dir, W_OK | X_OK) != 0)) {
        snprintf(err, errlen, "option offload_dir: '%s' is not a writable directory", *dir);
        return -1;
    }
    return 0;
}

ftb_residency ftb_kit_enter_lazy_residency(ftb_model *m, int lazy)
{
    const ftb_residency before = ftb_model_residency(m);
    if (lazy && ftb_model_mapped_bytes(m) > 0) ftb_model_set_residency(m, FTB_RESIDENT_LAZY_BLOCK);
    return before;
}
