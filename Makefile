# ftbench — build, test and benchmark.
#   make            build everything (core, harness, method plugins, tests)
#   make test       build and run the Criterion suite (SAN=1: ASan + UBSan)
#   make memcheck   valgrind over one tiny training step of every method
#   make bench      default benchmark sweep (DEVICE=host|rpi5|...)
#   make bench-core one full fine-tuning step of qwen2.5-0.5b, vs sgemm rate
#   make oracle     regenerate the PyTorch oracle fixtures (needs python3-torch)
#   make starting-model  pretrain the default task model into build/starting-model
# Every source file is found by wildcard: a new file or a new methods/<name>/
# folder needs no edit here.

CC      ?= gcc
SAN     ?= 0
PREFIX  ?= /usr/local
DEVICE  ?= host
SWEEP   ?= default

ifeq ($(SAN),1)
BUILD   := build-san
SANFLAGS:= -fsanitize=address,undefined,float-cast-overflow -fno-omit-frame-pointer -fno-sanitize-recover=undefined
OPT     := -O1 -g
MALLOC  :=
else ifeq ($(MEMCHECK),1)
# For valgrind (make memcheck): no -march=native (valgrind 3.19 cannot
# decode AVX-512) and glibc's malloc, which valgrind replaces.
BUILD   := build-memcheck
SANFLAGS:=
OPT     := -O2 -g -DFTB_EXACT_ALLOC=1
MALLOC  :=
else
BUILD   := build
SANFLAGS:=
OPT     := -O2 -g -march=native -mtune=native
# jemalloc is the process allocator; its counters are read through mallctl.
MALLOC  := -ljemalloc
endif

BLAS_CFLAGS := $(shell pkg-config --cflags openblas 2>/dev/null || echo -I/usr/include/x86_64-linux-gnu/openblas-pthread)
BLAS_LIBS   := $(shell pkg-config --libs openblas 2>/dev/null || echo -lopenblas)

CFLAGS  := -std=c11 -D_GNU_SOURCE -Wall -Wextra -fPIC -fopenmp -fno-math-errno $(OPT) $(SANFLAGS) -Iinclude -Imodels -Idatasets -Iharness $(BLAS_CFLAGS) $(EXTRA_CFLAGS)
LDLIBS  := $(MALLOC) $(BLAS_LIBS) -ljansson -lpcre2-8 -lpfm -ldl -lpthread -lm
LDFLAGS := -fopenmp $(SANFLAGS) -Wl,--export-dynamic

CORE_SRC    := $(wildcard models/*.c datasets/*.c)
HARNESS_SRC := $(filter-out harness/main.c,$(wildcard harness/*.c))
REPORT_SRC  := $(wildcard reports/*.c)
METHOD_DIRS := $(patsubst %/,%,$(dir $(wildcard methods/*/*.c)))
METHODS     := $(sort $(notdir $(METHOD_DIRS)))
TEST_SRC    := $(wildcard tests/*.c)

CORE_OBJ    := $(CORE_SRC:%.c=$(BUILD)/%.o)
HARNESS_OBJ := $(HARNESS_SRC:%.c=$(BUILD)/%.o) $(REPORT_SRC:%.c=$(BUILD)/%.o)
TEST_OBJ    := $(TEST_SRC:%.c=$(BUILD)/%.o)
PLUGINS     := $(METHODS:%=$(BUILD)/methods/%.so)

BIN         := $(BUILD)/ftbench
TESTBIN     := $(BUILD)/test_ftbench
CORELIB     := $(BUILD)/libftbench_core.a

.PHONY: all deps-check test bench bench-core oracle clean install fuzz report memcheck
all: deps-check $(BIN) $(PLUGINS) $(TESTBIN)

# Installs missing Debian packages when root, else prints the apt-get line.
deps-check:
	@sh ci/install-deps.sh

$(BUILD)/%.o: %.c include/ftbench.h $(wildcard models/*.h datasets/*.h harness/*.h reports/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(CORELIB): $(CORE_OBJ)
	@mkdir -p $(dir $@)
	ar rcs $@ $^

$(BIN): $(BUILD)/harness/main.o $(HARNESS_OBJ) $(CORELIB)
	$(CC) $(LDFLAGS) -o $@ $(BUILD)/harness/main.o $(HARNESS_OBJ) -Wl,--whole-archive $(CORELIB) -Wl,--no-whole-archive $(LDLIBS)

# A plugin is every .c file of its folder (rebuilt when a .h there changes),
# linked as one shared object; its core symbols resolve against the
# executable that loads it.  ftb_method grows by appending fields (ABI 2
# added `gradient` and `memory_model`): a positional initialiser that stops
# before them leaves them NULL on purpose.
.SECONDEXPANSION:
$(BUILD)/methods/%.so: $$(wildcard methods/$$*/*.c methods/$$*/*.h) include/ftbench.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Wno-missing-field-initializers -shared -o $@ $(wildcard methods/$*/*.c) -lm

