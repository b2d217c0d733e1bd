/*
 * style.c — one fixed look per method, the same in every plot and every
 * report: colour (Okabe–Ito, safe for colour-blind readers), dash pattern
 * and point type, so that figures stay legible printed in greyscale.  The
 * styles are gnuplot `set style line N`; N depends only on the method's
 * label, so a report made next year draws LoRA the same way.
 */
#include "report_internal.h"

#include <string.h>

typedef struct {
    const char *name;
    const char *colour;
    const char *dash; /* gnuplot dt argument                          */
    int point;        /* gnuplot pt                                   */
} method_style;

/* Known methods: style numbers 1..N in this order (also the row order). */
static const method_style known[] = {
    { "full", "#000000", "1", 7 },               /* solid, filled circle      */
    { "lora", "#0072B2", "(6,3)", 5 },           /* dashed, filled square     */
    { "lastk", "#E69F00", "(1,2.5)", 9 },        /* dotted, filled triangle   */
    { "ia3", "#009E73", "(6,2,1,2)", 11 },       /* dash-dot, filled ▽        */
    { "lars", "#D55E00", "(10,3,2,3,2,3)", 13 }, /* dash-dot-dot, filled ◇    */
    { "mesp", "#CC79A7", "(3,3)", 4 },           /* short dash, open square   */
    { "gc", "#56B4E9", "(12,4)", 6 },            /* long dash, open circle    */
    { "mebp", "#8C564B", "(6,2,1,2,1,2)", 8 },   /* open triangle             */
    { "mezo", "#7F7F7F", "(2,5)", 10 },          /* open ▽                    */
    { "prge", "#BCBD22", "(14,3,3,3)", 12 },     /* open ◇                    */
};
#define NKNOWN ((int)(sizeof known / sizeof known[0]))

/* Methods not in the table: picked by a hash of the label (stable). */
static const method_style extra[] = {
    { NULL, "#332288", "(8,2)", 1 },       { NULL, "#117733", "(4,2,4,6)", 2 }, { NULL, "#882255", "(2,2)", 3 },
    { NULL, "#44AA99", "(16,4,2,4)", 14 }, { NULL, "#AA4499", "(5,5)", 15 },    { NULL, "#999933", "(1,3,6,3)", 1 },
    { NULL, "#661100", "(9,3,9,9)", 2 },   { NULL, "#6699CC", "(3,6)", 3 },
};
#define NEXTRA ((int)(sizeof extra / sizeof extra[0]))

/* Variants of one method (other options): same colour, other dashes. */
static const char *const variant_dash[] = { NULL, "(2,2)", "(8,2,2,2)", "(14,4)", "(1,4)" };
#define NVARIANT ((int)(sizeof variant_dash / sizeof variant_dash[0]))

