/*
 * remote.c — see remote.h.  The device is driven by small POSIX shell
 * scripts sent to `ssh HOST sh -s` on stdin (so the remote login shell,
 * whatever it is, only ever sees "sh -s"), and files move with rsync over
 * the same ssh command line.
 */
#include "remote.h"
#include "cli.h"
#include "rundir.h"
#include "sweep.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define REMOTE_DIR_DEFAULT "ftbench-remote"

/* ---- strings and argument lists ------------------------------------------ */

typedef struct {
    char *s;
    size_t n, cap;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *t = realloc(b->s, cap);
        if (!t) abort();
        b->s = t;
        b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}

static void sb_puts(sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof tmp) {
        sb_add(b, tmp, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) abort();
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb_add(b, big, (size_t)n);
    free(big);
}

/* Characters that need no quoting in a POSIX shell word. */
static int shell_plain(const char *s)
{
    if (!*s) return 0;
    for (; *s; s++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.,/:=+@%", *s)) return 0;
    return 1;
}

/* s as one shell word: 'it'\''s'. */
static void sb_quote(sbuf *b, const char *s)
{
    if (shell_plain(s)) {
        sb_puts(b, s);
        return;
    }
    sb_puts(b, "'");
    for (const char *p = s; *p; p++) {
        if (*p == '\'')
            sb_puts(b, "'\\''");
        else
            sb_add(b, p, 1);
    }
    sb_puts(b, "'");
}

typedef struct {
    char **v;
    int n;
} strv;

static void sv_add(strv *a, const char *s)
{
    char **t = realloc(a->v, (size_t)(a->n + 2) * sizeof *t);
    if (!t) abort();
    a->v = t;
    a->v[a->n++] = strdup(s);
    a->v[a->n] = NULL;
}

static void sv_free(strv *a)
{
    for (int i = 0; i < a->n; i++) free(a->v[i]);
    free(a->v);
    a->v = NULL;
    a->n = 0;
}

/* ---- the command line ------------------------------------------------------ */

typedef struct {
    const char *host;
    const char *remote_dir;
    strv ssh;   /* "ssh", the user's --ssh-opt words, then ours (ssh keeps the first value) */
    strv sweep; /* the remote sweep's argv minus --out/--methods-dir/--profiles-dir */
    const char *out_dir, *methods_dir, *profiles_dir; /* as given here, or NULL */
    const char *run_id;
    int quiet;
    char sid[40];
    /* from the device */
    char arch[64], dir[PATH_MAX];
} remote_ctx;

static const char *const slurm_opts[] = { "--backend", "--collect", "--slurm-task", "--slurm-opt", "--cells-per-task",
                                          "--wait",    NULL };

int ftb_remote_requested(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--remote") || !strncmp(argv[i], "--remote=", 9)) return 1;
        /* A value that happens to read "--remote" is not the option. */
        if (!strncmp(argv[i], "--", 2) && !strchr(argv[i], '=') && ftb_cli_takes_value(argv[i]) == 1) i++;
    }
    return 0;
}

void ftb_remote_help(FILE *f)
{
    fprintf(f,
            "\nremote device (docs/DEVICES.md, \"Running on a device\"):\n"
            "  --remote USER@HOST   run the sweep on that machine over ssh: ships the binaries matching its\n"
            "                       `uname -m`, runs them natively there (detached: a dropped connection does\n"
            "                       not stop it), streams the progress and brings the records back into\n"
            "                       <out>/<device>/<run-id>/ here; the same command again re-attaches or collects\n"
            "  --ssh-opt \"OPTS\"     ssh options, split at spaces (e.g. \"-p 2222\", \"-i /path/key\"); repeatable\n"
            "  --remote-dir DIR     the directory on the device (default ~/%s)\n",
            REMOTE_DIR_DEFAULT);
}

static int usage(const char *msg)
{
    fprintf(stderr, "ftbench sweep: %s\n", msg);
    return FTB_EXIT_USAGE;
}

/* Splits --remote, --ssh-opt and --remote-dir off, keeps --out,
 * --methods-dir and --profiles-dir for this side, and checks the rest as
 * `sweep` would.  0 or an exit code (the line printed). */
