#!/usr/bin/env python3
"""Write the seed corpora of the libFuzzer harnesses (tests/fuzz/corpus/NAME/).

Small valid inputs plus a few edge cases, in each harness's input format (see the comment at
the top of each tests/fuzz/fuzz_*.c). The vmstate and layer seeds need the sizes of this
build's KVM structures and XXH64, so those harnesses write their own (FORKVM_FUZZ_WRITE_SEEDS)
when built (make fuzz-build). Deterministic: rerunning rewrites the same files.

    tests/fuzz/make_corpus.py            # all corpora (harness-written ones if built)
    tests/fuzz/make_corpus.py ctl_request payload
"""
import gzip
import lzma
import os
import re
import shutil
import struct
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")
FUZZ_BUILD = os.path.join(ROOT, "build-fuzz")


def out(name):
    d = os.path.join(CORPUS, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)

    def write(seed, data):
        with open(os.path.join(d, seed), "wb") as f:
            f.write(data)
    return write


# ---- HPL1 hot-page lists and FKAL access logs (fuzz_hotlist.c) ----

def uvarint(v):
    b = bytearray()
    while v >= 0x80:
        b.append(v & 0x7F | 0x80)
        v >>= 7
    b.append(v)
    return bytes(b)


def hotlist():
    w = out("hotlist")

    def hdr(mode, pages0, pages1=0):
        return bytes([mode]) + struct.pack("<II", pages0, pages1)

    def hpl(entries):
        return b"HPL1" + uvarint(len(entries)) + b"".join(uvarint(r) + uvarint(p) for r, p in entries)

    def alog(pages, version=1):
        body = b"FKAL" + struct.pack("<IQ", version, len(pages)) + b"".join(struct.pack("<Q", p) for p in pages)
        return body + b"\0" * 8  # checksum fixed up by the harness (mode bit 1)

    w("hpl-empty", hdr(0, 256) + hpl([]))
    w("hpl-one-region", hdr(0, 256) + hpl([(0, 0), (0, 1), (0, 7), (0, 255)]))
    w("hpl-two-regions", hdr(0x80, 786432, 4096) + hpl([(0, 3), (0, 786431), (1, 0), (1, 4095)]))
    w("hpl-big-varint", hdr(0, 0xFFFFFFFF) + hpl([(0, 0xFFFFFFFE)]))
    w("hpl-unsorted", hdr(0, 256) + hpl([(0, 5), (0, 3)]))
    w("hpl-outside", hdr(0, 16) + hpl([(0, 16)]))
    w("hpl-overlong-varint", hdr(0, 256) + b"HPL1" + b"\x81" + b"\xff" * 11)
    w("hpl-trailing", hdr(0, 256) + hpl([(0, 1)]) + b"\0")
    w("alog-three", hdr(3, 1024) + alog([0, 17, 1023]))
    w("alog-empty", hdr(3, 1024) + alog([]))
    w("alog-outside", hdr(3, 16) + alog([16]))
    w("alog-bad-checksum", hdr(1, 1024) + alog([1, 2]))
    w("alog-version-2", hdr(3, 1024) + alog([1], version=2))


# ---- control requests (fuzz_ctl_request.c), from the command table ----

