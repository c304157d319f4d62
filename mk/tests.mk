# Unit tests: tests/unit/test_*.c, each a cmocka binary linked against libforkvm.
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

$(BUILD)/tests/%: tests/unit/%.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LIB) $(LDFLAGS) $(LDLIBS) -lcmocka

# Extra test binaries (other folders' fragments append to EXTRA_TEST_BINS).
tests: $(BUILD)/forkvm $(UNIT_BIN) $(EXTRA_TEST_BINS) $(EXTRA_BINS)

# The one test command: README, .ci/run and developers all call this.
test:
	tests/run

.PHONY: tests test
