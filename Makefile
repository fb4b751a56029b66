# helexa — thin wrapper over CMake/CTest. `make demo` and `make test` are the
# README's two commands; both install their dependencies the first time.
JOBS        ?= $(shell nproc)
BUILD       ?= build
CUDA_ARCHS  ?= 86;89;90;120
CMAKE_FLAGS ?=
DEPS_STAMP  := .venv/.helexa-test-deps

.PHONY: all deps build test unit asan format format-check fuzz bench demo clean gpu

all: build

$(DEPS_STAMP): scripts/install-deps
	scripts/install-deps

deps:
	scripts/install-deps

build: $(DEPS_STAMP)
	cmake -S . -B $(BUILD) -G Ninja -DHELEXA_CUDA_ARCHS="$(CUDA_ARCHS)" $(CMAKE_FLAGS)
	cmake --build $(BUILD) -j $(JOBS)

# Unit + end-to-end tests, then the same suite under ASan+UBSan, then format.
test: unit asan format-check
	@echo "make test: all passed"

unit: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 1800

asan: $(DEPS_STAMP)
	cmake -S . -B build-asan -G Ninja -DHELEXA_ASAN=ON -DHELEXA_CUDA=OFF -DCMAKE_BUILD_TYPE=Debug \
	  -DCMAKE_C_COMPILER=clang $(CMAKE_FLAGS)
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j $(JOBS) --timeout 3600

FORMAT_FILES = $(shell git ls-files --cached --others --exclude-standard '*.c' '*.h' '*.cu' '*.cuh' 2>/dev/null)
format:
	clang-format -i $(FORMAT_FILES)

format-check:
	@clang-format --dry-run -Werror $(FORMAT_FILES) && echo "format: clean"

# libFuzzer targets (clang). Run one with e.g. build-fuzz/bin/fuzz-toml fuzz/corpus/toml
fuzz: $(DEPS_STAMP)
	cmake -S . -B build-fuzz -G Ninja -DHELEXA_FUZZ=ON -DHELEXA_CUDA=OFF -DBUILD_TESTING=OFF \
	  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ $(CMAKE_FLAGS)
	cmake --build build-fuzz -j $(JOBS)
	scripts/fuzz-smoke build-fuzz/bin

bench: build
	bench/run-cpu

demo: build
	scripts/demo

# Everything the GPU machine needs in one call (see scripts/gpu-run).
gpu:
	scripts/gpu-run

clean:
	rm -rf build build-asan build-fuzz