def ctl_request():
    w = out("ctl_request")
    src = open(os.path.join(ROOT, "src/ctl/ctl_commands.c")).read()
    src = src.replace("VCPU_FIELD", '{ "vcpu", CTL_U64, false }')
    table = src[src.index("ctl_commands[] = {"):]
    table = table[:table.index("\n};")]
    examples = {"CTL_U64": 1, "CTL_STR": "x", "CTL_BOOL": True}
    import json
    n = 0
    for chunk in re.split(r'\n\t\{ (?=")', table)[1:]:
        name = re.match(r'"([^"]+)"', chunk).group(1)
        fields = re.findall(r'\{ "(\w+)", (CTL_U64|CTL_STR|CTL_BOOL)', chunk)
        req = {"cmd": name, "id": n}
        req.update({f: examples[t] for f, t in fields})
        w("cmd-%s" % name, json.dumps(req).encode())
        w("cmd-%s-bare" % name, json.dumps({"cmd": name}).encode())
        n += 1
    w("not-object", b'["status"]')
    w("no-cmd", b'{"id":1}')
    w("unknown-cmd", b'{"cmd":"fly"}')
    w("unknown-field", b'{"cmd":"status","bogus":1}')
    w("wrong-types", b'{"cmd":"memhash","gpa":"0","len":-1}')
    w("big-int", b'{"cmd":"memhash","gpa":18446744073709551615,"len":1e300}')
    w("duplicate-key", b'{"cmd":"status","cmd":"stop"}')
    w("nul-in-string", b'{"cmd":"sta\\u0000tus"}')
    w("truncated", b'{"cmd":"snapshot","dir":"/tm')
    w("deep", b"[" * 200 + b"]" * 200)


# ---- virtqueues (fuzz_virtq.c) ----

def virtq():
    w = out("virtq")
    RAM = 16 * 1024

    def desc(addr, ln, flags, nxt):
        return struct.pack("<QIHH", addr, ln, flags, nxt)

    def image(num_log2, descs, avail_ring, avail_idx, desc_gpa=0, avail_gpa=0x100, used_gpa=0x200,
              last_avail=0, used_idx=0, flags=0, max_log2=8, buffers=()):
        ram = bytearray(RAM)

        def at(gpa):  # region 0: GPA 0..8K at 0; region 1: GPA 0x10000.. at 8K
            return gpa if gpa < 0x2000 else gpa - 0x10000 + 0x2000
        d = b"".join(desc(*x) for x in descs)
        ram[at(desc_gpa):at(desc_gpa) + len(d)] = d
        a = struct.pack("<HH", flags, avail_idx) + b"".join(struct.pack("<H", h) for h in avail_ring)
        ram[at(avail_gpa):at(avail_gpa) + len(a)] = a
        for gpa, data in buffers:
            ram[at(gpa):at(gpa) + len(data)] = data
        hdr = bytes([num_log2 | max_log2 << 4]) + struct.pack("<IIIHH", desc_gpa, avail_gpa, used_gpa,
                                                              last_avail, used_idx)
        return hdr + bytes(ram).rstrip(b"\0")

    NEXT, WRITE, INDIRECT = 1, 2, 4
    # A vsock-like TX chain (read-only) and an RX chain (header readable, then writable).
    w("two-chains", image(3, [(0x1000, 16, NEXT, 1), (0x1100, 32, WRITE, 0), (0x1200, 8, 0, 0)],
                          [0, 2], 2, buffers=[(0x1000, b"hdr" * 5), (0x1200, b"payload!")]))
    w("region-1-rings", image(2, [(0x10800, 64, 0, 0)], [0], 1, desc_gpa=0x10000, avail_gpa=0x10100,
                              used_gpa=0x10200))
    w("cross-region-buffer", image(2, [(0x1F00, 0x200, 0, 0)], [0], 1))
    w("outside-ram", image(2, [(0x4000, 16, 0, 0)], [0], 1))
    w("loop", image(2, [(0x1000, 16, NEXT, 1), (0x1000, 16, NEXT, 0)], [0], 1))
    w("write-then-read", image(2, [(0x1000, 16, WRITE | NEXT, 1), (0x1100, 16, 0, 0)], [0], 1))
    w("indirect", image(2, [(0x1000, 16, INDIRECT, 0)], [0], 1))
    w("head-out-of-table", image(2, [(0x1000, 16, 0, 0)], [9], 1))
    w("too-many-avail", image(2, [(0x1000, 16, 0, 0)], [0], 9))
    w("seventeen-iov", image(5, [(0x1000, 4, NEXT, i + 1) for i in range(16)] + [(0x1000, 4, 0, 0)], [0], 1))
    w("zero-len", image(2, [(0, 0, WRITE, 0)], [0, 0, 0, 0], 4, last_avail=0xFFFE, used_idx=0xFFFF,
                        flags=1))
    w("misaligned-desc", image(2, [], [0], 1, desc_gpa=8))
    w("num-over-max", image(9, [], [0], 1, max_log2=8))


