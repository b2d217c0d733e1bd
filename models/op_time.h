/* op_time.h — timing the core's ops into classes (include/ftbench.h,
 * "Time per operation class").  An op is bracketed by ftb_op_begin and
 * ftb_op_end on the training thread; a bracket inside another one is not
 * counted (the outer class keeps the time), so a class never counts the
 * same second twice. */
#ifndef FTB_OP_TIME_H
#define FTB_OP_TIME_H
#include "ftbench.h"

typedef struct {
    double t0;    /* start, seconds; < 0: nested, not counted */
    double dq0;   /* dequantization seconds at the start      */
    long faults0; /* process page faults at the start         */
} ftb_op_timer;

ftb_op_timer ftb_op_begin(void);
/* Adds the time since t to class c (less the dequantization inside it,
 * which goes to FTB_OP_DEQUANT), with the op's flops and bytes. */
void ftb_op_end(ftb_op_class c, ftb_op_timer t, double flops, double bytes);
/* Seconds counted into all classes so far (ftb_op_end's running total):
 * the core's run adds what it spent outside its ops to FTB_OP_CORE_OTHER. */
double ftb_op_counted_seconds(void);
void ftb_op_add_seconds(ftb_op_class c, double seconds);

#endif
