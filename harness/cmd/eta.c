/* eta.c — the sweep's ETA from the cells measured so far.  See eta.h. */
#include "eta.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The fixed guess of a cell's relative cost, used until the fit can be. */
static double guess_cost(double w, double t) { return w * t * (1.0 + t / 4096.0) + 2048.0; }

void ftb_eta_init(ftb_eta *e) { memset(e, 0, sizeof *e); }

void ftb_eta_free(ftb_eta *e)
{
    free(e->w);
    free(e->t);
    free(e->wall);
    memset(e, 0, sizeof *e);
}

static void remaining_delta(ftb_eta *e, int steps, int batch, int seq, double sign)
{
    double w = (double)steps * batch, t = seq;
    e->remaining[0] += sign;
    e->remaining[1] += sign * w * t;
    e->remaining[2] += sign * w * t * t;
    e->remaining_guess += sign * guess_cost(w, t);
}

void ftb_eta_add_remaining(ftb_eta *e, int steps, int batch, int seq) { remaining_delta(e, steps, batch, seq, 1); }
void ftb_eta_remove_remaining(ftb_eta *e, int steps, int batch, int seq) { remaining_delta(e, steps, batch, seq, -1); }

void ftb_eta_measured(ftb_eta *e, int steps, int batch, int seq, double wall)
{
    ftb_eta_remove_remaining(e, steps, batch, seq);
    if (!(wall >= 0) || !isfinite(wall)) return;
    if (e->n == e->cap) {
        int cap = e->cap ? 2 * e->cap : 16;
        double *w = realloc(e->w, sizeof *w * (size_t)cap), *t = realloc(e->t, sizeof *t * (size_t)cap),
               *s = realloc(e->wall, sizeof *s * (size_t)cap);
        if (w) e->w = w;
        if (t) e->t = t;
        if (s) e->wall = s;
        if (!w || !t || !s) return;
        e->cap = cap;
    }
    e->w[e->n] = (double)steps * batch;
    e->t[e->n] = seq;
    e->wall[e->n] = wall;
    e->n++;
}

/* Least squares on the features in `use` (a bit mask of 1, W·T, W·T²),
 * each scaled to its largest value so that the normal equations stay well
 * conditioned.  Returns the residual sum of squares, or -1 when the
 * system is singular or a coefficient comes out negative. */
static double fit_subset(const ftb_eta *e, int use, double coef[3])
{
    int idx[3], k = 0;
    for (int j = 0; j < 3; j++)
        if (use >> j & 1) idx[k++] = j;
    double scale[3] = { 1, 1, 1 };
    for (int i = 0; i < e->n; i++) {
        double f[3] = { 1, e->w[i] * e->t[i], e->w[i] * e->t[i] * e->t[i] };
        for (int j = 0; j < 3; j++)
            if (f[j] > scale[j]) scale[j] = f[j];
    }
    double A[3][4] = { { 0 } };
    for (int i = 0; i < e->n; i++) {
        double f[3] = { 1, e->w[i] * e->t[i], e->w[i] * e->t[i] * e->t[i] };
        for (int r = 0; r < k; r++) {
            for (int c = 0; c < k; c++) A[r][c] += f[idx[r]] / scale[idx[r]] * f[idx[c]] / scale[idx[c]];
            A[r][k] += f[idx[r]] / scale[idx[r]] * e->wall[i];
        }
    }
    /* Gaussian elimination with partial pivoting. */
    for (int c = 0; c < k; c++) {
        int p = c;
        for (int r = c + 1; r < k; r++)
            if (fabs(A[r][c]) > fabs(A[p][c])) p = r;
        if (fabs(A[p][c]) < 1e-12 * (1 + fabs(A[0][0]))) return -1;
        for (int j = 0; j <= k; j++) {
            double tmp = A[c][j];
            A[c][j] = A[p][j];
            A[p][j] = tmp;
        }
        for (int r = 0; r < k; r++) {
            if (r == c) continue;
            double m = A[r][c] / A[c][c];
            for (int j = c; j <= k; j++) A[r][j] -= m * A[c][j];
        }
    }
    double x[3] = { 0, 0, 0 };
    for (int r = 0; r < k; r++) {
        double v = A[r][k] / A[r][r];
        if (v < 0) return -1;
        x[idx[r]] = v / scale[idx[r]];
    }
    double sse = 0;
    for (int i = 0; i < e->n; i++) {
        double pred = x[0] + x[1] * e->w[i] * e->t[i] + x[2] * e->w[i] * e->t[i] * e->t[i];
        sse += (pred - e->wall[i]) * (pred - e->wall[i]);
    }
    memcpy(coef, x, sizeof x);
    return sse;
}

int ftb_eta_fit(const ftb_eta *e, double coef[3])
{
    coef[0] = coef[1] = coef[2] = 0;
    /* Three lengths at least: with fewer, a constant and a quadratic term
     * cannot be told apart from the linear one. */
    int distinct = 0;
    for (int i = 0; i < e->n && distinct < 3; i++) {
        int seen = 0;
        for (int j = 0; j < i; j++) seen |= e->t[j] == e->t[i];
        distinct += !seen;
    }
    if (distinct < 3) return 0;
    /* Non-negative least squares over three features: the best of the
     * subsets whose unconstrained fit is non-negative. */
    double best = -1;
    for (int use = 1; use < 8; use++) {
        double c[3];
        double sse = fit_subset(e, use, c);
        if (sse >= 0 && (best < 0 || sse < best)) {
            best = sse;
            memcpy(coef, c, sizeof c);
        }
    }
    return best >= 0;
}

double ftb_eta_seconds_left(const ftb_eta *e, double running_cell_elapsed)
{
    if (e->n == 0) return -1;
    double coef[3], left;
    if (ftb_eta_fit(e, coef)) {
        left = coef[0] * e->remaining[0] + coef[1] * e->remaining[1] + coef[2] * e->remaining[2];
    } else {
        double done_cost = 0, done_seconds = 0;
        for (int i = 0; i < e->n; i++) {
            done_cost += guess_cost(e->w[i], e->t[i]);
            done_seconds += e->wall[i];
        }
        left = done_cost > 0 ? e->remaining_guess * done_seconds / done_cost : -1;
    }
    left -= running_cell_elapsed;
    return left > 0 ? left : 0;
}