# ---- virtio-blk requests (fuzz_blk.c) ----

def blk():
    """Guest RAM images: 8-entry queue, descriptors at 0, avail at 0x100, used at 0x200."""
    w = out("blk")
    NEXT, WRITE = 1, 2

    def image(chains):
        ram = bytearray(16 * 1024)
        descs, heads = [], []
        for chain in chains:
            heads.append(len(descs))
            for i, (addr, ln, flags) in enumerate(chain):
                nxt = len(descs) + 1 if i + 1 < len(chain) else 0
                descs.append(struct.pack("<QIHH", addr, ln, flags | (NEXT if i + 1 < len(chain) else 0),
                                         nxt))
        d = b"".join(descs)
        ram[0:len(d)] = d
        a = struct.pack("<HH", 0, len(heads)) + b"".join(struct.pack("<H", h) for h in heads)
        ram[0x100:0x100 + len(a)] = a
        return ram

    def hdr(ram, gpa, kind, sector):
        ram[gpa:gpa + 16] = struct.pack("<IIQ", kind, 0, sector)

    ram = image([[(0x1000, 16, 0), (0x1100, 512, 0), (0x1400, 1, WRITE)],
                 [(0x1010, 16, 0), (0x1800, 1024, WRITE), (0x1401, 1, WRITE)]])
    hdr(ram, 0x1000, 1, 3)
    hdr(ram, 0x1010, 0, 2)
    ram[0x1100:0x1300] = b"\xab" * 512
    w("write-then-read", bytes(ram).rstrip(b"\0"))
    ram = image([[(0x1000, 16, 0), (0x1100, 64, WRITE), (0x1400, 1, WRITE)],
                 [(0x1010, 16, 0), (0x1401, 1, WRITE)], [(0x1020, 16, 0), (0x1402, 1, WRITE)]])
    hdr(ram, 0x1000, 8, 0)
    hdr(ram, 0x1010, 4, 0)
    hdr(ram, 0x1020, 11, 0)
    w("get-id-flush-unsupported", bytes(ram).rstrip(b"\0"))
    ram = image([[(0x1000, 16, 0), (0x1100, 512, WRITE), (0x1400, 1, WRITE)]])
    hdr(ram, 0x1000, 0, 127)  # the last sector, then one past the end
    w("last-sector", bytes(ram).rstrip(b"\0"))
    hdr(ram, 0x1000, 0, 128)
    w("past-the-end", bytes(ram).rstrip(b"\0"))
    hdr(ram, 0x1000, 1, (1 << 64) - 1)
    w("sector-overflow", bytes(ram).rstrip(b"\0"))
    ram = image([[(0x1000, 16 + 100, 0), (0x1400, 1, WRITE)]])  # header and odd data together
    hdr(ram, 0x1000, 1, 5)
    w("any-layout-partial", bytes(ram).rstrip(b"\0"))
    ram = image([[(0x1000, 16, 0), (0x1100, 512, 0)], [(0x1000, 8, 0), (0x1400, 1, WRITE)]])
    hdr(ram, 0x1000, 1, 0)
    w("no-status-short-header", bytes(ram).rstrip(b"\0"))
    ram = image([[(0x1000, 16, 0), (0x1F00, 0x200, WRITE), (0x10000, 1, WRITE)]])
    hdr(ram, 0x1000, 0, 1)
    w("cross-region", bytes(ram).rstrip(b"\0"))


# ---- kernels: bzImage and ELF vmlinux (fuzz_kernel.c) ----

