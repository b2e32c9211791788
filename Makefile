# The two commands (see README.md):
#   make demo   install what is missing, build, run a real job end to end
#   make test   install what is missing, build, run the whole suite, then the
#               suite again under AddressSanitizer + UndefinedBehaviorSanitizer
# and:
#   make bench [BENCH=e2e]   run the benchmarks in tests/bench/ (PostgreSQL in the
#                            stack's --unsafe-fast mode: they measure shoal, not fsync;
#                            the test packages too: `https` calls nghttpd)
#   make fuzz [FUZZ_SECONDS=60]  build the libFuzzer targets of tests/fuzz with
#                            clang (in build-fuzz) and run each that long
#   make format-check        clang-format --dry-run --Werror over the sources

BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CTEST_ARGS ?=
BENCH      ?=
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
# make test fuzzes briefly: about a minute for the four targets
TEST_FUZZ_SECONDS ?= 15

SOURCES = $(shell git ls-files '*.c' '*.h' 2>/dev/null || find . -name '*.[ch]' -not -path './build*')

.PHONY: all deps test-deps build build-asan build-fuzz demo test test-unit test-asan fuzz bench format-check clean

all: build

deps:
	@bash scripts/install-deps.sh --run

test-deps:
	@bash scripts/install-deps.sh --test

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

build-asan: test-deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DSHOAL_SANITIZE=ON >/dev/null
	cmake --build $(ASAN_BUILD) -j $(JOBS)

demo: build
	$(BUILD)/shoal dev --demo

test: test-deps build format-check
	cd $(BUILD) && ctest -j $(JOBS) --output-on-failure --timeout 600 $(CTEST_ARGS)
	$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$(TEST_FUZZ_SECONDS)
	$(MAKE) --no-print-directory test-asan

# The sanitizer run: unit and integration tests with every binary (the
# spawned scheduler, workers and simulator too) built with ASan+UBSan. It
# leaves out the longest scenarios (ctest label long, listed in
# tests/CMakeLists.txt), which the plain run has just passed; set
# ASAN_CTEST_ARGS= to run them under the sanitizers too.
ASAN_CTEST_ARGS ?= -LE long
test-asan: build-asan
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest -j $(JOBS) --output-on-failure --timeout 900 $(ASAN_CTEST_ARGS) $(CTEST_ARGS)

# The fuzz build: clang, libFuzzer, ASan and UBSan; only the fuzz targets.
build-fuzz: test-deps
	cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
	  -DSHOAL_FUZZ=ON >/dev/null
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzzers

fuzz: build-fuzz
	bash scripts/fuzz.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

test-unit: build
	cd $(BUILD) && ctest -L unit --output-on-failure

bench: test-deps build
	@set -e; for b in $(BUILD)/tests/bench-*; do \
	  name=$${b##*/bench-}; \
	  if [ -z "$(BENCH)" ] || [ "$(BENCH)" = "$$name" ]; then \
	    echo "== bench $$name"; SHOAL_UNSAFE_FAST=1 $$b; fi; done

format-check:
	clang-format --dry-run --Werror $(SOURCES)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
