/* rope.c — rotary position embedding, Hugging Face's "rotate half" layout:
 * element i pairs with i + hd/2, angle = pos · theta^(−2i/hd).  A rotation's
 * transpose is its inverse, so backward rotates by −angle. */
#include "ops.h"

#include <math.h>

void rope_tables(float *cos_t, float *sin_t, int T, int head_dim, float theta)
{
    int half = head_dim / 2;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < half; i++) {
            double angle = t * pow((double)theta, -2.0 * i / head_dim);
            cos_t[(int64_t)t * half + i] = (float)cos(angle);
            sin_t[(int64_t)t * half + i] = (float)sin(angle);
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

void rope_forward(float *x, const float *cos_t, const float *sin_t, int N, int T, int n_heads, int head_dim)
{
    rotate(x, cos_t, sin_t, N, T, n_heads, head_dim, 1.0f);
}

void rope_backward(float *dx, const float *cos_t, const float *sin_t, int N, int T, int n_heads, int head_dim)
{
    rotate(dx, cos_t, sin_t, N, T, n_heads, head_dim, -1.0f);
}