def compressors():
    """name -> bytes -> compressed payload, as the kernel's build steps write them."""
    def tool(args):
        def run(data):
            if not shutil.which(args[0]):
                return None
            return subprocess.run(args, input=data, capture_output=True, check=True).stdout
        return run
    return {
        "gzip": lambda d: gzip.compress(d, 9, mtime=0),
        "xz": lambda d: lzma.compress(d, lzma.FORMAT_XZ, check=lzma.CHECK_CRC32),
        "zstd": tool(["zstd", "-q", "-19", "-c"]),
        "lz4": tool(["lz4", "-q", "-l", "-9", "-c"]),
    }


def bzimage(payload, setup_sects=1, version=0x020F, xlf=1, loadflags=1, reloc=1,
            pref=0x1000000, init_size=None, extra=0):
    setup = (setup_sects + 1) * 512
    pm = bytearray(0x200 + len(payload) + extra)
    pm[0x200:0x200 + len(payload)] = payload
    f = bytearray(setup) + pm
    hdr = struct.pack("<BHIHHHHHIHIHHBBHIIIIHBBIIIBBHIIQIIQQIII",
                      setup_sects, 1, len(pm) // 16, 0, 0xFFFF, 0, 0xAA55, 0x6AEB, 0x53726448,
                      version, 0, 0x1000, 0, 0, loadflags, 0, 0x100000, 0, 0, 0, 0, 0, 0, 0,
                      0x7FFFFFFF, 0x200000, reloc, 21, xlf, 2048, 0, 0, 0x200, len(payload), 0,
                      pref, init_size if init_size is not None else len(pm) + 0x10000, 0, 0)
    f[0x1F1:0x1F1 + len(hdr)] = hdr
    return bytes(f)


def elf(segments, entry, notes=b"", phoff=64):
    """ET_EXEC x86-64 with PT_LOAD (paddr, vaddr, filesz, memsz, data) segments and a PT_NOTE."""
    phnum = len(segments) + (1 if notes else 0)
    data_at = phoff + 56 * phnum
    body = bytearray()
    phdrs = b""
    for paddr, vaddr, filesz, memsz, data in segments:
        off = data_at + len(body)
        body += data.ljust(filesz, b"\0")
        phdrs += struct.pack("<IIQQQQQQ", 1, 7, off, vaddr, paddr, filesz, memsz, 0x1000)
    if notes:
        off = data_at + len(body)
        body += notes
        phdrs += struct.pack("<IIQQQQQQ", 4, 4, off, 0, 0, len(notes), len(notes), 4)
    eh = b"\x7fELF" + bytes([2, 1, 1]) + b"\0" * 9 + struct.pack(
        "<HHIQQQIHHHHHH", 2, 62, 1, entry, phoff, 0, 0, 64, 56, phnum, 64, 0, 0)
    return eh + phdrs + bytes(body)


def pvh_note(entry, size=4):
    desc = struct.pack("<I" if size == 4 else "<Q", entry)
    return struct.pack("<III", 4, len(desc), 18) + b"Xen\0" + desc


