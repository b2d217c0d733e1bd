/* options.c — typed access to a method's key=value options. */
#include "ftbench.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *ftb_opt_str(const ftb_options *o, const char *key, const char *def)
{
    if (!o) return def;
    for (int i = o->n - 1; i >= 0; i--) /* the last one given wins */
        if (strcmp(o->keys[i], key) == 0) return o->values[i];
    return def;
}

long ftb_opt_int(const ftb_options *o, const char *key, long def, char *err, size_t errlen)
{
    const char *s = ftb_opt_str(o, key, NULL);
    if (!s) return def;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end) {
        snprintf(err, errlen, "option %s: '%s' is not an integer", key, s);
        return def;
    }
    return v;
}

/* Options that mean the same in every method reading them are range-checked
 * here, once, so that no method starts with a value that can only make its
 * numbers non-finite.  "alpha" is LoRA's scale numerator (scale = alpha /
 * rank) in lora, mesp, mezo (params=lora) and prge: above 1e6 one update of
 * B the size of the learning rate already outweighs the base model, and
 * near float's limit the scale itself is infinite. */
static const struct {
    const char *key;
    double lo, hi; /* lo < v <= hi */
    const char *what;
} known_ranges[] = {
    { "alpha", 0.0, 1e6, "LoRA's scale is alpha / rank" },
};

double ftb_opt_double(const ftb_options *o, const char *key, double def, char *err, size_t errlen)
{
    const char *s = ftb_opt_str(o, key, NULL);
    if (!s) return def;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || isnan(v)) {
        snprintf(err, errlen, "option %s: '%s' is not a number", key, s);
        return def;
    }
    /* Methods compute in 32-bit floats: a value beyond float's range is
     * infinite the moment it is used. */
    if (errno == ERANGE || !isfinite(v) || fabs(v) > FLT_MAX) {
        snprintf(err, errlen,
                 "option %s: '%s' is beyond the range of a 32-bit float (|x| <= %.3g), in which methods compute", key,
                 s, (double)FLT_MAX);
        return def;
    }
    for (size_t i = 0; i < sizeof known_ranges / sizeof *known_ranges; i++)
        if (!strcmp(key, known_ranges[i].key) && !(v > known_ranges[i].lo && v <= known_ranges[i].hi)) {
            snprintf(err, errlen, "option %s: %s is not in (%g, %g] (%s)", key, s, known_ranges[i].lo,
                     known_ranges[i].hi, known_ranges[i].what);
            return def;
        }
    return v;
}