static int parse(int argc, char **argv, unsigned sweep_opts, remote_ctx *r)
{
    char err[FTB_ERR_LEN + 256];
    strv check = { 0 }, user_ssh = { 0 };
    sv_add(&check, "sweep");
    sv_add(&r->sweep, "sweep");
    int rc = 0;
    for (int i = 1; i < argc && !rc; i++) {
        const char *a = argv[i];
        char name[64] = "";
        const char *val = NULL;
        if (!strncmp(a, "--", 2)) {
            const char *eq = strchr(a, '=');
            snprintf(name, sizeof name, "%.*s", eq ? (int)(eq - a) : (int)strlen(a), a);
            if (eq) val = eq + 1;
        }
        int ours = !strcmp(name, "--remote") || !strcmp(name, "--ssh-opt") || !strcmp(name, "--remote-dir");
        int here = !strcmp(name, "--out") || !strcmp(name, "--methods-dir") || !strcmp(name, "--profiles-dir");
        for (int k = 0; slurm_opts[k]; k++)
            if (!strcmp(name, slurm_opts[k])) {
                snprintf(err, sizeof err, "%s is the Slurm backend's; --remote runs the sweep on one device", name);
                rc = usage(err);
            }
        if (rc) break;
        if (ours || here) {
            if (!val) {
                if (i + 1 >= argc) {
                    snprintf(err, sizeof err, "%s needs a value", name);
                    rc = usage(err);
                    break;
                }
                val = argv[++i];
            }
            if (!*val) {
                snprintf(err, sizeof err, "%s: empty value", name);
                rc = usage(err);
                break;
            }
            if (!strcmp(name, "--remote")) {
                if (r->host) {
                    rc = usage("--remote given twice; give it once");
                    break;
                }
                r->host = val;
            } else if (!strcmp(name, "--remote-dir"))
                r->remote_dir = val;
            else if (!strcmp(name, "--ssh-opt")) {
                char *copy = strdup(val), *save = NULL;
                for (char *t = strtok_r(copy, " \t", &save); t; t = strtok_r(NULL, " \t", &save)) sv_add(&user_ssh, t);
                free(copy);
            }
            if (here) { /* checked below with the rest; used on this side only */
                sv_add(&check, name);
                sv_add(&check, val);
                if (!strcmp(name, "--out")) r->out_dir = val;
                if (!strcmp(name, "--methods-dir")) r->methods_dir = val;
                if (!strcmp(name, "--profiles-dir")) r->profiles_dir = val;
            }
            continue;
        }
        sv_add(&check, a);
        sv_add(&r->sweep, a);
        if (name[0] && !val && ftb_cli_takes_value(name) == 1 && i + 1 < argc) {
            sv_add(&check, argv[i + 1]);
            sv_add(&r->sweep, argv[++i]);
        }
    }
    ftb_cli cli;
    if (!rc) {
        int pr = ftb_cli_parse("sweep", sweep_opts, check.n, check.v, &cli, err, sizeof err);
        if (pr != 0) {
            if (pr < 0) rc = usage(err);
            if (pr == 1) rc = usage("--help: see ftbench sweep --help");
        } else {
            if (!r->host || r->host[0] == '-' || strchr(r->host, ' ') || strchr(r->host, ':'))
                rc = usage("--remote: give the device as USER@HOST or HOST (ssh -p PORT goes in --ssh-opt)");
            else if (cli.force)
                rc = usage("--force with --remote: the device keeps its own run directory and a re-attach must not "
                           "measure twice; give another --run-id to measure again");
            else if (cli.independent)
                rc = usage("--independent with --remote: the device's sweep is the run directory's one writer");
            else if (cli.checkpoint)
                rc = usage("--checkpoint with --remote: checkpoints are not shipped to the device yet; copy it there "
                           "and run ftbench on the device");
            else if (ftb_is_file(cli.dataset)) {
                snprintf(err, sizeof err,
                         "--dataset %s with --remote: dataset files are not shipped to the device yet; use a "
                         "generated dataset (uniform, synthetic-lang, task:...)",
                         cli.dataset);
                rc = usage(err);
            }
            /* What the device would refuse at once, refused here before
             * anything is shipped: the sweep's name and its lists. */
            int *v = NULL, nv = 0;
            char e2[FTB_ERR_LEN];
            if (!rc && cli.sweep && !ftb_sweep_find(cli.sweep)) {
                snprintf(err, sizeof err, "unknown sweep '%s' (sweeps: default, paper)", cli.sweep);
                rc = usage(err);
            }
            if (!rc && cli.seqs && ftb_parse_int_list(cli.seqs, 1, 1 << 22, &v, &nv, e2, sizeof e2) != 0) {
                snprintf(err, sizeof err, "--seqs %s", e2);
                rc = usage(err);
            }
            free(v);
            v = NULL;
            if (!rc && cli.batches && ftb_parse_int_list(cli.batches, 1, 1 << 16, &v, &nv, e2, sizeof e2) != 0) {
                snprintf(err, sizeof err, "--batches %s", e2);
                rc = usage(err);
            }
            free(v);
            r->quiet = cli.quiet;
            r->run_id = NULL;
            ftb_cli_free(&cli);
        }
    }
    sv_free(&check);
    if (!r->out_dir) r->out_dir = "results";
    if (!r->remote_dir) r->remote_dir = REMOTE_DIR_DEFAULT;
    /* ssh: the user's options first, since ssh keeps the first value of
     * each -o; ours make it fail instead of prompting, and notice a dead
     * link within about half a minute. */
    sv_add(&r->ssh, "ssh");
    for (int i = 0; i < user_ssh.n; i++) sv_add(&r->ssh, user_ssh.v[i]);
    sv_free(&user_ssh);
    const char *ours[] = { "-T",
                           "-o",
                           "BatchMode=yes",
                           "-o",
                           "ConnectTimeout=15",
                           "-o",
                           "ServerAliveInterval=10",
                           "-o",
                           "ServerAliveCountMax=3",
                           NULL };
    for (int i = 0; ours[i]; i++) sv_add(&r->ssh, ours[i]);
    return rc;
}

/* The session: one per host, remote directory and sweep command line, so
 * that the same command finds the same sweep on the device. */
static void session_id(remote_ctx *r)
{
    uint64_t h = FTB_FNV_INIT;
    h = ftb_fnv1a(r->host, strlen(r->host) + 1, h);
    h = ftb_fnv1a(r->remote_dir, strlen(r->remote_dir) + 1, h);
    for (int i = 0; i < r->sweep.n; i++) h = ftb_fnv1a(r->sweep.v[i], strlen(r->sweep.v[i]) + 1, h);
    const char *here[] = { r->methods_dir, r->profiles_dir };
    for (int i = 0; i < 2; i++) h = ftb_fnv1a(here[i] ? here[i] : "", strlen(here[i] ? here[i] : "") + 1, h);
    snprintf(r->sid, sizeof r->sid, "%016llx", (unsigned long long)h);
}

