/* noise.c (kit) — the zeroth-order methods' seeded noise (mezo, prge):
 * z ~ N(0, I) never stored, regenerated from a seed wherever it is needed.
 * The layout each method builds on it is documented in its own file. */
#include "ftbench_kit.h"

#include <math.h>

/* splitmix64's finaliser: a bijection that scatters nearby inputs. */
static uint64_t mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t ftb_kit_noise_child(uint64_t parent, uint64_t index)
{
    return mix(parent + 0x9e3779b97f4a7c15ULL * (index + 1));
}

void ftb_kit_noise_normals(float *z, int n, ftb_rng *r)
{
    for (int i = 0; i < n; i += 2) {
        uint64_t x = ftb_rng_u64(r);
        float u1 = (float)((x >> 40) + 1) * (1.0f / 16777216.0f);
        float u2 = (float)((x >> 16) & 0xFFFFFF) * (1.0f / 16777216.0f);
        float radius = sqrtf(-2.0f * logf(u1)), s, c;
        sincosf(6.2831853071795865f * u2, &s, &c);
        z[i] = radius * c;
        if (i + 1 < n) z[i + 1] = radius * s;
    }
}
