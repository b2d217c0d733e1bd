/*
 * blas.h — what the BLAS kernel choice (blas.c) records beyond the public
 * functions of ftbench.h.
 */
#ifndef FTB_MODELS_BLAS_H
#define FTB_MODELS_BLAS_H

/* Why the automatic choice chose: "speed (...)" on hardware, "correctness
 * (emulated CPU ...)" under emulation; "" when nothing was chosen here. */
const char *ftb_blas_selection_basis(void);

#endif
