/* rng.c — xoshiro256** seeded through splitmix64: fast, reproducible across
 * machines, and cheap to regenerate (zeroth-order methods redraw their
 * perturbations from a seed instead of storing them). */
#include "ftbench.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void ftb_rng_seed(ftb_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t ftb_rng_u64(ftb_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float ftb_rng_uniform(ftb_rng *r) { return (float)(ftb_rng_u64(r) >> 40) * (1.0f / 16777216.0f); }

float ftb_rng_normal(ftb_rng *r)
{
    /* Box-Muller on 53-bit uniforms; u1 in (0,1] so log() is finite. */
    double u1 = ((ftb_rng_u64(r) >> 11) + 1) * (1.0 / 9007199254740992.0);
    double u2 = (ftb_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

void ftb_fill_normal(float *x, int64_t n, float std, uint64_t seed)
{
    ftb_rng r;
    ftb_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++) x[i] = std * ftb_rng_normal(&r);
}