static unsigned hash(const char *s)
{
    unsigned h = 2166136261u;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static int base_style(const char *label)
{
    for (int i = 0; i < NKNOWN; i++)
        if (!strcmp(known[i].name, label)) return i + 1;
    return 40 + (int)(hash(label) % NEXTRA);
}

int ftr_style_for(const char *label, int variant)
{
    if (variant < 0) variant = 0;
    return base_style(label) + 100 * (variant % NVARIANT);
}

int ftr_style_order(const char *label)
{
    for (int i = 0; i < NKNOWN; i++)
        if (!strcmp(known[i].name, label)) return i;
    return NKNOWN; /* then by name */
}

static const method_style *style_of(int base)
{
    if (base >= 1 && base <= NKNOWN) return &known[base - 1];
    if (base >= 40 && base < 40 + NEXTRA) return &extra[base - 40];
    return &extra[0];
}

static const char *const cat_names[FTR_NCAT] = { "weights",   "trainable",         "grads",
                                                 "optimizer", "saved_activations", "workspace" };
static const char *const cat_titles[FTR_NCAT] = { "weights",   "trainable",         "gradients",
                                                  "optimizer", "saved activations", "workspace" };

const char *ftr_style_colour(int style) { return style_of(style % 100)->colour; }

/* The categories' colours (as cat_col_N in style.gp), for the timeline page. */
const char *ftr_category_colour(int c)
{
    static const char *const col[FTR_NCAT] = { "#8C8C8C", "#0072B2", "#56B4E9", "#E69F00", "#D55E00", "#F0E442" };
    return c >= 0 && c < FTR_NCAT ? col[c] : "#BBBBBB";
}

const char *ftr_category_name(int c) { return c >= 0 && c < FTR_NCAT ? cat_names[c] : "?"; }
const char *ftr_category_title(int c) { return c >= 0 && c < FTR_NCAT ? cat_titles[c] : "?"; }

/* Operation groups: the record's classes (docs/CORE.md "Time per
 * operation") gathered into what a stacked bar can show. */
static const char *const op_titles[FTR_NOPG] = { "linears",     "attention",    "head + loss",
                                                 "elementwise", "method hooks", "dequantization",
                                                 "optimizer",   "core other",   "outside the core" };
static const char *const op_colours[FTR_NOPG] = { "#0072B2", "#D55E00", "#CC79A7", "#F0E442", "#009E73",
                                                  "#56B4E9", "#E69F00", "#8C8C8C", "#BBBBBB" };

int ftr_op_group(const char *cls)
{
    static const struct {
        const char *name;
        int group;
    } map[] = { { "attn_fwd", 1 },  { "attn_bwd", 1 },   { "head_loss", 2 }, { "norm", 3 },  { "rope", 3 },
                { "swiglu", 3 },    { "residual", 3 },   { "embed", 3 },     { "hooks", 4 }, { "dequant", 5 },
                { "optimizer", 6 }, { "core_other", 7 }, { "other", 8 } };
    if (!strncmp(cls, "linear_", 7)) return 0;
    for (size_t i = 0; i < sizeof map / sizeof *map; i++)
        if (!strcmp(cls, map[i].name)) return map[i].group;
    return 7; /* a class this report does not know yet: inside the core */
}

const char *ftr_op_group_title(int g) { return g >= 0 && g < FTR_NOPG ? op_titles[g] : "?"; }

void ftr_style_file(ftr_buf *b, const ftr_set *s, int png_libgd)
{
    ftr_buf_puts(b, "# style.gp - the look of every figure of this report, loaded by each\n"
                    "# gnuplot/<plot>.gp.  Edit here, then run ./replot.sh (or one figure:\n"
                    "#   gnuplot -e \"fmt='pdf'\" gnuplot/<plot>.gp   from the report directory).\n"
                    "# fmt: png (quick looks), svg, pdf (vector, sized for one column of a\n"
                    "# two-column paper: 3.5 in wide, 8 pt Helvetica; wide=1 figures span\n"
                    "# both columns).\n"
                    "if (!exists(\"fmt\")) fmt = 'png'\n"
                    "if (!exists(\"wide\")) wide = 0\n"
                    "png_w = wide ? 1440 : 960; png_h = 640\n"
                    "pdf_w = wide ? 7.0 : 3.5;  pdf_h = wide ? 2.6 : 2.45\n"
                    "if (fmt eq 'png') {\n");
    if (png_libgd) /* no cairo here: the libgd terminal (no dash patterns) */
        ftr_buf_puts(b, "    set terminal png size png_w,png_h enhanced font 'DejaVuSans,12' linewidth 1.6 background "
                        "rgb 'white'\n");
    else
        ftr_buf_puts(b, "    set terminal pngcairo size png_w,png_h enhanced font 'Helvetica,13' linewidth 1.6 "
                        "dashlength 1.2 background rgb 'white'\n");
    ftr_buf_puts(b, "} else { if (fmt eq 'svg') {\n"
                    "    set terminal svg size png_w,png_h fixed enhanced font 'Helvetica,13' linewidth 1.6 dashlength "
                    "1.2 background rgb 'white'\n"
                    "} else { if (fmt eq 'pdf') {\n"
                    "    set terminal pdfcairo size pdf_w*1in,pdf_h*1in enhanced font 'Helvetica,8' linewidth 0.8 "
                    "dashlength 1.3 pointscale 0.5\n"
                    "} else { if (fmt eq 'eps') {\n"
                    "    set terminal postscript eps enhanced color size pdf_w*1in,pdf_h*1in font 'Helvetica,8' "
                    "linewidth 0.8 dashlength 1.3\n"
                    "} else {\n"
                    "    print 'style.gp: unknown fmt ', fmt, ' (png, svg, pdf or eps)'; exit status 1\n"
                    "}}}}\n"
                    "set encoding utf8\n"
                    "set border 3 lw 1\n"
                    "set tics nomirror out scale 0.6\n"
                    "set grid xtics ytics lw 0.6 lc rgb '#cfcfcf' dt 1\n"
                    "set key outside below center horizontal Left reverse noautotitle samplen 3.5 spacing 1.1 width 1 "
                    "height 1 nobox\n"
                    "set datafile separator tab\n"
                    "set datafile missing '-'\n"
                    "set style fill solid 1.0 border -1\n\n"
                    "# Budget line and over-budget marks.\n"
                    "set style line 90 lc rgb '#B00000' lw 1.3 dt (8,4)\n"
                    "set style line 91 lc rgb '#B00000' lw 1.5 pt 6 ps 2.4\n"
                    "# Sampled RSS in timelines, and the peak marks.\n"
                    "set style line 92 lc rgb '#000000' lw 1.8 dt 1\n"
                    "set style line 93 lc rgb '#000000' lw 1 pt 2 ps 1.5\n\n"
                    "# Methods: fixed per method name (colour, dash, point) so that every\n"
                    "# figure draws a method the same way, in colour and in greyscale.\n");
    /* Every style a series of this report uses, plus the known ones. */
    int done[1024] = { 0 };
    for (int i = 0; i < NKNOWN; i++) {
        const method_style *m = &known[i];
        ftr_buf_printf(b, "set style line %d lc rgb '%s' lw 1.6 dt %s pt %d ps 1.1   # %s\n", i + 1, m->colour, m->dash,
                       m->point, m->name);
        done[i + 1] = 1;
    }
    for (int k = 0; s && k < s->nseries; k++) {
        int st = s->series[k].style;
        if (st < 0 || st >= 1024 || done[st]) continue;
        done[st] = 1;
        const method_style *m = style_of(st % 100);
        int v = st / 100;
        ftr_buf_printf(b, "set style line %d lc rgb '%s' lw 1.6 dt %s pt %d ps 1.1   # %s\n", st, m->colour,
                       v ? variant_dash[v] : m->dash, v ? m->point + (m->point % 2 ? -1 : 1) : m->point,
                       s->series[k].name);
    }
    ftr_buf_puts(b, "\n# Memory categories of the core (timelines and breakdowns): colour and\n"
                    "# fill; hatched fills keep neighbours apart in greyscale.\n"
                    "cat_col_1 = '#8C8C8C'; cat_fs_1 = 'solid 0.95'       # weights\n"
                    "cat_col_2 = '#0072B2'; cat_fs_2 = 'solid 0.95'       # trainable\n"
                    "cat_col_3 = '#56B4E9'; cat_fs_3 = 'pattern 4'        # gradients\n"
                    "cat_col_4 = '#E69F00'; cat_fs_4 = 'solid 0.95'       # optimizer\n"
                    "cat_col_5 = '#D55E00'; cat_fs_5 = 'solid 0.95'       # saved activations\n"
                    "cat_col_6 = '#F0E442'; cat_fs_6 = 'pattern 5'        # workspace\n"
                    "cat_col_7 = '#BBBBBB'; cat_fs_7 = 'pattern 1'        # other RSS (outside the core's categories)\n"
                    "# Operation groups of a step (time breakdowns); hatched fills for greyscale.\n");
    static const char *const op_fs[FTR_NOPG] = { "solid 0.95", "solid 0.95", "pattern 4",  "pattern 5", "solid 0.95",
                                                 "pattern 2",  "solid 0.95", "solid 0.95", "pattern 1" };
    for (int g = 0; g < FTR_NOPG; g++)
        ftr_buf_printf(b, "op_col_%d = '%s'; op_fs_%d = '%s'   # %s\n", g + 1, op_colours[g], g + 1, op_fs[g],
                       op_titles[g]);
    ftr_buf_puts(b, "# Phases of a step (timeline strip).\n"
                    "ph_col_1 = '#9ecae1'  # forward\n"
                    "ph_col_2 = '#3182bd'  # backward\n"
                    "ph_col_3 = '#31a354'  # optimizer\n"
                    "ph_col_4 = '#d9d9d9'  # load / init / harness\n");
}