def kernel():
    w = out("kernel")
    code = b"\xf4" * 64  # hlt
    vm = 0xFFFFFFFF81000000
    w("elf-pvh", b"\1" + elf([(0x100000, vm, 0x40, 0x2000, code)], vm, pvh_note(0x100000)))
    w("elf-linux64", b"\2" + elf([(0x100000, 0x100000, 0x40, 0x40, code),
                                  (0x200000, 0x200000, 0x10, 0x100000, code)], 0x100000))
    w("elf-no-pvh-auto", b"\0" + elf([(0x100000, vm, 0x40, 0x40, code)], vm))
    w("elf-below-1m", b"\2" + elf([(0x1000, 0x1000, 0x40, 0x40, code)], 0x1000))
    w("elf-overlap", b"\2" + elf([(0x100000, 0x100000, 0x40, 0x2000, code),
                                  (0x101000, 0x101000, 0x40, 0x40, code)], 0x100000))
    w("elf-pvh-note-8", b"\1" + elf([(0x100000, 0x100000, 0x40, 0x40, code)], 0x100000,
                                    pvh_note(0x100000, 8)))
    w("elf-truncated-phdrs", b"\2" + elf([(0x100000, 0x100000, 0x40, 0x40, code)], 0x100000)[:100])
    w("elf-big-ram", b"\x80" + elf([(0x1000000, 0x1000000, 0x40, 0x1000000, code)], 0x1000000))
    comp = compressors()
    for name, fn in comp.items():
        p = fn(b"vmlinux " * 64)
        if p is not None:
            w("bzimage-%s" % name, b"\2" + bzimage(p))
    p = comp["gzip"](b"x" * 100)
    w("bzimage-pvh-requested", b"\1" + bzimage(p))
    w("bzimage-setup-sects-0", b"\2" + bzimage(p, setup_sects=0))
    w("bzimage-old-protocol", b"\2" + bzimage(p, version=0x020B))
    w("bzimage-not-64bit", b"\2" + bzimage(p, xlf=0))
    w("bzimage-not-relocatable", b"\x82" + bzimage(p, reloc=0, pref=0x1000000))
    w("bzimage-huge-init-size", b"\2" + bzimage(p, init_size=0xF0000000))
    w("bzimage-truncated", b"\2" + bzimage(p)[:0x300])
    w("boot-sector-only", b"\2" + b"\0" * 0x1FE + b"\x55\xaa")


# ---- compressed payloads (fuzz_payload.c) ----

