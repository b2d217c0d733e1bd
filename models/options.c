/* options.c — typed access to a method's key=value options. */
#include "ftbench.h"

#include <errno.h>
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

double ftb_opt_double(const ftb_options *o, const char *key, double def, char *err, size_t errlen)
{
    const char *s = ftb_opt_str(o, key, NULL);
    if (!s) return def;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) {
        snprintf(err, errlen, "option %s: '%s' is not a number", key, s);
        return def;
    }
    return v;
}
