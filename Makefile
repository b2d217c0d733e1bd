# ftbench — build, test and benchmark.
#   make            build everything (core, harness, method plugins, tests)
#   make test       build and run the Criterion suite (SAN=1: ASan + UBSan)
#   make memcheck   valgrind over one tiny training step of every method
#   make bench      default benchmark sweep (DEVICE=host|rpi5|...), then its report
#   make report     RESULTS="dir ...": tables and plots of those runs (docs/REPORTS.md)
#   make bench-core one full fine-tuning step of qwen2.5-0.5b, vs sgemm rate
#   make bench-vs-torch  ftbench against PyTorch on the same cells (needs python3-torch)
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

# ==== Cross builds (docs/DEVICES.md) ==========================================
#   make CROSS=aarch64-linux-gnu- [MARCH=-mcpu=cortex-a76] [SYSROOT=...]
# builds with $(CROSS)gcc into build-aarch64/ against a Debian arm64 sysroot
# that ci/cross.sh prepares (build-aarch64/sysroot by default; the host's
# /usr cannot hold arm64 -dev packages beside its own).  pkg-config reads
# only the sysroot's .pc files.  MARCH replaces -march=native (which names
# the build machine, not the target) in every build.
CROSS     ?=
TRIPLE    := $(if $(CROSS),$(patsubst %-,%,$(CROSS)),$(shell $(CC) -dumpmachine 2>/dev/null))
ifneq ($(CROSS),)
CROSS_ARCH:= $(firstword $(subst -, ,$(TRIPLE)))
BUILD     := build-$(CROSS_ARCH)$(if $(filter 1,$(SAN)),-san)$(if $(filter 1,$(MEMCHECK)),-memcheck)
CC        := $(CROSS)gcc
SYSROOT   ?= build-$(CROSS_ARCH)/sysroot
MARCH     ?= $(if $(filter aarch64,$(CROSS_ARCH)),-mcpu=cortex-a76)
OPT       := $(filter-out -march=native -mtune=native,$(OPT)) $(if $(filter 1,$(MEMCHECK)),,$(MARCH))
SYSROOT_FLAGS := --sysroot=$(abspath $(SYSROOT))
PKG_CONFIG:= PKG_CONFIG_SYSROOT_DIR=$(abspath $(SYSROOT)) PKG_CONFIG_PATH= \
             PKG_CONFIG_LIBDIR=$(abspath $(SYSROOT))/usr/lib/$(TRIPLE)/pkgconfig:$(abspath $(SYSROOT))/usr/share/pkgconfig pkg-config
DEPS_CHECK:= sh ci/cross.sh $(SYSROOT)
# The sysroot exists before pkg-config is asked about it.
ifeq ($(filter clean format format-check,$(MAKECMDGOALS)),)
$(shell sh ci/cross.sh $(SYSROOT) >&2)
endif
else ifneq ($(MARCH),)
OPT       := $(filter-out -march=native -mtune=native,$(OPT)) $(MARCH)
endif
PKG_CONFIG    ?= pkg-config
SYSROOT_FLAGS ?=
DEPS_CHECK    ?= sh ci/install-deps.sh
# ==== end of cross builds ======================================================

BLAS_CFLAGS := $(shell $(PKG_CONFIG) --cflags openblas 2>/dev/null || echo -I/usr/include/$(TRIPLE)/openblas-pthread)
BLAS_LIBS   := $(shell $(PKG_CONFIG) --libs openblas 2>/dev/null || echo -lopenblas)

CFLAGS  := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -fPIC -fopenmp -fno-math-errno $(OPT) $(SANFLAGS) $(SYSROOT_FLAGS) -Iinclude -Ilib -Imodels -Idatasets -Iharness/cell -Iharness/cmd $(BLAS_CFLAGS) $(EXTRA_CFLAGS)
# Plugins see the method ABI alone (include/ftbench_method.h, ftbench_kit.h).
PLUGIN_CFLAGS := $(filter-out -Ilib -Imodels -Idatasets -Iharness/cell -Iharness/cmd $(BLAS_CFLAGS),$(CFLAGS))
LDLIBS  := $(MALLOC) $(BLAS_LIBS) -ljansson -lpcre2-8 -lpfm -ldl -lpthread -lm
LDFLAGS := -fopenmp $(SANFLAGS) $(SYSROOT_FLAGS) -Wl,--export-dynamic

