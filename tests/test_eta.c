/* The sweep's ETA (harness/cmd/eta.c): fitted to the cells measured so
 * far, so that the long cells of a sweep are not underestimated. */
#include "eta.h"

#include <criterion/criterion.h>
#include <math.h>

/* A machine whose cells cost 2 s + 1e-3 s per token-step + 2e-7 s per
 * token²-step: attention's quadratic term dominates the long ones. */
static double wall_of(int steps, int seq) { return 2.0 + 1e-3 * steps * seq + 2e-7 * steps * (double)seq * seq; }

Test(eta, the_fit_predicts_long_cells_from_short_ones)
{
    ftb_eta e;
    ftb_eta_init(&e);
    const int seqs[] = { 128, 256, 512, 1024, 2048, 4096 };
    /* Two methods per length, lengths in increasing order, as a sweep
     * runs them. */
    for (int i = 0; i < 6; i++)
        for (int m = 0; m < 2; m++) ftb_eta_add_remaining(&e, 3, 1, seqs[i]);
    for (int i = 0; i < 3; i++)
        for (int m = 0; m < 2; m++) ftb_eta_measured(&e, 3, 1, seqs[i], wall_of(3, seqs[i]));
    double coef[3];
    cr_assert(ftb_eta_fit(&e, coef), "three lengths measured: the fit is used");
    double want = 0;
    for (int i = 3; i < 6; i++) want += 2 * wall_of(3, seqs[i]);
    double got = ftb_eta_seconds_left(&e, 0);
    cr_expect(fabs(got - want) < 0.01 * want, "ETA %.2f s, the remaining cells take %.2f s", got, want);
    /* The fixed guess this replaces counted 4096 tokens as ~4.7x 128. */
    cr_expect(wall_of(3, 4096) / wall_of(3, 128) > 8);
    /* The running cell's elapsed time is taken off. */
    cr_expect(fabs(ftb_eta_seconds_left(&e, 10) - (got - 10)) < 1e-6);
    ftb_eta_free(&e);
}

Test(eta, before_three_lengths_the_guess_is_scaled_to_what_was_measured)
{
    ftb_eta e;
    ftb_eta_init(&e);
    cr_expect(ftb_eta_seconds_left(&e, 0) < 0, "nothing measured: unknown");
    for (int i = 0; i < 4; i++) ftb_eta_add_remaining(&e, 2, 1, 64);
    ftb_eta_measured(&e, 2, 1, 64, 5.0);
    double coef[3];
    cr_expect(!ftb_eta_fit(&e, coef));
    /* Three more cells like the measured one: 15 s. */
    cr_expect(fabs(ftb_eta_seconds_left(&e, 0) - 15.0) < 1e-9, "%g", ftb_eta_seconds_left(&e, 0));
    /* A skipped cell leaves the remaining work. */
    ftb_eta_remove_remaining(&e, 2, 1, 64);
    cr_expect(fabs(ftb_eta_seconds_left(&e, 0) - 10.0) < 1e-9);
    cr_expect(ftb_eta_seconds_left(&e, 30) == 0, "never negative");
    ftb_eta_free(&e);
}

Test(eta, coefficients_are_never_negative)
{
    ftb_eta e;
    ftb_eta_init(&e);
    /* Times that a free least-squares fit would explain with a negative
     * constant: cost proportional to tokens only, with noise. */
    const int seqs[] = { 100, 200, 400, 800 };
    const double noise[] = { -0.02, 0.03, -0.01, 0.02 };
    for (int i = 0; i < 4; i++) ftb_eta_add_remaining(&e, 1, 1, seqs[i]);
    for (int i = 0; i < 4; i++) ftb_eta_measured(&e, 1, 1, seqs[i], 0.01 * seqs[i] * (1 + noise[i]));
    double c[3];
    cr_assert(ftb_eta_fit(&e, c));
    cr_expect(c[0] >= 0 && c[1] >= 0 && c[2] >= 0, "%g %g %g", c[0], c[1], c[2]);
    ftb_eta_add_remaining(&e, 1, 1, 1600);
    cr_expect(fabs(ftb_eta_seconds_left(&e, 0) - 16.0) < 1.6, "%g", ftb_eta_seconds_left(&e, 0));
    ftb_eta_free(&e);
}
