# Guest agent: the static forkvm-agent binary, its cmocka tests and the libFuzzer harness.
AGENT_DIR       := guests/agent
AGENT_CORE_SRC  := $(addprefix src/util/,base64.c errmsg.c fdio.c tartree.c ustar.c)
AGENT_SRC       := $(wildcard $(AGENT_DIR)/*.c) $(AGENT_CORE_SRC)
# The pure part (framing, validation, encoding): unit tested and fuzzed without sockets
# (tartree does file I/O, but only where a test points it).
AGENT_PURE_SRC  := $(addprefix $(AGENT_DIR)/,frame.c log.c reply.c request.c request_exec.c \
                     request_eval.c eval_proto.c) $(AGENT_CORE_SRC)
AGENT_OBJ       := $(AGENT_SRC:%.c=$(BUILD)/%.o)
AGENT_PURE_OBJ  := $(AGENT_PURE_SRC:%.c=$(BUILD)/%.o)
AGENT_TEST_SRC  := $(wildcard $(AGENT_DIR)/tests/test_agent_*.c)
AGENT_TEST_BIN  := $(AGENT_TEST_SRC:$(AGENT_DIR)/tests/%.c=$(BUILD)/tests/%)
AGENT_BIN       := $(BUILD)/forkvm-agent
AGENT_FUZZ      := $(BUILD)/fuzz/fuzz_agent_frame
FUZZ_CC         ?= clang

# The guest has no libraries, so the agent links statically. ASan/UBSan need their
# dynamic runtimes, so the SAN build links it dynamically (it only runs on the host).
ifeq ($(SAN),1)
AGENT_LINK := $(LDFLAGS)
AGENT_LIBS := -ljansson
else
AGENT_LINK := -static
AGENT_LIBS := -l:libjansson.a
endif

# The eval driver (a Python program) goes into the agent as a C array: eval_ctx.c includes
# the generated eval_driver.inc, the file's bytes as "0x..," plus a terminating 0x00.
AGENT_DRIVER_INC := $(BUILD)/$(AGENT_DIR)/eval_driver.inc

$(AGENT_DRIVER_INC): $(AGENT_DIR)/eval_driver.py
	@mkdir -p $(dir $@)
	{ od -An -v -tx1 $< | sed -e 's/ \([0-9a-f][0-9a-f]\)/0x\1,/g'; echo 0x00; } >$@.tmp
	mv $@.tmp $@

$(BUILD)/$(AGENT_DIR)/eval_ctx.o: $(AGENT_DRIVER_INC)
$(BUILD)/$(AGENT_DIR)/eval_ctx.o: CFLAGS += -I$(BUILD)/$(AGENT_DIR)

$(AGENT_BIN): $(AGENT_OBJ)
	$(CC) $(AGENT_LINK) -o $@ $^ $(AGENT_LIBS)

# A static pattern rule, so it wins over tests.mk's tests/unit/%.c pattern.
$(AGENT_TEST_BIN): $(BUILD)/tests/%: $(AGENT_DIR)/tests/%.c $(AGENT_PURE_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -I$(AGENT_DIR) -o $@ $< $(AGENT_PURE_OBJ) $(LDFLAGS) -ljansson -lcmocka

# libFuzzer harness over the frame decoder and request validator (clang only).
$(AGENT_FUZZ): $(AGENT_DIR)/tests/fuzz_frame.c $(AGENT_PURE_SRC) $(wildcard $(AGENT_DIR)/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) -std=gnu17 -Wall -Wextra -Wshadow -Wno-unused-parameter -g -O1 -D_GNU_SOURCE \
		-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
		-I$(AGENT_DIR) -Isrc -o $@ $< $(AGENT_PURE_SRC) -ljansson

agent: $(AGENT_BIN)
fuzz-agent: $(AGENT_FUZZ)

EXTRA_BINS      += $(AGENT_BIN)
EXTRA_TEST_BINS += $(AGENT_TEST_BIN)

.PHONY: agent fuzz-agent