$(TESTBIN): $(TEST_OBJ) $(HARNESS_OBJ) $(CORELIB)
	$(CC) $(LDFLAGS) -o $@ $(TEST_OBJ) $(HARNESS_OBJ) -Wl,--whole-archive $(CORELIB) -Wl,--no-whole-archive -lcriterion $(LDLIBS)

# Fault-injection plugins for the harness tests (tests/plugins/*.c), one .so
# each, built like methods; `make test` passes their directory to the tests.
TEST_PLUGINS := $(patsubst tests/plugins/%.c,$(BUILD)/tests/plugins/%.so,$(wildcard tests/plugins/*.c))
$(BUILD)/tests/plugins/%.so: tests/plugins/%.c $(wildcard tests/plugins/*.h) include/ftbench.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -shared -o $@ $< -lm

test: all $(TEST_PLUGINS)
	FTBENCH_BIN=$(abspath $(BIN)) FTBENCH_METHODS=$(abspath $(BUILD)/methods) \
	  FTBENCH_TEST_PLUGINS=$(abspath $(BUILD)/tests/plugins) \
	  ./$(TESTBIN) --jobs 1 $(TEST_ARGS)

# valgrind memcheck over one tiny training step of every method (ci/memcheck.sh,
# docs/RELIABILITY.md); fails on any error or definite leak.
MEMCHECK_STEP := $(BUILD)/tests/memcheck/memcheck_step
$(MEMCHECK_STEP): $(BUILD)/tests/memcheck/memcheck_step.o $(HARNESS_OBJ) $(CORELIB)
	$(CC) $(LDFLAGS) -o $@ $< $(HARNESS_OBJ) -Wl,--whole-archive $(CORELIB) -Wl,--no-whole-archive $(LDLIBS)
memcheck:
	$(MAKE) MEMCHECK=1 all build-memcheck/tests/memcheck/memcheck_step
	sh ci/memcheck.sh build-memcheck

bench: all
	./$(BIN) sweep --device $(DEVICE) --sweep $(SWEEP) --methods-dir $(BUILD)/methods
	./$(BIN) report results --out results/report

REPORT_DIRS ?= results
REPORT_OUT  ?= results/report
report: $(BIN)
	./$(BIN) report $(REPORT_DIRS) --out $(REPORT_OUT) $(REPORT_ARGS)

bench-core: all
	./$(BIN) bench-core --model qwen2.5-0.5b --seq 512 --batch 1

oracle:
	/usr/bin/python3 tests/oracle/gen_oracle.py tests/oracle/fixtures
	/usr/bin/python3 tests/oracle/gen_lars.py tests/oracle/fixtures

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/ftbench/methods $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 755 $(BIN) $(DESTDIR)$(PREFIX)/bin/ftbench
	install -m 644 include/ftbench.h $(DESTDIR)$(PREFIX)/include/ftbench.h
	install -m 755 $(PLUGINS) $(DESTDIR)$(PREFIX)/lib/ftbench/methods/
	sed -e 's|@PREFIX@|$(PREFIX)|g' ci/ftbench.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/ftbench.pc

clean:
	rm -rf build build-san build-memcheck

# ==== Fuzzing (tests/fuzz/, docs/RELIABILITY.md) ==============================
#   make fuzz [FUZZ_SECONDS=600] [FUZZ_TARGETS="cli report"]  each target in turn
#   make fuzz-ci       every target for FUZZ_CI_SECONDS (30), two at a time (ci/fuzz.sh)
#   make fuzz-build    build-fuzz/fuzz_<name> for each tests/fuzz/fuzz_<name>.c
#   make fuzz-corpus   regenerate the seed files in tests/fuzz/corpus/
# The project's sources are compiled again with clang into build-fuzz/ with
# libFuzzer coverage, ASan and UBSan.  Working corpora, logs and crashes go to
# build-fuzz/{corpus,logs,artifacts}/<name>/; a crash worth keeping is copied
# to tests/fuzz/regressions/<name>/, which `make test` replays
# (tests/test_fuzz_regressions.c).
FUZZ_CC         ?= clang
FUZZ_BUILD      := build-fuzz
FUZZ_SECONDS    ?= 600
FUZZ_CI_SECONDS ?= 30
FUZZ_JOBS       ?= 1
FUZZ_NAMES      := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_TARGETS    ?= $(FUZZ_NAMES)
# UBSan in recover mode so that tests/fuzz/known_open.ubsan can suppress a
# known, reported bug; the targets set halt_on_error=1 (fuzz_common.h), so
# any other undefined behaviour still ends the run as a crash.
FUZZ_SANFLAGS   := -fsanitize=address,undefined -fsanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_CFLAGS     := -std=c11 -D_GNU_SOURCE -fopenmp -O1 -g $(FUZZ_SANFLAGS) -Iinclude -Imodels -Idatasets -Iharness $(BLAS_CFLAGS)
FUZZ_LDLIBS     := $(BLAS_LIBS) -ljansson -lpcre2-8 -lpfm -ldl -lpthread -lm
FUZZ_OBJ        := $(patsubst %.c,$(FUZZ_BUILD)/%.o,$(CORE_SRC) $(HARNESS_SRC) $(REPORT_SRC))
FUZZ_LIB        := $(FUZZ_BUILD)/libftbench_fuzz.a
FUZZ_BINS       := $(FUZZ_NAMES:%=$(FUZZ_BUILD)/fuzz_%)
FUZZ_HEADERS    := include/ftbench.h $(wildcard models/*.h datasets/*.h harness/*.h reports/*.h)

.PHONY: fuzz fuzz-ci fuzz-build fuzz-corpus fuzz-clean
fuzz-build: $(FUZZ_BINS)

# The replay test #includes the targets' files: rebuild it when they change.
$(BUILD)/tests/test_fuzz_regressions.o: $(wildcard tests/fuzz/*.c tests/fuzz/*.h)

$(FUZZ_BUILD)/%.o: %.c $(FUZZ_HEADERS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_LIB): $(FUZZ_OBJ)
	ar rcs $@ $^

$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $(wildcard tests/fuzz/*.h) $(FUZZ_LIB)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -DFTB_FUZZ_MAIN -o $@ $< $(FUZZ_LIB) $(FUZZ_LDLIBS) -fopenmp

$(FUZZ_BUILD)/gen_corpus: tests/fuzz/gen_corpus.c $(wildcard tests/fuzz/*.h) $(FUZZ_LIB)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -o $@ $< $(FUZZ_LIB) $(FUZZ_LDLIBS) -fopenmp

fuzz: $(FUZZ_BINS)
	bash tests/fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_JOBS) $(FUZZ_TARGETS)

fuzz-ci: $(FUZZ_BINS)
	bash tests/fuzz/run.sh $(FUZZ_CI_SECONDS) 2 $(FUZZ_TARGETS)

fuzz-corpus: $(FUZZ_BUILD)/gen_corpus
	sh tests/fuzz/make_corpus.sh $(FUZZ_BUILD)/gen_corpus

fuzz-clean:
	rm -rf $(FUZZ_BUILD)
# ==== end of fuzzing ===========================================================

# ---- bench-quant: frozen base weights in each storage format -------------
# (docs/QUANT.md; figures in docs/BENCHMARKS.md "Quantized base weights").
# A standalone program in tests/bench/ (not part of the test binary); it
# forks one process per (format, residency) cell and caches the quantized
# checkpoints in QBENCH_CACHE.  e.g. make bench-quant QBENCH_ARGS="--seq 512 --formats int4"
QBENCH       := $(BUILD)/tests/bench/bench_quant
QBENCH_CACHE ?= /var/tmp/ftbench-quant
QBENCH_ARGS  ?=
.PHONY: bench-quant
$(QBENCH): $(BUILD)/tests/bench/bench_quant.o $(HARNESS_OBJ) $(CORELIB)
	$(CC) $(LDFLAGS) -o $@ $< $(HARNESS_OBJ) -Wl,--whole-archive $(CORELIB) -Wl,--no-whole-archive $(LDLIBS)
bench-quant: all $(QBENCH)
	./$(QBENCH) --model qwen2.5-0.5b --seq 256 --methods-dir $(BUILD)/methods --cache $(QBENCH_CACHE) $(QBENCH_ARGS)

# ---- bench-zo: zeroth-order estimate quality and P-RGE vs MeZO speed -------
# (docs/BENCHMARKS.md "Gradient fidelity" and "Zeroth-order speed").
# e.g. make bench-zo ZO_PART=speed ZO_ENV="NS='1 4 16' REPS=5"
ZO_PART ?= all
ZO_ENV  ?=
.PHONY: bench-zo
bench-zo: all
	env BIN=$(BIN) METHODS=$(BUILD)/methods $(ZO_ENV) sh tests/bench/bench_zo.sh $(ZO_PART)

# ---- bench-lars: LARS against LoRA, memory curves and speed ----------------
# (docs/methods/lars.md "Measured").  e.g.
#   make bench-lars LARS_PART=curves LARS_ENV="MODELS=qwen2.5-0.5b SEQS='2048 4096'"
LARS_PART ?= all
LARS_ENV  ?=
.PHONY: bench-lars
bench-lars: all
	env BIN=$(BIN) METHODS=$(BUILD)/methods $(LARS_ENV) sh tests/bench/bench_lars.sh $(LARS_PART)

# ---- starting-model: a small trained model for accuracy runs ----------------
# (docs/TASKS.md).  `ftbench pretrain` with the full method on the synthetic
# language mixed with the tasks' format; seeded, so the same machine and
# thread count give the same weights.  Used as --checkpoint by train/eval.
STARTING_MODEL      ?= $(BUILD)/starting-model
STARTING_MODEL_ARGS ?= --model starter-4m --steps 800 --seq 256 --batch 4 --seed 42 --threads 2
.PHONY: starting-model
starting-model: $(STARTING_MODEL)/model.safetensors
$(STARTING_MODEL)/model.safetensors: | $(BIN)
	./$(BIN) pretrain --out $(STARTING_MODEL) $(STARTING_MODEL_ARGS)
