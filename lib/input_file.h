/*
 * input_file.h — opening the files a user names as input (profiles,
 * datasets, instruction data, tokenizer.json, config.json, safetensors).
 *
 * A path may name anything: a FIFO blocks the open() until a writer comes,
 * /dev/zero or /dev/urandom never end, a directory reads as an error deep in
 * a parser.  Every input goes through here: the file is opened without
 * blocking, checked with fstat on that descriptor (no window between check
 * and use) and refused in one line unless it is a regular file; whole-file
 * reads are capped where a format has no natural limit.  Links are followed:
 * the user chose the path.
 */
#ifndef FTB_INPUT_FILE_H
#define FTB_INPUT_FILE_H

#include <stddef.h>
#include <stdio.h>

/* A read-only descriptor (O_CLOEXEC, blocking) of the regular file path, or
 * -1 with err "PATH: cannot open: ..." / "PATH: is a FIFO, not a regular
 * file". */
int ftb_input_open(const char *path, char *err, size_t errlen);

/* The same as a stdio stream ("r"). */
FILE *ftb_input_fopen(const char *path, char *err, size_t errlen);

/* The whole file, NUL-terminated (malloc'd), *len its size; NULL with err if
 * it is not a regular file, cannot be read, or is larger than max_bytes
 * ("PATH: N bytes, more than the M MiB a WHAT may have"). */
char *ftb_input_read(const char *path, const char *what, size_t max_bytes, size_t *len, char *err, size_t errlen);

#endif
