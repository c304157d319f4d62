# Kernel loader + guest image tooling: LZ4 (bzImage payloads) and zlib (gzip payloads, initramfs).
LDLIBS += -llz4 -lz -lcrypto
