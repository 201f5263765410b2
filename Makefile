# The two entry points the README opens with:
#   make run   - install what is missing, build, and run encode -> inspect -> decode on the sample
#   make test  - the same set-up, then the whole test suite (what CI runs)
BUILD ?= build
JOBS  ?= $(shell nproc)
CMAKE_FLAGS ?=
SAMPLE ?= samples/smollm2-135m-512.safetensors

.PHONY: run test setup build clean

setup:
	@scripts/setup $(SETUP_FLAGS)

build: setup
	@cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

run: build
	@scripts/demo $(BUILD)/apps/skv/skv $(SAMPLE)

test: SETUP_FLAGS = --fuzz
test: CMAKE_FLAGS += -DSKV_WERROR=ON
test: build
	@scripts/test $(BUILD)

clean:
	rm -rf $(BUILD) build-fuzz
