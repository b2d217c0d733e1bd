/* rope.c — rotary position embedding, Hugging Face's "rotate half" layout:
 * element i pairs with i + hd/2, angle = pos · inv_freq[i], inv_freq[i] =
 * theta^(−2i/hd) scaled as config.json's "rope_scaling" says (linear or
 * llama3, the formulas of transformers' modeling_rope_utils.py; see
 * ftb_rope_scaling in ftbench.h).  A rotation's transpose is its inverse,
 * so backward rotates by −angle. */
#include "ops.h"

#include <math.h>

double ftb_rope_inv_freq(const ftb_config *cfg, int i)
{
    double inv_freq = pow((double)cfg->rope_theta, -2.0 * i / cfg->head_dim);
    const ftb_rope_scaling *r = &cfg->rope_scaling;
    if (r->kind == FTB_ROPE_LINEAR) return inv_freq / r->factor;
    if (r->kind != FTB_ROPE_LLAMA3) return inv_freq;
    /* Llama 3.1: long wavelengths (low frequencies) are stretched by
     * factor, short ones kept, those between interpolated smoothly. */
    double old_context = r->original_max_seq;
    double low_freq_wavelen = old_context / r->low_freq_factor;
    double high_freq_wavelen = old_context / r->high_freq_factor;
    double wavelen = 2.0 * M_PI / inv_freq;
    if (wavelen < high_freq_wavelen) return inv_freq;
    if (wavelen > low_freq_wavelen) return inv_freq / r->factor;
    double smooth = (old_context / wavelen - r->low_freq_factor) / (r->high_freq_factor - r->low_freq_factor);
    return (1.0 - smooth) * inv_freq / r->factor + smooth * inv_freq;
}

void ftb_rope_tables(float *cos_t, float *sin_t, int T, const ftb_config *cfg)
{
    int half = cfg->head_dim / 2;
    for (int i = 0; i < half; i++) {
        double inv_freq = ftb_rope_inv_freq(cfg, i);
        for (int t = 0; t < T; t++) {
            double angle = t * inv_freq;
            cos_t[(int64_t)t * half + i] = (float)cos(angle);
            sin_t[(int64_t)t * half + i] = (float)sin(angle);
        }
    }
}
static void rotate(float *x, const float *cos_t, const float *sin_t, int N, int T, int n_heads, int head_dim,
                   float sign)
{
    int half = head_dim / 2, width = n_heads * head_dim;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *c = cos_t + (int64_t)(n % T) * half, *s = sin_t + (int64_t)(n % T) * half;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + (int64_t)n * width + (int64_t)h * head_dim;
            for (int i = 0; i < half; i++) {
                float a = v[i], b = v[i + half], sn = sign * s[i];
                v[i] = a * c[i] - b * sn;
                v[i + half] = b * c[i] + a * sn;
            }
        }
    }
}

void ftb_rope_forward(float *x, const float *cos_t, const float *sin_t, int N, int T, int n_heads, int head_dim)
{
    rotate(x, cos_t, sin_t, N, T, n_heads, head_dim, 1.0f);
}

void ftb_rope_backward(float *dx, const float *cos_t, const float *sin_t, int N, int T, int n_heads, int head_dim)
{
    rotate(dx, cos_t, sin_t, N, T, n_heads, head_dim, -1.0f);
}
