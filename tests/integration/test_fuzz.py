"""Bounded libFuzzer runs over every parser that takes untrusted bytes (tests/fuzz/).

Each harness (build-fuzz/fuzz_NAME, made by `make fuzz-build`, mk/extra-fuzz.mk) fuzzes for
FORKVM_FUZZ_SECONDS (default 30) from its committed seed corpus, tests/fuzz/corpus/NAME/, and
fails on any crash, sanitizer report, leak, timeout or OOM, printing the reproducer. The
inputs under tests/fuzz/crashes/*/ are replayed as regressions. Budget (docs/TESTING.md,
"Fuzzing"): 13 harnesses x 30 s = 6.5 min (CI: 10 s each) plus the fuzz build; the ASan pass of tests/run
(FORKVM_BUILD=build-san) replays the corpora only, as the harnesses carry their own sanitizers.
"""
import glob
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from forkvm_vm import ROOT

FUZZ_SECONDS = int(os.environ.get("FORKVM_FUZZ_SECONDS", "30"))
FUZZ_DIR = os.path.join(ROOT, "build-fuzz")
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")
CRASHES = os.path.join(ROOT, "tests", "fuzz", "crashes")
ARTIFACTS = os.path.join(FUZZ_DIR, "artifacts")
# The ASan/UBSan pass: the seed corpora once each, no fuzzing (the plain pass fuzzes).
REPLAY_ONLY = os.environ.get("FORKVM_BUILD", "build") == "build-san" and \
    "FORKVM_FUZZ_SECONDS" not in os.environ

# harness -> -max_len: what its input format needs, small enough to keep executions fast.
HARNESSES = {
    "vmstate": 65536,      # a 2-vCPU machine packs to ~15 KiB; XSAVE sections are 4 KiB each
    "layer": 40960,        # pages files of up to 9 pages + parent link + vmstate
    "hotlist": 4096,
    "ctl_request": 4096,   # CTL_MAX_LINE is 64 KiB; real requests are < 1 KiB
    "agent_frame": 4096,
    "virtq": 16400,        # 16-byte queue header + 16 KiB of guest RAM
    "blk": 16384,          # 16 KiB of guest RAM (the queue is fixed)
    "kernel": 16384,       # setup header + small ELF/bzImage bodies
    "payload": 4096,       # bounds decompression bombs: dispatch output stays < 256 MiB
    "cpio": 8192,
    "ps_register": 4096,   # PS_LINE_MAX is 16 KiB; a register line is < 1 KiB
    "agent_reply": 4096,
    "ustar": 16384,        # a few members with pax/GNU long names; archives are 512-byte blocks
}

SAN_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:allocator_may_return_null=0",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
}


def _fuzzer_links():
    """clang -fsanitize=fuzzer links (Debian: libclang-rt-14-dev, only a Recommends of clang)."""
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "t.c")
        with open(src, "w") as f:
            f.write("#include <stdint.h>\n#include <stddef.h>\n"
                    "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { return 0; }\n")
        r = subprocess.run(["clang", "-fsanitize=fuzzer,address,undefined", "-o",
                            os.path.join(d, "t"), src], capture_output=True, text=True)
        return r.returncode == 0, r.stderr[-500:]


@pytest.fixture(scope="module")
def fuzz_build():
    if shutil.which("clang") is None:
        pytest.skip("clang not installed (scripts/install-deps.sh)")
    ok, why = _fuzzer_links()
    if not ok:
        pytest.skip("clang -fsanitize=fuzzer does not link (libFuzzer runtime missing: "
                    "apt install libclang-rt-14-dev): " + why)
    jobs = str(os.cpu_count() or 1)
    r = subprocess.run(["make", "-s", "-j" + jobs, "fuzz-build"], capture_output=True, text=True,
                       cwd=ROOT, timeout=900)
    assert r.returncode == 0, "make fuzz-build failed:\n" + r.stdout[-3000:] + r.stderr[-5000:]
    return FUZZ_DIR


def _env(tmp):
    env = dict(os.environ, **SAN_ENV)
    env["TMPDIR"] = str(tmp)  # the layer and kernel harnesses' scratch files
    # Open bugs (tests/fuzz/crashes/*/OPEN) are stepped around while fuzzing, not in replays.
    env["FORKVM_FUZZ_AVOID_OPEN_BUGS"] = "1"
    return env


