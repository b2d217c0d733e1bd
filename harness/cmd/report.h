/*
 * report.h — `ftbench report`: tables and plots for papers from one or more
 * results directories (docs/REPORTS.md).
 *
 *   ftbench report RESULTS_DIR [RESULTS_DIR...] [--out DIR]
 *                  [--formats png,svg,pdf] [--log] [--cell KEY] [--seq N]
 *
 * Writes report.md, report.html (self-contained, plots embedded), table.tex
 * (booktabs), and for every plot its data (data/NAME.tsv), its gnuplot
 * script (gnuplot/NAME.gp; restyle with gnuplot/style.gp and ./replot.sh)
 * and the images (plots/NAME.png, .svg, .pdf).  Without gnuplot the tables are still
 * written and one line says which plots were skipped.
 *
 * Environment: FTBENCH_GNUPLOT = the gnuplot executable (default: gnuplot
 * found in PATH).
 */
#ifndef FTB_HARNESS_REPORT_H
#define FTB_HARNESS_REPORT_H

/* argv[0] is "report".  Returns 0 when the report was written (even with
 * plots skipped), 1 when nothing usable was found or writing failed, 2 on
 * bad input. */
int ftb_cmd_report(int argc, char **argv);

#endif