CORE_SRC    := $(wildcard lib/*.c models/*.c datasets/*.c)
HARNESS_SRC := $(filter-out harness/cmd/main.c,$(wildcard harness/cell/*.c harness/cmd/*.c))
REPORT_SRC  := $(wildcard reports/*.c)
METHOD_DIRS := $(patsubst %/,%,$(dir $(wildcard methods/*/*.c)))
# METHOD_NAMES, not METHODS: `make bench-vs-torch METHODS=lora` is an option.
METHOD_NAMES := $(filter-out kit,$(sort $(notdir $(METHOD_DIRS))))
TEST_SRC    := $(wildcard tests/*.c)

CORE_OBJ    := $(CORE_SRC:%.c=$(BUILD)/%.o)
HARNESS_OBJ := $(HARNESS_SRC:%.c=$(BUILD)/%.o) $(REPORT_SRC:%.c=$(BUILD)/%.o)
TEST_OBJ    := $(TEST_SRC:%.c=$(BUILD)/%.o)
PLUGINS     := $(METHOD_NAMES:%=$(BUILD)/methods/%.so)

BIN         := $(BUILD)/ftbench
TESTBIN     := $(BUILD)/test_ftbench
CORELIB     := $(BUILD)/libftbench_core.a

.PHONY: all bin deps-check test bench bench-core bench-vs-torch oracle clean install fuzz report memcheck format format-check
all: deps-check $(BIN) $(PLUGINS) $(TESTBIN)
# The executable and the plugins alone (what sweep --remote ships).
bin: deps-check $(BIN) $(PLUGINS)

# Installs missing Debian packages when root, else prints the apt-get line.
deps-check:
	@$(DEPS_CHECK)

# Header dependencies are generated by the compiler (-MMD -MP): a header
# change rebuilds only the files that include it.
DEPFLAGS := -MMD -MP
$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(DEPFLAGS) -c $< -o $@
-include $(filter-out $(BUILD)/sysroot/%,$(wildcard $(BUILD)/*/*.d $(BUILD)/*/*/*.d))

# Rebuilt from scratch, also when a source file is removed or renamed (the
# object list is kept in $(CORE_LIST)): `ar r` would keep the old member and
# the link would see its symbols twice.
CORE_LIST := $(BUILD)/.core-objects
ifeq ($(filter clean format format-check,$(MAKECMDGOALS)),)
$(shell mkdir -p $(BUILD) && echo '$(CORE_OBJ)' | cmp -s - $(CORE_LIST) || echo '$(CORE_OBJ)' >$(CORE_LIST))
endif
$(CORELIB): $(CORE_OBJ) $(CORE_LIST)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $(CORE_OBJ)

$(BIN): $(BUILD)/harness/cmd/main.o $(HARNESS_OBJ) $(CORELIB)
	$(CC) $(LDFLAGS) -o $@ $(BUILD)/harness/cmd/main.o $(HARNESS_OBJ) -Wl,--whole-archive $(CORELIB) -Wl,--no-whole-archive $(LDLIBS)

# A plugin is every .c file of its folder (rebuilt when a .h there or a
# public header changes), compiled against include/ only and linked as one
# shared object with the method kit (methods/kit/, a static library: not a
# plugin); its core symbols resolve against the executable that loads it.
KIT_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(wildcard methods/kit/*.c))
KITLIB  := $(BUILD)/libftbench_methodkit.a
$(BUILD)/methods/kit/%.o: methods/kit/%.c
	@mkdir -p $(dir $@)
	$(CC) $(PLUGIN_CFLAGS) $(DEPFLAGS) -c $< -o $@
$(KITLIB): $(KIT_OBJ)
	rm -f $@ && ar rcs $@ $^
.SECONDEXPANSION:
$(BUILD)/methods/%.so: $$(wildcard methods/$$*/*.c methods/$$*/*.h) $(wildcard include/*.h) $(KITLIB)
	@mkdir -p $(dir $@)
	$(CC) $(PLUGIN_CFLAGS) -shared -o $@ $(wildcard methods/$*/*.c) $(KITLIB) -lm