def payload():
    w = out("payload")
    data = (b"forkvm kernel payload " * 40) + bytes(range(256))
    size = struct.pack("<I", len(data))
    mode = {"dispatch": 0, "lz4": 1, "gzip": 2, "zstd": 3, "xz": 4}
    for name, fn in compressors().items():
        c = fn(data)
        if c is None:
            print("make_corpus: %s not installed, no %s seeds" % (name, name), file=sys.stderr)
            continue
        w("%s" % name, bytes([mode[name]]) + c)
        w("%s-dispatch-sized" % name, b"\0" + c + (size if name in ("zstd", "xz") else b""))
        w("%s-truncated" % name, bytes([mode[name]]) + c[:len(c) // 2])
        if name in ("zstd", "xz"):
            w("%s-bad-size" % name, b"\0" + c + struct.pack("<I", len(data) + 1))
            w("%s-stray" % name, b"\0" + c + b"\0\0")
    w("lz4-empty-stream", b"\1" + struct.pack("<I", 0x184C2102))
    w("lz4-huge-block", b"\1" + struct.pack("<II", 0x184C2102, 0x7FFFFFFF))
    w("unknown", b"\0" + b"BZh91AY&SY")
    w("elf", b"\0\x7fELF")


# ---- cpio writer (fuzz_cpio.c) ----

def cpio():
    w = out("cpio")

    def rec(kind, perm_x, path, data=b""):
        return bytes([kind | perm_x << 2]) + bytes([len(path)]) + path + struct.pack("<H", len(data)) + data
    DIR, FILE, LINK, CHR = 0, 1, 2, 3
    w("initramfs", rec(DIR, 7, b"bin") + rec(FILE, 7, b"bin/busybox", b"\x7fELF....") +
      rec(LINK, 0, b"bin/sh", b"busybox") + rec(DIR, 7, b"dev") + rec(CHR | 5 << 4, 6, b"dev/console", b"\1") +
      rec(FILE, 7, b"init", b"#!/bin/sh\nexec /bin/sh\n") + rec(DIR, 7, b"/etc") + rec(FILE, 6, b"etc/hostname", b"vm\n"))
    w("no-parent", rec(FILE, 6, b"a/b", b"x"))
    w("parent-is-file", rec(FILE, 6, b"a", b"x") + rec(FILE, 6, b"a/b", b"y"))
    w("duplicate", rec(DIR, 7, b"a") + rec(DIR, 7, b"/a"))
    w("empty-path", rec(FILE, 6, b"///", b"x"))
    w("unaligned-sizes", rec(FILE, 6, b"a", b"1") + rec(FILE, 6, b"bb", b"22") + rec(FILE, 6, b"ccc", b"333"))
    w("empty", b"")


# ---- agent frames (guests/agent/tests/fuzz_frame.c; the seeds of guests/agent/tests/fuzz.sh) ----

def agent_frame():
    w = out("agent_frame")

    def seed(name, step, payload):
        w(name, bytes([step]) + struct.pack(">I", len(payload)) + payload)
    seed("ping", 0, b'{"op":"ping","id":1}')
    seed("exec", 3, b'{"op":"exec","argv":["sh","-c","echo hi"],"env":{"A":"1"},"cwd":"/tmp","stdin":"aGk=",'
         b'"stdin_base64":true,"timeout_ms":100,"max_output":10,"output_encoding":"base64"}')
    seed("exec_env_array", 7, b'{"op":"exec","argv":["env"],"env":["A=1","B=2=3"],"clear_env":true}')
    seed("write_file", 1, b'{"op":"write_file","path":"/tmp/x","content":"AAEC/w==","mode":420,"atomic":false}')
    seed("read_file", 0, b'{"op":"read_file","path":"/etc/hostname","max_bytes":10}')
    seed("set_clock", 0, b'{"op":"set_clock","time_ns":1700000000000000000}')
    seed("reseed", 2, b'{"op":"reseed_entropy","data":"AAECAw==","entropy_bits":8}')
    seed("shutdown", 0, b'{"op":"shutdown","mode":"reboot","id":"x"}')
    seed("eval", 2, b'{"op":"eval","lang":"python","code":"x = 41","timeout_ms":500,"context":"c1",'
         b'"max_output":100,"output_encoding":"auto"}')
    seed("eval_close", 0, b'{"op":"eval_close","context":"c1"}')
    seed("put_tree", 1, b'{"op":"put_tree","path":"/tmp/d","data":"AAEC"}')
    seed("get_tree", 0, b'{"op":"get_tree","path":"/etc","max_bytes":1024}')
    seed("malformed", 0, b'{"op":"ping",')
    seed("unknown", 0, b'{"op":"fly","id":[1,{"a":null}]}')
    w("oversized", b"\x00\xff\xff\xff\xff")
    w("pipelined", b'\x05\x00\x00\x00\x02{}\x00\x00\x00\x10{"op":"ping"}xx')


# ---- ustar archives (fuzz_ustar.c; put_tree / get_tree / forkvm cp) ----

def ustar():
    import io
    import tarfile
    w = out("ustar")

    def archive(fmt, members):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
            for name, kind, payload in members:
                info = tarfile.TarInfo(name)
                info.mtime = 1700000000
                if kind == "dir":
                    info.type = tarfile.DIRTYPE
                    t.addfile(info)
                elif kind == "link":
                    info.type, info.linkname = tarfile.SYMTYPE, payload
                    t.addfile(info)
                elif kind == "hard":
                    info.type, info.linkname = tarfile.LNKTYPE, payload
                    t.addfile(info)
                else:
                    info.size, info.mode = len(payload), 0o640
                    t.addfile(info, io.BytesIO(payload))
        return buf.getvalue()
    tree = [("d", "dir", None), ("d/f", "file", b"hello\n"), ("d/ln", "link", "f"),
            ("./e/", "dir", None)]
    long_tree = [("p" * 120 + "/" + "q" * 90, "file", b"x"), ("L" * 300, "file", b"long"),
                 ("sym", "link", "t" * 150)]
    w("ustar", archive(tarfile.USTAR_FORMAT, tree))
    w("pax", archive(tarfile.PAX_FORMAT, tree + long_tree))
    w("gnu", archive(tarfile.GNU_FORMAT, tree + long_tree))
    w("dotdot", archive(tarfile.PAX_FORMAT, [("../x", "file", b"x")]))
    w("absolute", archive(tarfile.USTAR_FORMAT, [("/etc/x", "file", b"x")]))
    w("hardlink", archive(tarfile.USTAR_FORMAT, [("h", "hard", "/etc/passwd")]))
    w("truncated", archive(tarfile.USTAR_FORMAT, [("f", "file", b"z" * 2000)])[:1500])
    w("empty", b"")


# ---- page-server register message (fuzz_ps_register.c) ----

def ps_register():
    import json
    w = out("ps_register")
    good = {"cmd": "register", "version": 1, "snapshot": "/var/tmp/snap", "name": "box", "pid": 1234,
            "base": 0x7F0000000000, "size": 64 << 20, "file_offset": 0, "page_size": 4096,
            "regions": [{"gpa": 0, "size": 64 << 20, "offset": 0}], "record": True, "prefetch": False,
            "allow_bad_hotpages": False, "settle_ms": 1000, "record_max_ms": 60000}
    w("register", json.dumps(good).encode())
    two = dict(good, size=(3 << 30) + (1 << 30),
               regions=[{"gpa": 0, "size": 3 << 30, "offset": 0},
                        {"gpa": 1 << 32, "size": 1 << 30, "offset": 3 << 30}])
    w("register-two-regions", json.dumps(two).encode())
    w("register-unknown-field", json.dumps(dict(good, extra=1)).encode())
    w("register-relative-path", json.dumps(dict(good, snapshot="snap")).encode())
    w("register-settle-range", json.dumps(dict(good, settle_ms=99)).encode())
    w("register-three-regions", json.dumps(dict(good, regions=good["regions"] * 3)).encode())
    w("register-negative", json.dumps(dict(good, base=-4096)).encode())
    w("register-long-name", json.dumps(dict(good, name="n" * 64)).encode())
    w("register-version-2", json.dumps(dict(good, version=2)).encode())


# ---- agent replies, host side (fuzz_agent_reply.c) ----

def agent_reply():
    w = out("agent_reply")

    def frame(body):
        return struct.pack(">I", len(body)) + body
    w("ok", b"\0" + frame(b'{"ok":true,"id":1,"pong":true}'))
    w("ok-exec", b"\0" + frame(b'{"ok":true,"id":1,"exit_code":0,"stdout":"aGkK","stdout_encoding":"base64",'
                                 b'"stderr":"","truncated":false}'))
    w("refused", b"\0" + frame(b'{"ok":false,"id":1,"error":"unknown op"}'))
    w("refused-no-reason", b"\0" + frame(b'{"ok":false}'))
    w("not-object", b"\0" + frame(b'[1,2]'))
    w("bad-json", b"\0" + frame(b'{"ok":tru'))
    w("truncated-body", b"\0" + struct.pack(">I", 100) + b'{"ok":true')
    w("truncated-header", b"\0\0\0")
    w("oversized", b"\0" + struct.pack(">I", (16 << 20) + 1))
    w("empty", b"\0")
    w("connect-ok", b"\1OK 1073741824\n")
    w("connect-refused", b"\1")
    w("connect-garbage", b"\1NO 52\n")
    w("connect-no-newline", b"\1OK 12")
    w("connect-long-line", b"\1OK " + b"9" * 300 + b"\n")


# ---- written by the harnesses themselves ----

def harness_written(name):
    def run():
        exe = os.path.join(FUZZ_BUILD, "fuzz_" + name)
        if not os.path.exists(exe):
            print("make_corpus: %s not built (make fuzz-build), keeping corpus/%s" % (exe, name),
                  file=sys.stderr)
            return
        d = os.path.join(CORPUS, name)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        subprocess.run([exe], env=dict(os.environ, FORKVM_FUZZ_WRITE_SEEDS=d), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return run


GENERATORS = {
    "hotlist": hotlist, "ctl_request": ctl_request, "virtq": virtq, "blk": blk, "kernel": kernel,
    "payload": payload, "cpio": cpio, "agent_frame": agent_frame, "ps_register": ps_register,
    "agent_reply": agent_reply, "ustar": ustar,
    "vmstate": harness_written("vmstate"), "layer": harness_written("layer"),
}

if __name__ == "__main__":
    for name in sys.argv[1:] or GENERATORS:
        GENERATORS[name]()
