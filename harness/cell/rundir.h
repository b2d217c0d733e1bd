/*
 * rundir.h — the run directory, <out>/<device>/<run-id>/: one file per
 * cell record, the merged results.jsonl, and the lock of the local writer.
 * The format is specified in docs/HARNESS.md ("The run directory"); other
 * writers (remote devices, Slurm array tasks) write the same cell files.
 *
 *   cells/<cell-key>.json   the cell's current record: one JSON object on one
 *                           line, written to a temporary name in cells/,
 *                           fsync'ed and renamed into place
 *   results.jsonl           every record the local writer made, in order
 *                           (a merged view: readers use cells/ when present)
 *   .lock                   flock()ed by the one local writer; holds its pid
 */
#ifndef FTB_HARNESS_RUNDIR_H
#define FTB_HARNESS_RUNDIR_H

#include "cell.h"
#include <jansson.h>

#define FTB_RUNDIR_CELLS   "cells"
#define FTB_RUNDIR_RESULTS "results.jsonl"
#define FTB_RUNDIR_LOCK    ".lock"

/* Room a run directory path must leave for the names inside it
 * (cells/<key>.json, <key>.timeline.tsv, temporaries). */
#define FTB_RUNDIR_NAME_ROOM 300

/* Opens the run directory (making it if `create`): <out> as given, then
 * <device>/<run-id> without following links (safe_file.h).  A directory fd,
 * or -1 with err. */
int ftb_rundir_open(const char *run_dir, int create, char *err, size_t errlen);

/* Takes the run directory's lock for this process (flock on .lock,
 * released when the process ends).  When another local process holds it:
 * with `wait` prints one line and waits; without, returns -2 with err
 * naming the holder's pid and command.  0, -1 with err (cannot lock),
 * or -2 (busy). */
int ftb_rundir_lock(const char *run_dir, const char *cmd, int wait, char *err, size_t errlen);
/* The lock's descriptor (-1 if none): a forked cell closes it, so that
 * nothing the cell leaves behind keeps the run directory locked. */
int ftb_rundir_lock_fd(void);
void ftb_rundir_unlock(void);

/* Records one cell: cells/<key>.json (atomically), then one line appended
 * to results.jsonl.  When the append fails the cell file is removed again,
 * so the two never disagree about a record being kept.  0 or -1 with err. */
int ftb_rundir_write_record(const char *run_dir, const char *key, json_t *rec, char *err, size_t errlen);

/* The records of a run directory: the cell files when cells/ exists (the
 * authoritative set, whoever wrote it), else results.jsonl (run
 * directories made before cells/ existed).  A missing directory is empty.
 * 0, or -1 when the directory is unsafe or unreadable (err). */
int ftb_rundir_load(const char *run_dir, ftb_recorded *out, char *err, size_t errlen);

/* Appends to results.jsonl every cell file whose record is not its last
 * line for that cell (cells written by other writers, or a writer killed
 * between the two writes).  Only the lock holder calls it.  Sets *added. */
int ftb_rundir_sync(const char *run_dir, int *added, char *err, size_t errlen);

/* Whether a record is a measurement that resume keeps (ok, over_budget,
 * oom, skipped, crashed) or one it runs again (error, killed, timeout,
 * anything else: the cell gave no number). */
int ftb_record_is_measurement(json_t *rec);

/* What resume does with a cell: run it (no record, a record that is not a
 * measurement, or --force), keep its record, or refuse (recorded with other
 * settings; msg names them). */
typedef enum { FTB_RESUME_RUN, FTB_RESUME_KEEP, FTB_RESUME_MISMATCH } ftb_resume;
ftb_resume ftb_resume_check(const ftb_cell *c, const ftb_recorded *done, int force, char *msg, size_t n);

/* Everything a command does before its first cell: checks the run
 * directory's path fits, takes the lock (exit 2 on a busy one, or waits),
 * merges cell files from other writers into results.jsonl, and loads the
 * records.  `independent` (--independent): one of many writers of the run
 * directory (Slurm array tasks): no lock, no merge, and the records this
 * process writes go to their cell files only.  Returns 0, or the exit code
 * with the one-line message printed ("ftbench <cmd>: ..."). */
int ftb_rundir_begin(const char *cmd, const char *run_dir, int wait_lock, int independent, int quiet,
                     ftb_recorded *done);

/* "N recorded cells were measured by another build (git X; this is Y)" on
 * stderr when kept records come from another git revision: reported, not
 * refused.  records: the kept ones. */
void ftb_resume_warn_git(const char *cmd, json_t *const *records, int n);

#endif
