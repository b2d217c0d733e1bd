/*
 * task_reasoning.c — multi-step arithmetic with a short answer.
 *
 *   "Compute ((3+4)*2)-5 =" -> " 9\n"
 *
 * `steps` operations (+, -, *) applied left to right, the order made
 * explicit by parentheses, operands of 1..`digits` digits.  The answer is
 * the exact integer (it may be negative), so a test can recompute it from
 * the prompt.  Solving it needs every intermediate value: one step per
 * operation, the kind of chained computation the reasoning family is about.
 */
#include "tasks.h"

long ftb_reasoning_generate(const ftb_reasoning_opts *o, uint64_t *rng, ftb_text *prompt, ftb_text *answer)
{
    long maxv = 1;
    for (int i = 0; i < o->digits; i++) maxv *= 10;
    long ops[16];
    char opc[16];
    int steps = o->steps < 16 ? o->steps : 15;
    long value = 1 + (long)ftb_task_below(rng, (uint64_t)(maxv - 1));
    long first = value;
    for (int i = 0; i < steps; i++) {
        static const char sym[3] = { '+', '-', '*' };
        opc[i] = sym[ftb_task_below(rng, 3)];
        ops[i] = 1 + (long)ftb_task_below(rng, (uint64_t)(maxv - 1));
        value = opc[i] == '+' ? value + ops[i] : opc[i] == '-' ? value - ops[i] : value * ops[i];
    }
    ftb_text_clear(prompt);
    ftb_text_printf(prompt, "Compute ");
    for (int i = 1; i < steps; i++) ftb_text_printf(prompt, "(");
    ftb_text_printf(prompt, "%ld", first);
    for (int i = 0; i < steps; i++) ftb_text_printf(prompt, "%c%ld%s", opc[i], ops[i], i + 1 < steps ? ")" : "");
    ftb_text_printf(prompt, " =");
    ftb_text_clear(answer);
    ftb_text_printf(answer, " %ld\n", value);
    return value;
}
