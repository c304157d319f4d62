# forkvm build: the VMM (one binary with the probe guest embedded), guests, tests.
CC      ?= gcc
SAN     ?= 0
BUILD   ?= build
ifeq ($(SAN),1)
BUILD   := build-san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
endif

CFLAGS  := -std=gnu17 -Wall -Wextra -Wshadow -Wno-unused-parameter -O2 -g -D_GNU_SOURCE \
           -Isrc -Iguests -MMD -MP $(SANFLAGS) $(EXTRA_CFLAGS)
# Symbols bound at start (and read-only after): a forked cow child never runs the dynamic
# linker's lookups for a function its source had not called yet (docs/PERFORMANCE.md).
LDFLAGS := -Wl,-z,now -Wl,-z,relro $(SANFLAGS)
LDLIBS  := -ljansson -lpthread -lseccomp -lmicrohttpd -lsqlite3

# Every folder of the VMM library; a later subsystem adds its folder here.
VMM_DIRS := util net core x86 mem disk devices agent builder ctl loader snapshot fork uffd jail \
            doctor daemon
VMM_SRC  := $(foreach d,$(VMM_DIRS),$(wildcard src/$(d)/*.c))
# Building guest images (kernels, initramfs, root filesystems) is a tool, not the VMM: its own
# library, linked by the CLI and the tests (doctor reads an image's manifest through it).
IMAGE_SRC := $(wildcard src/image/*.c)
CLI_SRC  := $(filter-out src/cli/vmm_main.c,$(wildcard src/cli/*.c))
VMM_OBJ  := $(VMM_SRC:%.c=$(BUILD)/%.o)
IMAGE_OBJ := $(IMAGE_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
VMM_LIB  := $(BUILD)/libforkvm.a
IMAGE_LIB := $(BUILD)/libforkvm-image.a
LIB      := $(VMM_LIB) $(IMAGE_LIB)
# What links against both: they call each other (image uses util; doctor uses image).
LINK_LIBS := -Wl,--start-group $(LIB) -Wl,--end-group
# The VM process (src/cli/vmm_main.c): the CLI's objects from an archive, so only what `run`
# reaches is linked, and --as-needed drops every library it does not call.
CLI_LIB  := $(BUILD)/libforkvm-cli.a
VMM_BIN  := $(BUILD)/vmm/forkvm

all: $(BUILD)/forkvm $(VMM_BIN)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(VMM_LIB): $(VMM_OBJ) $(BUILD)/probe_blob.o
	@rm -f $@
	ar rcs $@ $^

$(IMAGE_LIB): $(IMAGE_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/forkvm: $(CLI_OBJ) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(LINK_LIBS) $(LDLIBS)

$(CLI_LIB): $(filter-out $(BUILD)/src/cli/main.o,$(CLI_OBJ))
	@rm -f $@
	ar rcs $@ $^

# Its libraries linked statically where Debian ships the archive: every shared library is ~5
# mappings that each fork of a VMM copies (docs/PERFORMANCE.md); libc stays shared.
VMM_STATIC_LIBS := -ljansson -lseccomp -llz4 -lzstd -llzma -lz -lcrypto -lxxhash
$(VMM_BIN): $(BUILD)/src/cli/vmm_main.o $(CLI_LIB) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -Wl,--as-needed -o $@ $< -Wl,--start-group $(CLI_LIB) $(LIB) -Wl,--end-group \
		-Wl,-Bstatic $(VMM_STATIC_LIBS) -Wl,-Bdynamic $(filter-out $(VMM_STATIC_LIBS),$(LDLIBS))

include mk/probe.mk
-include mk/extra-*.mk
include mk/tests.mk

# README's first command: dependencies, build, demo.
setup:
	scripts/install-deps.sh
	$(MAKE) all
	scripts/demo.sh

bench: all tests
	bench/run.sh

# The CI check of docs/PERFORMANCE.md (tests/run runs it too): < 2 min.
bench-quick: all tests
	/usr/bin/python3 bench/bench_limits.py --quick

clean:
	rm -rf build build-san

.PHONY: all clean setup bench bench-quick
-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
