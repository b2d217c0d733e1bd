/*
 * text.c — growable strings, escaping for HTML and LaTeX, safe file names.
 */
#include "report_internal.h"
#include "safe_file.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void grow(ftr_buf *b, size_t need)
{
    if (b->n + need + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + need + 1) cap *= 2;
    char *s = realloc(b->s, cap);
    if (!s) abort();
    b->s = s;
    b->cap = cap;
}

void ftr_buf_printf(ftr_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    grow(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->s + b->n, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)n;
}

void ftr_buf_puts(ftr_buf *b, const char *s)
{
    size_t n = strlen(s);
    grow(b, n);
    memcpy(b->s + b->n, s, n + 1);
    b->n += n;
}

void ftr_buf_free(ftr_buf *b)
{
    free(b->s);
    memset(b, 0, sizeof *b);
}

int ftr_buf_write(const ftr_buf *b, const char *path)
{
    /* Never through a link planted at path (safe_file.h): written under a
     * temporary name and renamed onto it. */
    FILE *f = ftb_sf_fopen_w(path);
    if (!f) return -1;
    size_t w = b->n ? fwrite(b->s, 1, b->n, f) : 0;
    if (w != b->n || ferror(f)) {
        ftb_sf_fabort(f); /* nothing half-written is left under path */
        return -1;
    }
    return ftb_sf_fclose(f) == 0 ? 0 : -1;
}

void ftr_html_escape(ftr_buf *b, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '<': ftr_buf_puts(b, "&lt;"); break;
        case '>': ftr_buf_puts(b, "&gt;"); break;
        case '&': ftr_buf_puts(b, "&amp;"); break;
        case '"': ftr_buf_puts(b, "&quot;"); break;
        default: {
            char c[2] = { *s, 0 };
            ftr_buf_puts(b, c);
        }
        }
    }
}

void ftr_latex_escape(ftr_buf *b, const char *s)
{
    int code = 0; /* inside `...`: typewriter */
    for (; s && *s; s++) {
        switch (*s) {
        case '`':
            ftr_buf_puts(b, code ? "}" : "\\texttt{");
            code = !code;
            break;
        case '_':
        case '%':
        case '&':
        case '#':
        case '$':
        case '{':
        case '}': ftr_buf_printf(b, "\\%c", *s); break;
        case '~': ftr_buf_puts(b, "\\textasciitilde{}"); break;
        case '^': ftr_buf_puts(b, "\\textasciicircum{}"); break;
        case '\\': ftr_buf_puts(b, "\\textbackslash{}"); break;
        case '<': ftr_buf_puts(b, "\\textless{}"); break;
        case '>': ftr_buf_puts(b, "\\textgreater{}"); break;
        default: {
            char c[2] = { *s, 0 };
            ftr_buf_puts(b, c);
        }
        }
    }
    if (code) ftr_buf_puts(b, "}");
}

void ftr_safe_name(char *out, size_t n, const char *s)
{
    size_t i = 0;
    for (; s && *s && i + 1 < n; s++) {
        char c = *s;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
                 c == '_';
        out[i++] = ok ? c : '_';
    }
    if (n) out[i] = 0;
}

void ftr_gp_quote(ftr_buf *b, const char *s)
{
    ftr_buf_puts(b, "'");
    for (; s && *s; s++) {
        if (*s == '\'')
            ftr_buf_puts(b, "''");
        else if (*s == '_' || *s == '^' || *s == '{' || *s == '}' || *s == '@' || *s == '&' || *s == '~')
            ftr_buf_printf(b, "\\%c", *s); /* enhanced-text characters, shown literally */
        else {
            char c[2] = { *s, 0 };
            ftr_buf_puts(b, c);
        }
    }
    ftr_buf_puts(b, "'");
}
