# Snapshots: XXH64 checksums in the vmstate container.
LDLIBS += -lxxhash
