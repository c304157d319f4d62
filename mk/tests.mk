# Unit tests: tests/unit/test_*.c, each a cmocka binary linked against libforkvm.
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

$(BUILD)/tests/%: tests/unit/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LINK_LIBS) $(LDFLAGS) $(LDLIBS) -lcmocka

# Test tools: small programs the integration tests call.
TOOL_SRC := $(wildcard tests/tools/*.c)
TOOL_BIN := $(TOOL_SRC:tests/tools/%.c=$(BUILD)/tools/%)

$(BUILD)/tools/%: tests/tools/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LINK_LIBS) $(LDFLAGS) $(LDLIBS)

# Extra test binaries (other folders' fragments append to EXTRA_TEST_BINS).
tests: $(BUILD)/forkvm $(VMM_BIN) $(UNIT_BIN) $(TOOL_BIN) $(EXTRA_TEST_BINS) $(EXTRA_BINS)

# The one test command: README, .ci/run and developers all call this.
test:
	tests/run

.PHONY: tests test
