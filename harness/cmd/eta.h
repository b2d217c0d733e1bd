/* eta.h — how long a sweep's remaining cells will take, from the cells it
 * has measured.
 *
 * A cell's wall time is modelled as
 *     wall = a + b · W·T + c · W·T²        (a, b, c ≥ 0)
 * with W = (steps + warm-up steps) × batch and T the sequence length: a
 * constant (process start, model build or mapping), the per-token work
 * (linears), and attention's quadratic term.  The three are fitted by
 * non-negative least squares to the measured cells once they span three
 * lengths; before that, a fixed guess of the shape (T · (1 + T/4096) per
 * token plus a constant) is scaled to the seconds measured so far.  The
 * fixed guess alone counted a 4096-token cell as 4.7× a 128-token cell
 * where it measured ~10× (issue 17). */
#ifndef FTB_ETA_H
#define FTB_ETA_H

typedef struct {
    int n, cap;
    double *w, *t, *wall;   /* measured cells: W, T, seconds            */
    double remaining[3];    /* remaining cells: Σ1, Σ W·T, Σ W·T²        */
    double remaining_guess; /* remaining cells under the fixed guess     */
} ftb_eta;

void ftb_eta_init(ftb_eta *e);
void ftb_eta_free(ftb_eta *e);
/* A cell still to run (add) or no longer to run (remove: measured,
 * skipped). */
void ftb_eta_add_remaining(ftb_eta *e, int steps, int batch, int seq);
void ftb_eta_remove_remaining(ftb_eta *e, int steps, int batch, int seq);
/* A measured cell's wall time (also removes it from the remaining ones). */
void ftb_eta_measured(ftb_eta *e, int steps, int batch, int seq, double wall);
/* Seconds left for the remaining cells, less what the running one has
 * already spent; < 0 when nothing was measured yet (unknown). */
double ftb_eta_seconds_left(const ftb_eta *e, double running_cell_elapsed);
/* The fitted coefficients (a, b, c); 0 when the fixed guess is in use. */
int ftb_eta_fit(const ftb_eta *e, double coef[3]);

#endif