$(TESTBIN): $(TEST_OBJ) $(HARNESS_OBJ) $(CORELIB)
	$(CC) $(LDFLAGS) -o $@ $(TEST_OBJ) $(HARNESS_OBJ) -Wl,--whole-archive $(CORELIB) -Wl,--no-whole-archive -lcriterion $(LDLIBS)

# Fault-injection plugins for the harness tests (tests/plugins/*.c), one .so
# each, built like methods; `make test` passes their directory to the tests.
TEST_PLUGINS := $(patsubst tests/plugins/%.c,$(BUILD)/tests/plugins/%.so,$(wildcard tests/plugins/*.c))
$(BUILD)/tests/plugins/%.so: tests/plugins/%.c $(wildcard tests/plugins/*.h) $(wildcard include/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(PLUGIN_CFLAGS) -shared -o $@ $< -lm

# ci/check-layers.sh: no folder includes upwards (docs/HARNESS.md, Source layout).
test: all $(TEST_PLUGINS)
	sh ci/check-layers.sh
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

# make bench reports the run it made, and only that run: the sweep's last
# stdout line names its results file; the run directory is kept in
# $(LAST_BENCH) for a later `make report`.  The report goes to <run>/report.
# BENCH_ARGS: more sweep options (e.g. "--model tiny --seqs 32,64 --out DIR").
# HOST=user@pi5.local runs the sweep on that device over ssh (sweep --remote,
# docs/DEVICES.md); SSH_OPTS="-p 2222 -i KEY" are passed to ssh.
HOST      ?=
SSH_OPTS  ?=
LAST_BENCH := $(BUILD)/last-bench-run
bench: all
	./$(BIN) sweep --device $(DEVICE) --sweep $(SWEEP) --methods-dir $(BUILD)/methods $(if $(HOST),--remote $(HOST)) $(if $(SSH_OPTS),--ssh-opt "$(SSH_OPTS)") $(BENCH_ARGS) >$(LAST_BENCH).out; \
	  rc=$$?; cat $(LAST_BENCH).out; [ $$rc -eq 0 ] || exit $$rc; \
	  sed -n 's|^records: \(.*\)/results\.jsonl$$|\1|p' $(LAST_BENCH).out >$(LAST_BENCH); \
	  [ -s $(LAST_BENCH) ] || { echo "make bench: the sweep named no results file" >&2; exit 1; }
	./$(BIN) report "$$(cat $(LAST_BENCH))" $(REPORT_ARGS)

# make report RESULTS="results/host/default-0123… results/rpi5-8gb/…" names
# what goes in (run directories, device directories, results.jsonl or
# fidelity.jsonl files; RESULTS=results merges everything); without it, the
# run of the last `make bench`.  REPORT_OUT: where (default: <dir>/report for
# one directory, results/report for several).
RESULTS    ?=
REPORT_OUT ?=
report: $(BIN)
	@set -e; src="$(RESULTS)"; \
	if [ -z "$$src" ]; then \
	  if [ -s $(LAST_BENCH) ]; then src=$$(cat $(LAST_BENCH)); echo "make report: the run of the last make bench ($$src); RESULTS=\"dir ...\" names others"; \
	  else echo "make report: name the results: make report RESULTS=\"dir ...\" (RESULTS=results merges every run); runs here:" >&2; \
	    find results -name results.jsonl -printf '  %h\n' 2>/dev/null | sort >&2; exit 2; fi; \
	fi; \
	out="$(REPORT_OUT)"; set -- $$src; \
	if [ -z "$$out" ] && [ $$# -gt 1 ]; then out=results/report; fi; \
	./$(BIN) report "$$@" $${out:+--out "$$out"} $(REPORT_ARGS)

bench-core: all
	./$(BIN) bench-core --model qwen2.5-0.5b --seq 512 --batch 1

# ftbench against a PyTorch CPU implementation of the same model and method,
# same OpenBLAS kernel and threads (tests/bench/bench_vs_torch.py; docs/
# BENCHMARKS.md "Against PyTorch").  Installs python3-torch when run as root.
# Options (defaults in the script): MODELS="qwen2.5-0.5b smollm2-135m"
# METHODS="full lora gc mezo" SEQ=512 STEPS=3 WARMUP=1 THREADS= (ftbench's)
# CHECK_MODELS="tiny tiny-tied" (loss check; empty: none) CORETYPE= (an
# OPENBLAS_CORETYPE for both; the environment's is not used) OUT=build/bench-vs-torch
#   make bench-vs-torch MODELS=tiny SEQ=64 STEPS=2
VS_TORCH_ARGS = $(strip $(if $(MODELS),--models "$(MODELS)") $(if $(METHODS),--methods "$(METHODS)") \
  $(if $(SEQ),--seq $(SEQ)) $(if $(STEPS),--steps $(STEPS)) $(if $(WARMUP),--warmup $(WARMUP)) \
  $(if $(THREADS),--threads $(THREADS)) $(if $(CORETYPE),--coretype $(CORETYPE)) $(if $(OUT),--out "$(OUT)") \
  $(if $(filter undefined,$(origin CHECK_MODELS)),,--check-models "$(CHECK_MODELS)"))
bench-vs-torch: bin
	sh tests/bench/bench_vs_torch.sh --bin $(BIN) --methods-dir $(BUILD)/methods $(VS_TORCH_ARGS)

oracle:
	/usr/bin/python3 tests/oracle/gen_oracle.py tests/oracle/fixtures
	/usr/bin/python3 tests/oracle/gen_lars.py tests/oracle/fixtures

# The installed ftbench finds its methods and device profiles from its own
# path (bin/../lib/ftbench/methods, bin/../share/ftbench/profiles).
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/ftbench/methods $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 755 $(BIN) $(DESTDIR)$(PREFIX)/bin/ftbench
	install -m 644 include/ftbench_method.h include/ftbench_kit.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 $(KITLIB) $(DESTDIR)$(PREFIX)/lib/
	install -m 755 $(PLUGINS) $(DESTDIR)$(PREFIX)/lib/ftbench/methods/
	install -d $(DESTDIR)$(PREFIX)/share/ftbench/profiles
	install -m 644 $(wildcard profiles/*.profile) $(DESTDIR)$(PREFIX)/share/ftbench/profiles/
	sed -e 's|@PREFIX@|$(PREFIX)|g' ci/ftbench.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/ftbench.pc

clean:
	rm -rf build build-san build-memcheck
	rm -rf $(filter-out %/sysroot %/apt-arm64,$(wildcard build-aarch64*/*)) # keeps ci/cross.sh's sysroot