def _tail(path, n=6000):
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - n))
        return f.read().decode(errors="replace")


@pytest.mark.timeout(FUZZ_SECONDS + 180)
@pytest.mark.parametrize("name", sorted(HARNESSES))
def test_fuzz(fuzz_build, name, tmp_path):
    exe = os.path.join(fuzz_build, "fuzz_" + name)
    seeds = os.path.join(CORPUS, name)
    assert os.path.isdir(seeds) and os.listdir(seeds), "no seed corpus in " + seeds
    art = os.path.join(ARTIFACTS, name)
    os.makedirs(art, exist_ok=True)
    work = tmp_path / "corpus"  # new inputs go here; the committed corpus stays as it is
    work.mkdir()
    args = [exe, str(work), seeds, "-max_len=%d" % HARNESSES[name], "-timeout=10",
            "-rss_limit_mb=2560", "-malloc_limit_mb=2048", "-print_final_stats=1",
            "-artifact_prefix=" + art + "/",
            # The library's own error lines (one per rejected input, ~100 MB in 30 s for cpio)
            # go nowhere; libFuzzer and the sanitizers keep reporting on a copy of stderr.
            "-close_fd_mask=2"]
    args += ["-runs=0"] if REPLAY_ONLY else ["-max_total_time=%d" % FUZZ_SECONDS]
    log = tmp_path / "fuzz.log"
    start = time.time() - 1
    with open(log, "wb") as out:
        r = subprocess.run(["nice", "-n", "5"] + args, stdout=out, stderr=subprocess.STDOUT,
                           env=_env(tmp_path), cwd=str(tmp_path), timeout=FUZZ_SECONDS + 120)
    if r.returncode != 0:
        found = sorted((p for p in glob.glob(os.path.join(art, "*")) if os.path.getmtime(p) >= start),
                       key=os.path.getmtime)
        repro = found[-1] if found else "(no artifact written)"
        pytest.fail("fuzz_%s failed (status %d); reproducer: %s\n  replay: %s %s\n"
                    "  keep it: tests/fuzz/crashes/NAME/{input,harness,README}\n%s"
                    % (name, r.returncode, repro, exe, repro, _tail(log)))


def _crash_dirs():
    return sorted(d for d in glob.glob(os.path.join(CRASHES, "*")) if os.path.isdir(d))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("crash", [os.path.basename(d) for d in _crash_dirs()] or ["none"])
def test_fuzz_regressions(fuzz_build, crash, tmp_path):
    """Replay tests/fuzz/crashes/NAME/input through the harness named in NAME/harness.

    A crash marked OPEN (not fixed in src/ yet) must still crash: the test xfails, and fails
    once it stops crashing so that the marker gets removed. Unmarked ones must run clean."""
    if crash == "none":
        pytest.skip("no regression inputs in tests/fuzz/crashes")
    d = os.path.join(CRASHES, crash)
    with open(os.path.join(d, "harness")) as f:
        harness = f.read().strip()
    exe = os.path.join(fuzz_build, "fuzz_" + harness)
    inputs = sorted(glob.glob(os.path.join(d, "input*")))
    assert inputs, "no input in " + d
    env = dict(os.environ, TMPDIR=str(tmp_path), **SAN_ENV)
    env.pop("FORKVM_FUZZ_AVOID_OPEN_BUGS", None)
    failures = []
    for inp in inputs:
        r = subprocess.run([exe, "-artifact_prefix=%s/" % tmp_path, inp], capture_output=True,
                           text=True, env=env, cwd=str(tmp_path), timeout=120)
        if r.returncode != 0:
            failures.append("%s: status %d\n%s" % (inp, r.returncode, r.stdout[-1500:] + r.stderr[-4000:]))
    readme = os.path.join(d, "README")
    why = open(readme).readline().strip() if os.path.exists(readme) else crash
    if os.path.exists(os.path.join(d, "OPEN")):
        if not failures:
            pytest.fail("%s no longer crashes fuzz_%s: fixed? remove %s/OPEN" % (crash, harness, d))
        pytest.xfail("open bug: " + why)
    assert not failures, "regression %s (%s):\n%s" % (crash, why, "\n".join(failures))
