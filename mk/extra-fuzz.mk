# libFuzzer harnesses over every parser that takes untrusted bytes (tests/fuzz/, clang only).
# The VMM library is rebuilt with the fuzz flags into its own folder, build-fuzz/ (whatever
# BUILD is); each harness links against that archive, so it pulls in only what it needs.
# tests/integration/test_fuzz.py runs each harness for a bounded time from its seed corpus.
FUZZ_DIR      := build-fuzz
FUZZ_CLANG    ?= clang
# Function/data sections + --gc-sections: a harness links only what it reaches, so code it
# never calls (the embedded probe guest, handlers mid-edit) cannot break its link.
FUZZ_CFLAGS   := -std=gnu17 -Wall -Wextra -Wno-unused-parameter -g -O1 -D_GNU_SOURCE \
                 -fno-omit-frame-pointer -fno-sanitize-recover=undefined \
                 -ffunction-sections -fdata-sections -Isrc -Iguests
FUZZ_SAN      := -fsanitize=address,undefined
FUZZ_LIB      := $(FUZZ_DIR)/libforkvm-fuzz.a
FUZZ_LIB_OBJ  := $(VMM_SRC:%.c=$(FUZZ_DIR)/%.o) $(IMAGE_SRC:%.c=$(FUZZ_DIR)/%.o)
FUZZ_HARNESS  := $(filter-out tests/fuzz/fuzz_stubs.c,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS     := $(FUZZ_HARNESS:tests/fuzz/%.c=$(FUZZ_DIR)/%) $(FUZZ_DIR)/fuzz_agent_frame
# The agent's pure frame/request code (guests/agent), as mk/extra-agent.mk's own harness uses.
FUZZ_AGENT_SRC := $(addprefix guests/agent/,frame.c log.c reply.c request.c request_exec.c \
                    request_eval.c) src/util/base64.c src/util/errmsg.c

# Library objects: instrumented for coverage (fuzzer-no-link) and sanitizers.
$(FUZZ_DIR)/src/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(FUZZ_CLANG) $(FUZZ_CFLAGS) -MMD -MP $(FUZZ_SAN) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_LIB): $(FUZZ_LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(FUZZ_DIR)/fuzz_stubs.o: tests/fuzz/fuzz_stubs.c
	@mkdir -p $(dir $@)
	$(FUZZ_CLANG) $(FUZZ_CFLAGS) -c $< -o $@

$(FUZZ_DIR)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_DIR)/fuzz_stubs.o $(FUZZ_LIB)
	@mkdir -p $(dir $@)
	$(FUZZ_CLANG) $(FUZZ_CFLAGS) -MMD -MP -MF $@.d $(FUZZ_SAN) -fsanitize=fuzzer -Itests/fuzz \
		-Wl,--gc-sections -o $@ $< $(FUZZ_DIR)/fuzz_stubs.o $(FUZZ_LIB) $(LDLIBS)

# The agent frame harness lives with the agent (guests/agent/tests/fuzz_frame.c).
$(FUZZ_DIR)/fuzz_agent_frame: guests/agent/tests/fuzz_frame.c $(FUZZ_AGENT_SRC) \
		$(wildcard guests/agent/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CLANG) $(FUZZ_CFLAGS) $(FUZZ_SAN) -fsanitize=fuzzer -Iguests/agent -o $@ $< \
		$(FUZZ_AGENT_SRC) -ljansson

fuzz-build: $(FUZZ_BINS)
# Bounded run of every harness (FORKVM_FUZZ_SECONDS each, default 30) plus the regressions.
fuzz: fuzz-build
	/usr/bin/python3 -m pytest -v -p no:cacheprovider tests/integration/test_fuzz.py

clean-fuzz:
	rm -rf $(FUZZ_DIR)

.PHONY: fuzz fuzz-build clean-fuzz
-include $(shell find $(FUZZ_DIR) -name '*.d' 2>/dev/null)