# One style for every C file (.clang-format); format-check lists what differs.
FORMAT_FILES = $(shell git ls-files '*.c' '*.h' 2>/dev/null)
format:
	clang-format -i $(FORMAT_FILES)
format-check:
	@clang-format --dry-run --Werror $(FORMAT_FILES) && echo "format-check: clean"

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
FUZZ_CFLAGS     := -std=c11 -D_GNU_SOURCE -fopenmp -O1 -g $(FUZZ_SANFLAGS) -Iinclude -Ilib -Imodels -Idatasets -Iharness/cell -Iharness/cmd $(BLAS_CFLAGS)
FUZZ_LDLIBS     := $(BLAS_LIBS) -ljansson -lpcre2-8 -lpfm -ldl -lpthread -lm
FUZZ_OBJ        := $(patsubst %.c,$(FUZZ_BUILD)/%.o,$(CORE_SRC) $(HARNESS_SRC) $(REPORT_SRC))
FUZZ_LIB        := $(FUZZ_BUILD)/libftbench_fuzz.a
FUZZ_BINS       := $(FUZZ_NAMES:%=$(FUZZ_BUILD)/fuzz_%)
FUZZ_HEADERS    := $(wildcard include/*.h lib/*.h models/*.h datasets/*.h harness/*/*.h reports/*.h)

.PHONY: fuzz fuzz-ci fuzz-build fuzz-corpus fuzz-clean
fuzz-build: $(FUZZ_BINS)

# The replay test #includes the targets' files: rebuild it when they change.
$(BUILD)/tests/test_fuzz_regressions.o: $(wildcard tests/fuzz/*.c tests/fuzz/*.h)

$(FUZZ_BUILD)/%.o: %.c $(FUZZ_HEADERS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_LIB): $(FUZZ_OBJ)
	rm -f $@ && ar rcs $@ $^

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