/* ---- child processes ---------------------------------------------------------- */

static volatile sig_atomic_t g_stop;
static void on_interrupt(int sig) { g_stop = sig; }

typedef void (*line_fn)(const char *line, void *ud);

/* Runs argv with `input` (or nothing) on its stdin.  Each stdout line goes
 * to on_line, or into *out; stderr into *errout (its last 8 KiB).  Ctrl-C
 * here ends the child.  Returns the wait status, or -1 with errout set. */
static int run_child(char *const *argv, const char *input, line_fn on_line, void *ud, sbuf *out, sbuf *errout)
{
    int in[2], po[2], pe[2];
    if (pipe(in) != 0) return -1;
    if (pipe(po) != 0) {
        close(in[0]);
        close(in[1]);
        return -1;
    }
    if (pipe(pe) != 0) {
        close(in[0]);
        close(in[1]);
        close(po[0]);
        close(po[1]);
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(in[0]), close(in[1]), close(po[0]), close(po[1]), close(pe[0]), close(pe[1]);
        if (errout) sb_printf(errout, "fork: %s", strerror(e));
        return -1;
    }
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(po[1], 1);
        dup2(pe[1], 2);
        close(in[0]), close(in[1]), close(po[0]), close(po[1]), close(pe[0]), close(pe[1]);
        /* The run directory's lock is not the child's to hold. */
        if (ftb_rundir_lock_fd() >= 0) close(ftb_rundir_lock_fd());
        execvp(argv[0], argv);
        dprintf(2, "cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(in[0]);
    close(po[1]);
    close(pe[1]);
    /* The scripts are small: one write fills the pipe without waiting. */
    if (input) {
        size_t len = strlen(input), off = 0;
        while (off < len) {
            ssize_t w = write(in[1], input + off, len - off);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) break;
            off += (size_t)w;
        }
    }
    close(in[1]);
    sbuf line = { 0 }, err = { 0 };
    struct pollfd pf[2] = { { po[0], POLLIN, 0 }, { pe[0], POLLIN, 0 } };
    int open_fds = 2, killed = 0;
    while (open_fds > 0) {
        if (g_stop && !killed) {
            kill(pid, SIGTERM);
            killed = 1;
        }
        int n = poll(pf, 2, 1000);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) break;
        for (int k = 0; k < 2; k++) {
            if (pf[k].fd < 0 || !(pf[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            char buf[4096];
            ssize_t got = read(pf[k].fd, buf, sizeof buf);
            if (got < 0 && errno == EINTR) continue;
            if (got <= 0) {
                close(pf[k].fd);
                pf[k].fd = -1;
                open_fds--;
                continue;
            }
            if (k == 1) {
                sb_add(&err, buf, (size_t)got);
                if (err.n > 8192) { /* keep the end: the error is the last line */
                    memmove(err.s, err.s + err.n - 4096, 4096);
                    err.n = 4096;
                    err.s[err.n] = 0;
                }
                continue;
            }
            if (!on_line) {
                if (out) sb_add(out, buf, (size_t)got);
                continue;
            }
            sb_add(&line, buf, (size_t)got);
            char *nl;
            while (line.n && (nl = memchr(line.s, '\n', line.n))) {
                *nl = 0;
                on_line(line.s, ud);
                size_t used = (size_t)(nl - line.s) + 1;
                memmove(line.s, nl + 1, line.n - used);
                line.n -= used;
                line.s[line.n] = 0;
            }
        }
    }
    if (on_line && line.n) on_line(line.s, ud);
    int status = -1;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (errout && err.n) sb_add(errout, err.s, err.n);
    free(line.s);
    free(err.s);
    return status;
}

/* The last non-empty line of a text ("" if none), trimmed, in out. */
static void last_line(const char *text, char *out, size_t n)
{
    out[0] = 0;
    if (!text) return;
    const char *end = text + strlen(text);
    while (end > text && (end[-1] == '\n' || end[-1] == '\r' || end[-1] == ' ')) end--;
    const char *start = end;
    while (start > text && start[-1] != '\n') start--;
    snprintf(out, n, "%.*s", (int)(end - start), start);
}

/* `ssh HOST sh -s` with the script on stdin. */
static int remote_sh(remote_ctx *r, const char *script, line_fn on_line, void *ud, sbuf *out, sbuf *errout)
{
    strv a = { 0 };
    for (int i = 0; i < r->ssh.n; i++) sv_add(&a, r->ssh.v[i]);
    sv_add(&a, r->host);
    sv_add(&a, "sh");
    sv_add(&a, "-s");
    int st = run_child(a.v, script, on_line, ud, out, errout);
    sv_free(&a);
    return st;
}

/* The ssh command line as rsync's -e wants it (words, quoted). */
static void rsync_e(const remote_ctx *r, sbuf *e)
{
    for (int i = 0; i < r->ssh.n; i++) {
        if (i) sb_puts(e, " ");
        sb_quote(e, r->ssh.v[i]);
    }
}

static int run_rsync(remote_ctx *r, strv *args, sbuf *errout)
{
    strv a = { 0 };
    sbuf e = { 0 };
    rsync_e(r, &e);
    sv_add(&a, "rsync");
    sv_add(&a, "-rt");
    sv_add(&a, "-e");
    sv_add(&a, e.s);
    for (int i = 0; i < args->n; i++) sv_add(&a, args->v[i]);
    int st = run_child(a.v, NULL, NULL, NULL, NULL, errout);
    sv_free(&a);
    free(e.s);
    return st;
}

static int exited_ok(int st) { return st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0; }

/* ---- what the device says ------------------------------------------------------- */

typedef struct {
    char arch[64], dir[PATH_MAX], nodir[512], missing[128], run[400];
    long running, log_size, log_from, exit_code; /* -1: none */
    char preflight[512];
} remote_state;

static void parse_state(const char *text, remote_state *s)
{
    memset(s, 0, sizeof *s);
    s->running = s->log_size = s->log_from = s->exit_code = -1;
    const char *p = text ? text : "";
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        char line[PATH_MAX + 64];
        snprintf(line, sizeof line, "%.*s", (int)(len < sizeof line ? len : sizeof line - 1), p);
        char *eq = strchr(line, '=');
        if (eq) {
            *eq = 0;
            char *v = ftb_trim(eq + 1);
            long num;
            if (!strcmp(line, "arch"))
                snprintf(s->arch, sizeof s->arch, "%s", v);
            else if (!strcmp(line, "dir"))
                snprintf(s->dir, sizeof s->dir, "%s", v);
            else if (!strcmp(line, "nodir"))
                snprintf(s->nodir, sizeof s->nodir, "%s", *v ? v : "not writable");
            else if (!strcmp(line, "missing")) {
                size_t u = strlen(s->missing);
                snprintf(s->missing + u, sizeof s->missing - u, "%s%s", u ? ", " : "", v);
            } else if (!strcmp(line, "run")) {
                /* More than one run directory would be a session not made
                 * here: refused when collecting. */
                if (s->run[0])
                    snprintf(s->run, sizeof s->run, "%s", "?");
                else
                    snprintf(s->run, sizeof s->run, "%s", v);
            } else if (!strcmp(line, "preflight"))
                snprintf(s->preflight, sizeof s->preflight, "%s", *v ? v : "it exits with an error");
            else if (ftb_parse_long(v, 0, LONG_MAX, &num) == 0) {
                if (!strcmp(line, "running")) s->running = num;
                if (!strcmp(line, "log_size")) s->log_size = num;
                if (!strcmp(line, "log_from")) s->log_from = num;
                if (!strcmp(line, "exit")) s->exit_code = num;
            }
        }
        p += len + (nl ? 1 : 0);
    }
}

/* The script that reports the device's architecture, prepares the remote
 * directory and says what the session is doing. */
static void probe_script(const remote_ctx *r, sbuf *b)
{
    sb_puts(b, "rd=");
    sb_quote(b, r->remote_dir);
    sb_printf(b, "\ns=%s\n", r->sid);
    sb_puts(b, "a=$(uname -m) || exit 97\n"
               "echo \"arch=$a\"\n"
               "e=$(mkdir -p -- \"$rd/sessions/$s\" \"$rd/$a/build/methods\" \"$rd/$a/profiles\" 2>&1) || "
               "{ echo \"nodir=$(printf '%s' \"$e\" | head -1)\"; exit 0; }\n"
               "cd -- \"$rd\" || { echo 'nodir=cannot enter it'; exit 0; }\n"
               "[ -w . ] && [ -w \"sessions/$s\" ] || { echo 'nodir=not writable'; exit 0; }\n"
               "echo \"dir=$(pwd -P)\"\n"
               "for t in rsync setsid tail; do command -v $t >/dev/null 2>&1 || echo \"missing=$t\"; done\n"
               "cd \"sessions/$s\" || exit 0\n"
               "if [ -f pid ]; then p=$(cat pid)\n"
               "  if kill -0 \"$p\" 2>/dev/null && tr '\\000' ' ' </proc/$p/cmdline 2>/dev/null | "
               "grep -q \"ftbench-session-$s\"; then echo \"running=$p\"; fi\n"
               "fi\n"
               "[ -f exit ] && echo \"exit=$(cat exit)\"\n"
               "for d in results/*/*; do [ -d \"$d\" ] && echo \"run=${d#results/}\"; done\n"
               "[ -f log ] && echo \"log_size=$(wc -c <log)\"\n"
               "exit 0\n");
}

static int probe(remote_ctx *r, remote_state *st, int first)
{
    sbuf script = { 0 }, out = { 0 }, err = { 0 };
    probe_script(r, &script);
    int status = remote_sh(r, script.s, NULL, NULL, &out, &err);
    char why[512];
    last_line(err.s, why, sizeof why);
    int rc = 0;
    if (!exited_ok(status)) {
        if (first || status < 0 || (WIFEXITED(status) && WEXITSTATUS(status) == 255) || !WIFEXITED(status))
            fprintf(stderr, "ftbench sweep: cannot reach %s over ssh: %s\n", r->host,
                    why[0] ? why : "ssh failed without saying why");
        else
            fprintf(stderr, "ftbench sweep: %s: the remote shell failed (exit %d): %s\n", r->host, WEXITSTATUS(status),
                    why[0] ? why : "no message");
        rc = first ? FTB_EXIT_USAGE : FTB_EXIT_FAIL;
    } else {
        parse_state(out.s, st);
        if (!st->arch[0]) {
            fprintf(stderr, "ftbench sweep: %s: no answer from `uname -m` (is the login shell a POSIX sh?)\n", r->host);
            rc = FTB_EXIT_USAGE;
        } else if (st->nodir[0]) {
            fprintf(stderr, "ftbench sweep: %s: cannot use the remote directory %s: %s (give --remote-dir)\n", r->host,
                    r->remote_dir, st->nodir);
            rc = FTB_EXIT_USAGE;
        } else if (!shell_plain(st->dir) || st->dir[0] != '/') {
            fprintf(stderr,
                    "ftbench sweep: %s: the remote directory %s is %s; give a --remote-dir whose path has only "
                    "letters, digits and ._-/+@%%,:=\n",
                    r->host, r->remote_dir, st->dir);
            rc = FTB_EXIT_USAGE;
        } else if (st->missing[0]) {
            fprintf(stderr, "ftbench sweep: %s has no %s (needed to ship files and run detached): install it there\n",
                    r->host, st->missing);
            rc = FTB_EXIT_USAGE;
        } else {
            snprintf(r->arch, sizeof r->arch, "%s", st->arch);
            snprintf(r->dir, sizeof r->dir, "%s", st->dir);
        }
    }
    free(script.s);
    free(out.s);
    free(err.s);
    return rc;
}

/* ---- the binaries for the device's architecture ----------------------------------- */

static const char *this_arch(void)
{
#if defined(__x86_64__)
    return "x86_64";
#elif defined(__aarch64__)
    return "aarch64";
#else
    return "unknown";
#endif
}

typedef struct {
    char exe[PATH_MAX], methods[PATH_MAX], profiles[PATH_MAX];
} build_dirs;

/* The methods directory of this build's own plugins. */
static int builtin_methods(char *out, size_t n)
{
    char cand[PATH_MAX];
    snprintf(cand, sizeof cand, "%s/methods", ftb_exe_dir());
    if (!ftb_is_dir(cand)) snprintf(cand, sizeof cand, "%s/../lib/ftbench/methods", ftb_exe_dir());
    if (!ftb_is_dir(cand) || !realpath(cand, out)) return -1;
    (void)n;
    return 0;
}

/* Picks (and for aarch64 from x86-64, builds) the binaries for r->arch.
 * 0, or an exit code with the line printed. */
static int choose_build(remote_ctx *r, build_dirs *b)
{
    char mine[PATH_MAX] = "";
    builtin_methods(mine, sizeof mine);
    char given[PATH_MAX] = "";
    if (r->methods_dir) {
        if (strchr(r->methods_dir, ':'))
            return usage("--methods-dir with --remote: give one directory (its plugins are shipped)");
        if (!realpath(r->methods_dir, given) || !ftb_is_dir(given)) {
            char e[PATH_MAX + 64];
            snprintf(e, sizeof e, "--methods-dir %s: not a directory", r->methods_dir);
            return usage(e);
        }
    }
    /* This build's own plugins named by path (make bench does) stand for
     * "the build's plugins", whatever the device's architecture. */
    int own = !r->methods_dir || (mine[0] && !strcmp(given, mine));
    const char *prof = r->profiles_dir ? r->profiles_dir : ftb_profiles_default_dir();
    if (!prof || !realpath(prof, b->profiles)) return usage("no profiles directory found to ship (--profiles-dir)");
    if (!strcmp(r->arch, this_arch())) {
        ssize_t n = readlink("/proc/self/exe", b->exe, sizeof b->exe - 1);
        if (n <= 0) return usage("cannot find this ftbench's own executable (/proc/self/exe)");
        b->exe[n] = 0;
        snprintf(b->methods, sizeof b->methods, "%s", own ? mine : given);
        if (!b->methods[0]) return usage("this ftbench has no methods directory to ship (--methods-dir)");
        return 0;
    }
    if (!strcmp(r->arch, "aarch64") && !strcmp(this_arch(), "x86_64")) {
        if (!own) {
            char e[PATH_MAX + 200];
            snprintf(e, sizeof e,
                     "--methods-dir %s holds %s plugins; the device is aarch64 (the cross build's plugins are "
                     "shipped when --methods-dir is left out)",
                     r->methods_dir, this_arch());
            return usage(e);
        }
        /* The source tree this ftbench was built in: build/ftbench → ./ */
        char root[PATH_MAX], mk[PATH_MAX + 16];
        snprintf(root, sizeof root, "%s/..", ftb_exe_dir());
        snprintf(mk, sizeof mk, "%s/Makefile", root);
        char cross_exe[PATH_MAX + 32];
        snprintf(cross_exe, sizeof cross_exe, "%s/build-aarch64/ftbench", root);
        if (ftb_is_file(mk)) {
            /* Up to date or built now (incremental when it exists). */
            fprintf(stderr,
                    "ftbench sweep: %s is aarch64: building the cross build (make CROSS=aarch64-linux-gnu- "
                    "bin in %s)\n",
                    r->host, root);
            strv m = { 0 };
            sv_add(&m, "make");
            sv_add(&m, "-s");
            sv_add(&m, "-C");
            sv_add(&m, root);
            sv_add(&m, "-j2");
            sv_add(&m, "CROSS=aarch64-linux-gnu-");
            sv_add(&m, "bin");
            sbuf err = { 0 };
            int st = run_child(m.v, NULL, NULL, NULL, NULL, &err);
            sv_free(&m);
            if (!exited_ok(st)) {
                char why[512];
                last_line(err.s, why, sizeof why);
                fprintf(stderr, "ftbench sweep: the aarch64 cross build failed: %s\n", why[0] ? why : "make failed");
                free(err.s);
                return FTB_EXIT_FAIL;
            }
            free(err.s);
        }
        if (!ftb_is_file(cross_exe)) {
            char e[PATH_MAX + 200];
            snprintf(e, sizeof e,
                     "%s is aarch64 and there is no aarch64 build beside this ftbench (make CROSS=aarch64-linux-gnu- "
                     "in the source tree)",
                     r->host);
            return usage(e);
        }
        if (!realpath(cross_exe, b->exe)) return usage("cannot resolve the aarch64 build's path");
        char cross_methods[PATH_MAX + 32], res[PATH_MAX];
        snprintf(cross_methods, sizeof cross_methods, "%s/build-aarch64/methods", root);
        if (!realpath(cross_methods, res) || !ftb_is_dir(res)) return usage("the aarch64 build has no methods/");
        snprintf(b->methods, sizeof b->methods, "%s", res);
        return 0;
    }
    char e[512];
    snprintf(e, sizeof e,
             "%s is %s: no ftbench binary for that architecture (this build is %s; aarch64 comes from make "
             "CROSS=aarch64-linux-gnu-)",
             r->host, r->arch, this_arch());
    return usage(e);
}

/* rsync the binary, the plugins and the profiles to <dir>/<arch>/. */
static int ship(remote_ctx *r, const build_dirs *b)
{
    char dest[PATH_MAX + 600];
    sbuf err = { 0 };
    int rc = 0;
    for (int step = 0; step < 3 && !rc; step++) {
        strv a = { 0 };
        if (step == 0) { /* the executable, as build/ftbench */
            sv_add(&a, "-p");
            sv_add(&a, b->exe);
            snprintf(dest, sizeof dest, "%s:%s/%s/build/ftbench", r->host, r->dir, r->arch);
        } else if (step == 1) { /* the plugins, exactly this build's */
            char src[PATH_MAX + 2];
            snprintf(src, sizeof src, "%s/", b->methods);
            const char *f[] = { "-p", "--delete", "--include=*.so", "--exclude=*", src, NULL };
            for (int i = 0; f[i]; i++) sv_add(&a, f[i]);
            snprintf(dest, sizeof dest, "%s:%s/%s/build/methods/", r->host, r->dir, r->arch);
        } else {
            char src[PATH_MAX + 2];
            snprintf(src, sizeof src, "%s/", b->profiles);
            const char *f[] = { "--delete", "--include=*.profile", "--exclude=*", src, NULL };
            for (int i = 0; f[i]; i++) sv_add(&a, f[i]);
            snprintf(dest, sizeof dest, "%s:%s/%s/profiles/", r->host, r->dir, r->arch);
        }
        sv_add(&a, dest);
        int st = run_rsync(r, &a, &err);
        sv_free(&a);
        if (!exited_ok(st)) {
            char why[512];
            last_line(err.s, why, sizeof why);
            fprintf(stderr, "ftbench sweep: shipping the %s binaries to %s failed: %s\n", r->arch, r->host,
                    why[0] ? why : "rsync failed");
            rc = FTB_EXIT_FAIL;
        }
    }
    free(err.s);
    return rc;
}

/* Starts the sweep on the device, detached: its own session (setsid), its
 * stdio on files, its exit code written when it ends.  The session's pid
 * names the session, so a later probe tells it from a recycled pid. */
static int launch(remote_ctx *r, remote_state *st)
{
    sbuf b = { 0 }, out = { 0 }, err = { 0 };
    sb_printf(&b, "s=%s\ncd -- %s/sessions/$s || exit 96\n", r->sid, r->dir);
    sb_printf(&b, "bin=%s/%s/build/ftbench\n", r->dir, r->arch);
    sb_puts(&b, "\"$bin\" help >/dev/null 2>preflight.err || "
                "{ echo \"preflight=$(grep -v '^$' preflight.err | head -1)\"; exit 0; }\n"
                "rm -f exit pid pid.tmp exit.tmp\n"
                "echo \"=== $(date -u +%Y-%m-%dT%H:%M:%SZ) ftbench sweep on $(uname -n) ($(uname -m)), session $s "
                "===\" >>log\n"
                "echo \"log_from=$(wc -c <log)\"\n"
                "setsid sh -c 'echo $$ >pid.tmp && mv pid.tmp pid; \"$@\" >stdout 2>>log </dev/null; "
                "echo $? >exit.tmp; mv exit.tmp exit' ");
    sb_printf(&b, "ftbench-session-%s env FTBENCH_GIT_REVISION=", r->sid);
    sb_quote(&b, ftb_git_revision());
    sb_puts(&b, " \"$bin\"");
    for (int i = 0; i < r->sweep.n; i++) {
        sb_puts(&b, " ");
        sb_quote(&b, r->sweep.v[i]);
    }
    sb_printf(&b, " --out %s/sessions/%s/results", r->dir, r->sid);
    sb_puts(&b, " </dev/null >/dev/null 2>&1 &\n"
                "i=0; while [ ! -f pid ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done\n"
                "[ -f pid ] && echo \"running=$(cat pid)\"\n"
                "exit 0\n");
    int status = remote_sh(r, b.s, NULL, NULL, &out, &err);
    int rc = 0;
    char why[512];
    last_line(err.s, why, sizeof why);
    remote_state ls;
    parse_state(out.s, &ls);
    if (!exited_ok(status)) {
        fprintf(stderr, "ftbench sweep: starting the sweep on %s failed: %s\n", r->host, why[0] ? why : "ssh failed");
        rc = FTB_EXIT_FAIL;
    } else if (ls.preflight[0]) {
        fprintf(stderr,
                "ftbench sweep: the shipped ftbench does not start on %s: %s (the runtime libraries: apt-get install "
                "libopenblas0 libjemalloc2 libjansson4 libpfm4 libpcre2-8-0 libgomp1)\n",
                r->host, ls.preflight);
        rc = FTB_EXIT_USAGE;
    } else if (ls.running < 0) {
        fprintf(stderr, "ftbench sweep: the sweep on %s did not start (see %s/sessions/%s/log there)\n", r->host,
                r->dir, r->sid);
        rc = FTB_EXIT_FAIL;
    } else {
        st->running = ls.running;
        st->log_from = ls.log_from;
    }
    free(b.s);
    free(out.s);
    free(err.s);
    return rc;
}

/* ---- following the device's log ---------------------------------------------------- */

typedef struct {
    int tty, open_progress;
} stream_state;

/* The sweep's stderr as it writes it; on a terminal its progress lines
 * ("... | ETA ...", one per step on a file) rewrite one line as they do
 * when the sweep runs here. */
static void show_line(const char *line, void *ud)
{
    stream_state *s = ud;
    int progress = s->tty && line[0] == '[' && strstr(line, " | ETA ");
    if (s->tty) fputs("\r\033[K", stderr);
    fputs(line, stderr);
    if (!progress) fputc('\n', stderr);
    s->open_progress = progress;
    fflush(stderr);
}

/* Follows the log from byte `from` (or its last lines when from < 0)
 * until the sweep's process ends.  0 when it ended, 1 when the connection
 * was lost, 130 on Ctrl-C. */
static int follow(remote_ctx *r, long pid, long from)
{
    sbuf b = { 0 }, err = { 0 };
    sb_printf(&b, "cd -- %s/sessions/%s || exit 96\n", r->dir, r->sid);
    if (from >= 0)
        sb_printf(&b, "exec tail -c +%ld --pid=%ld -f log\n", from + 1, pid);
    else
        sb_printf(&b, "exec tail -n 4 --pid=%ld -f log\n", pid);
    stream_state ss = { isatty(2) && !r->quiet, 0 };
    int status = remote_sh(r, b.s, r->quiet ? NULL : show_line, &ss, NULL, &err);
    if (ss.open_progress) fputc('\n', stderr);
    int rc = 0;
    if (g_stop)
        rc = 130;
    else if (!exited_ok(status)) {
        char why[512];
        last_line(err.s, why, sizeof why);
        fprintf(stderr, "ftbench sweep: lost the connection to %s%s%s\n", r->host, why[0] ? ": " : "", why);
        rc = 1;
    }
    free(b.s);
    free(err.s);
    return rc;
}

/* ---- collecting -------------------------------------------------------------------- */

static int name_ok(const char *s, size_t len)
{
    if (len == 0 || len > 200 || (len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.')) return 0;
    for (size_t i = 0; i < len; i++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.+", s[i])) return 0;
    return 1;
}

/* Brings the device's run directory into <out>/<device>/<run-id>/ here:
 * the cell files and timelines (rsync renames each file into place whole),
 * then merges them into results.jsonl under the local lock, as a Slurm
 * collect does.  0 or an exit code. */
static int collect(remote_ctx *r, const char *run, char *local, size_t local_n)
{
    const char *slash = strchr(run, '/');
    if (!slash || !name_ok(run, (size_t)(slash - run)) || !name_ok(slash + 1, strlen(slash + 1))) {
        fprintf(stderr, "ftbench sweep: %s: the session's run directory '%s' is not one this command made\n", r->host,
                run);
        return FTB_EXIT_FAIL;
    }
    if ((size_t)snprintf(local, local_n, "%s/%s", r->out_dir, run) >= local_n) {
        fprintf(stderr, "ftbench sweep: --out %.200s: path too long\n", r->out_dir);
        return FTB_EXIT_USAGE;
    }
    ftb_recorded done;
    int brc = ftb_rundir_begin("sweep", local, 1, 0, 1, &done);
    if (brc) return brc;
    ftb_recorded_free(&done);
    char src[PATH_MAX + 900], dst[PATH_MAX + 520];
    snprintf(src, sizeof src, "%s:%s/sessions/%s/results/%s/", r->host, r->dir, r->sid, run);
    snprintf(dst, sizeof dst, "%s/", local);
    strv a = { 0 };
    const char *f[] = {
        "--include=/cells/", "--include=/cells/*.json", "--include=/*.timeline.tsv", "--exclude=*", src, dst, NULL
    };
    for (int i = 0; f[i]; i++) sv_add(&a, f[i]);
    sbuf err = { 0 };
    int st = run_rsync(r, &a, &err);
    sv_free(&a);
    char why[512];
    last_line(err.s, why, sizeof why);
    free(err.s);
    if (!exited_ok(st)) {
        fprintf(stderr, "ftbench sweep: bringing the records back from %s failed: %s\n", r->host,
                why[0] ? why : "rsync failed");
        ftb_rundir_unlock();
        return FTB_EXIT_FAIL;
    }
    char e[FTB_ERR_LEN + PATH_MAX];
    int added = 0;
    if (ftb_rundir_sync(local, &added, e, sizeof e) != 0) {
        fprintf(stderr, "ftbench sweep: %s\n", e);
        ftb_rundir_unlock();
        return FTB_EXIT_FAIL;
    }
    if (ftb_rundir_load(local, &done, e, sizeof e) != 0) {
        fprintf(stderr, "ftbench sweep: %s\n", e);
        ftb_rundir_unlock();
        return FTB_EXIT_FAIL;
    }
    if (!r->quiet)
        fprintf(stderr, "ftbench sweep: collected from %s: %d cell record%s in %s (%d new)\n", r->host, done.n,
                done.n == 1 ? "" : "s", local, added);
    ftb_recorded_free(&done);
    ftb_rundir_unlock();
    return 0;
}

/* The device's summary (the sweep's stdout), its records line naming the
 * collected results here. */
static void print_summary(remote_ctx *r, const char *local)
{
    sbuf b = { 0 }, out = { 0 };
    sb_printf(&b, "cat %s/sessions/%s/stdout 2>/dev/null\nexit 0\n", r->dir, r->sid);
    int st = remote_sh(r, b.s, NULL, NULL, &out, NULL);
    const char *p = exited_ok(st) && out.s ? out.s : "";
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (!strncmp(p, "records: ", 9))
            printf("records: %s/%s\n", local, FTB_RUNDIR_RESULTS);
        else
            printf("%.*s\n", (int)len, p);
        p += len + (nl ? 1 : 0);
    }
    if (!strstr(out.s ? out.s : "", "records: ")) printf("records: %s/%s\n", local, FTB_RUNDIR_RESULTS);
    fflush(stdout);
    free(b.s);
    free(out.s);
}

/* ---- the command ---------------------------------------------------------------------- */

int ftb_remote_sweep(int argc, char **argv, unsigned sweep_opts)
{
    remote_ctx r;
    memset(&r, 0, sizeof r);
    int rc = parse(argc, argv, sweep_opts, &r);
    if (rc) goto out;
    session_id(&r);
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);

    remote_state st;
    rc = probe(&r, &st, 1);
    if (rc) goto restore;
    long from = -1;
    if (st.running >= 0) {
        if (!r.quiet)
            fprintf(stderr,
                    "ftbench sweep: re-attached to the sweep running on %s (%s, pid %ld; log: %s/sessions/%s/log)\n",
                    r.host, r.arch, st.running, r.dir, r.sid);
    } else if (st.exit_code == 0 && st.run[0]) {
        if (!r.quiet) fprintf(stderr, "ftbench sweep: the sweep on %s has ended; collecting\n", r.host);
    } else {
        build_dirs b;
        memset(&b, 0, sizeof b);
        rc = choose_build(&r, &b);
        if (rc) goto restore;
        rc = ship(&r, &b);
        if (rc) goto restore;
        if (!r.quiet)
            fprintf(stderr, "ftbench sweep: %s sweep on %s (%s) with %s; log there: %s/sessions/%s/log\n",
                    st.exit_code >= 0 || st.run[0] ? "resuming the" : "starting the", r.host, r.arch, b.exe, r.dir,
                    r.sid);
        rc = launch(&r, &st);
        if (rc) goto restore;
        from = st.log_from;
    }
    if (st.running >= 0) {
        int frc = follow(&r, st.running, from);
        if (frc == 130) {
            fprintf(stderr, "ftbench sweep: detached; the sweep goes on on %s (the same command re-attaches)\n",
                    r.host);
            rc = 130;
            goto restore;
        }
        if (frc) {
            fprintf(stderr,
                    "ftbench sweep: the sweep goes on on %s (log: %s/sessions/%s/log there); run the same command "
                    "again to re-attach and collect\n",
                    r.host, r.dir, r.sid);
            rc = FTB_EXIT_FAIL;
            goto restore;
        }
        rc = probe(&r, &st, 0);
        if (rc) goto restore;
        if (st.running >= 0) { /* tail ended, the sweep did not: tail was killed there */
            fprintf(stderr, "ftbench sweep: lost the log of the sweep on %s; it goes on: run the same command again\n",
                    r.host);
            rc = FTB_EXIT_FAIL;
            goto restore;
        }
    }
    if (st.exit_code < 0) {
        fprintf(stderr,
                "ftbench sweep: the sweep on %s ended without an exit status (killed, or the device restarted); run "
                "the same command again to resume it\n",
                r.host);
        rc = FTB_EXIT_FAIL;
        goto restore;
    }
    char local[PATH_MAX + 512];
    if (!st.run[0]) { /* it ended before making its run directory: bad input, said in its log */
        rc = st.exit_code ? (int)st.exit_code : FTB_EXIT_FAIL;
        goto restore;
    }
    int crc = collect(&r, st.run, local, sizeof local);
    if (crc) {
        rc = crc;
        goto restore;
    }
    if (st.exit_code == 0) print_summary(&r, local);
    rc = st.exit_code > 255 ? FTB_EXIT_FAIL : (int)st.exit_code;
restore:
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
out:
    sv_free(&r.ssh);
    sv_free(&r.sweep);
    return rc;
}
