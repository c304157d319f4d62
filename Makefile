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
LDFLAGS := $(SANFLAGS)
LDLIBS  := -ljansson -lpthread -lseccomp

# Every folder of the VMM library; a later subsystem adds its folder here.
VMM_DIRS := util core x86 mem disk devices agent ctl loader image snapshot fork uffd jail doctor
VMM_SRC  := $(foreach d,$(VMM_DIRS),$(wildcard src/$(d)/*.c))
CLI_SRC  := $(wildcard src/cli/*.c)
VMM_OBJ  := $(VMM_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
LIB      := $(BUILD)/libforkvm.a

all: $(BUILD)/forkvm

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(LIB): $(VMM_OBJ) $(BUILD)/probe_blob.o
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/forkvm: $(CLI_OBJ) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(LIB) $(LDLIBS)

include mk/probe.mk
-include mk/extra-*.mk
include mk/tests.mk

# README's first command: dependencies, build, demo.
setup:
	scripts/install-deps.sh
	$(MAKE) all
	scripts/demo.sh

bench: all
	bench/run.sh

clean:
	rm -rf build build-san

.PHONY: all clean setup bench
-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
