"""forkvm doctor: the JSON report's shape, the facts this host really has, the image cache, and
the exit status (0 unless a check fails, 1 then, 2 for wrong arguments)."""
import json
import os
import re
import subprocess

import pytest

from forkvm_vm import FORKVM

CHECKS = ["kvm", "kvm-caps", "kvm-caps-optional", "userfaultfd", "uffd-wp-unpopulated",
          "hugepages", "thp", "memfd", "cgroup", "tun", "seccomp", "jail", "disk-run-dir",
          "disk-snapshots", "disk-cache", "image", "rootfs", "image-tools", "daemon"]
STATUSES = {"ok", "warn", "fail"}
PVM = os.path.exists("/sys/module/kvm_pvm")
KVM_USABLE = os.access("/dev/kvm", os.R_OK | os.W_OK)


def doctor(*args, env=None):
    full = dict(os.environ)
    for k in ("FORKVM_UFFD_FEATURES_MASK", "FORKVM_SECCOMP", "FORKVM_CGROUP_ROOT",
              "FORKVM_JAIL"):
        full.pop(k, None)
    full.update(env or {})
    return subprocess.run([FORKVM, "doctor", *args], capture_output=True, text=True,
                          timeout=60, env=full)


def report(*args, env=None):
    """(exit status, {name: check}) of `forkvm doctor --json`."""
    r = doctor("--json", *args, env=env)
    assert r.returncode in (0, 1), r
    checks = json.loads(r.stdout)
    assert isinstance(checks, list)
    by_name = {c["name"]: c for c in checks}
    assert len(by_name) == len(checks), "check names repeat"
    return r.returncode, by_name


def test_json_shape_and_exit_status():
    rc, checks = report()
    assert list(checks) == CHECKS  # in table order
    for c in checks.values():
        assert set(c) == {"name", "status", "found", "fix"}, c
        assert c["status"] in STATUSES, c
        assert isinstance(c["found"], str) and c["found"], c
        if c["status"] == "ok":
            assert c["fix"] is None, c
        else:
            assert isinstance(c["fix"], str) and c["fix"], c
    assert rc == (1 if any(c["status"] == "fail" for c in checks.values()) else 0)


def test_text_report_one_line_per_check():
    r = doctor()
    lines = r.stdout.splitlines()
    assert len(lines) == len(CHECKS) + 1, r.stdout
    for line, name in zip(lines, CHECKS):
        status, got = line.split()[:2]
        assert status in STATUSES and got == name, line
        assert ("[fix: " in line) == (status != "ok"), line
    counts = {s: sum(1 for ln in lines[:-1] if ln.startswith(s)) for s in STATUSES}
    assert lines[-1] == f"{counts['ok']} ok, {counts['warn']} warn, {counts['fail']} fail"
    assert r.returncode == (1 if counts["fail"] else 0)
    assert r.stderr == ""


@pytest.mark.skipif(not (PVM and KVM_USABLE), reason="needs this PVM host's /dev/kvm")
def test_kvm_reports_the_pvm_flavour():
    _, checks = report()
    kvm = checks["kvm"]
    assert kvm["status"] == "warn", kvm
    assert "API version 12" in kvm["found"]
    assert "PVM" in kvm["found"] and "kvm_pvm" in kvm["found"]
    assert "docs/TESTING.md" in kvm["fix"] and "rig.sh" in kvm["fix"]
    assert checks["kvm-caps"]["status"] == "ok", checks["kvm-caps"]
    assert "IRQFD" in checks["kvm-caps"]["found"] and "IOEVENTFD" in checks["kvm-caps"]["found"]
    assert "MANUAL_DIRTY_LOG_PROTECT2" in checks["kvm-caps-optional"]["found"]


def meminfo():
    return dict((k, v.split()[0]) for k, v in
                (line.split(":", 1) for line in open("/proc/meminfo")))


def test_facts_of_this_host():
    before = meminfo()
    _, checks = report()
    after = meminfo()
    assert checks["memfd"]["status"] == "ok", checks["memfd"]
    # THP: the bracketed mode of the sysfs file.
    thp = "/sys/kernel/mm/transparent_hugepage/enabled"
    if os.path.exists(thp):
        mode = re.search(r"\[(\w+)\]", open(thp).read()).group(1)
        assert f"THP mode {mode}" in checks["thp"]["found"]
        assert checks["thp"]["status"] == ("warn" if mode == "never" else "ok")
    # cgroup: the hybrid layout of this host, or a unified one.
    cg = checks["cgroup"]
    if os.path.exists("/sys/fs/cgroup/unified/cgroup.controllers"):
        root = "/sys/fs/cgroup/unified"
    else:
        root = "/sys/fs/cgroup"
    controllers = open(f"{root}/cgroup.controllers").read().split()
    assert f"cgroup2 at {root}" in cg["found"], cg
    missing = [c for c in ("memory", "cpu", "pids") if c not in controllers]
    if missing:
        assert cg["status"] == "warn" and "missing " + " ".join(missing) in cg["found"], cg
    # tun, userfaultfd, seccomp as root on this host.
    if os.geteuid() == 0:
        assert checks["tun"]["status"] == ("ok" if os.path.exists("/dev/net/tun") else "warn")
        uffd = checks["userfaultfd"]
        assert uffd["status"] == "ok", uffd
        assert "EVENT_REMOVE" in uffd["found"] and "WP_HUGETLBFS_SHMEM" in uffd["found"]
    assert checks["seccomp"]["status"] == "ok", checks["seccomp"]
    assert "libseccomp API level" in checks["seccomp"]["found"]
    # hugepages: HugePages_Free of /proc/meminfo (when nothing reserved pages meanwhile).
    huge = checks["hugepages"]
    if before.get("Hugepagesize") == "2048" and before["HugePages_Free"] == after["HugePages_Free"]:
        free, total = before["HugePages_Free"], before["HugePages_Total"]
        assert f"{free} of {total} 2 MiB hugetlb pages free" in huge["found"], huge
        assert huge["status"] == ("ok" if int(free) else "warn"), huge


def test_empty_cache_reports_the_missing_image(tmp_path):
    rc, checks = report(env={"FORKVM_CACHE": str(tmp_path)})
    image, rootfs = checks["image"], checks["rootfs"]
    assert image["status"] == "warn", image
    assert f"{tmp_path}/image/manifest.json missing" in image["found"]
    assert image["fix"] == "forkvm image build"
    assert rootfs["status"] == "warn", rootfs
    assert rootfs["fix"] == "forkvm image build --rootfs"
    assert str(tmp_path) in checks["disk-cache"]["found"]
    assert rc == (1 if any(c["status"] == "fail" for c in checks.values()) else 0)
    assert list(tmp_path.iterdir()) == []  # doctor only looks


def test_image_without_virtio_blk_or_virtio_net_needs_a_rebuild(tmp_path):
    (tmp_path / "image").mkdir()
    manifest = tmp_path / "image" / "manifest.json"
    manifest.write_text(json.dumps({"kernel_version": "6.1.0-56-cloud-amd64",
                                    "modules": ["virtio_mmio", "vsock"]}))
    _, checks = report(env={"FORKVM_CACHE": str(tmp_path)})
    assert checks["image"]["status"] == "warn"
    assert "predates root disks" in checks["image"]["found"]
    assert "6.1.0-56-cloud-amd64" in checks["image"]["found"]
    assert checks["image"]["fix"] == "forkvm image build"
    manifest.write_text(json.dumps({"kernel_version": "6.12.1",
                                    "modules": ["virtio_mmio", "virtio_blk"]}))
    _, checks = report(env={"FORKVM_CACHE": str(tmp_path)})
    assert checks["image"]["status"] == "warn"
    assert "predates networking: no virtio_net" in checks["image"]["found"]
    manifest.write_text(json.dumps({"kernel_version": "6.12.1",
                                    "modules": ["virtio_mmio", "virtio_blk", "virtio_net"]}))
    (tmp_path / "rootfs").mkdir()
    (tmp_path / "rootfs" / "manifest.json").write_text("{}")
    (tmp_path / "rootfs" / "rootfs.ext4").write_bytes(b"\0" * 4096)
    _, checks = report(env={"FORKVM_CACHE": str(tmp_path)})
    assert checks["image"]["status"] == "ok", checks["image"]
    assert checks["rootfs"]["status"] == "ok", checks["rootfs"]
    manifest.write_text("not json")
    _, checks = report(env={"FORKVM_CACHE": str(tmp_path)})
    assert checks["image"]["status"] == "warn"
    assert "not an image manifest" in checks["image"]["found"]


def test_missing_kvm_device_fails_with_exit_1():
    r = doctor("--json", "--kvm-device", "/nonexistent/kvm")
    assert r.returncode == 1, r
    checks = {c["name"]: c for c in json.loads(r.stdout)}
    for name in ("kvm", "kvm-caps", "kvm-caps-optional"):
        assert checks[name]["status"] == "fail", checks[name]
    assert "/nonexistent/kvm" in checks["kvm"]["found"]
    assert doctor("--kvm-device", "/nonexistent/kvm").returncode == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="userfaultfd(2) needs root here")
def test_uffd_feature_mask():
    # Every feature hidden: the uffd backing and live branches cannot work -> fail, exit 1.
    rc, checks = report(env={"FORKVM_UFFD_FEATURES_MASK": "0"})
    assert rc == 1
    uffd = checks["userfaultfd"]
    assert uffd["status"] == "fail", uffd
    assert "FORKVM_UFFD_FEATURES_MASK hides" in uffd["found"]
    assert uffd["fix"] == "unset FORKVM_UFFD_FEATURES_MASK"
    # Linux 6.1-6.3's features: live branches fall back (a warning), nothing fails for uffd.
    _, checks = report(env={"FORKVM_UFFD_FEATURES_MASK": "0x1fff"})
    assert checks["userfaultfd"]["status"] == "ok", checks["userfaultfd"]
    wp = checks["uffd-wp-unpopulated"]
    assert wp["status"] == "warn" and "fall back" in wp["found"], wp
    # A mask that is no mask: named, never a crash.
    _, checks = report(env={"FORKVM_UFFD_FEATURES_MASK": "zz"})
    assert checks["userfaultfd"]["status"] == "fail"
    assert "'zz' is not a feature mask" in checks["userfaultfd"]["found"]


def test_probe_problems_are_warnings_not_crashes(tmp_path):
    # Not a cgroup2 directory; low-space and not-yet-created directories.
    rc, checks = report(env={"FORKVM_CGROUP_ROOT": str(tmp_path),
                             "FORKVM_SNAPSHOT_ROOTS": f"{tmp_path}/a/b:/dev/shm",
                             "FORKVM_RUN_DIR": f"{tmp_path}/run"})
    assert checks["cgroup"]["status"] == "warn"
    assert "FORKVM_CGROUP_ROOT" in checks["cgroup"]["fix"]
    assert f"{tmp_path}/a/b (not created yet; on {tmp_path})" in checks["disk-snapshots"]["found"]
    assert f"{tmp_path}/run" in checks["disk-run-dir"]["found"]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args", [["--bogus"], ["extra"], ["--kvm-device"]])
def test_wrong_arguments_exit_2(args):
    r = doctor(*args)
    assert r.returncode == 2, r
    assert "usage: forkvm doctor" in r.stderr


def test_help():
    r = doctor("--help")
    assert r.returncode == 0 and "--json" in r.stdout and "Exit status" in r.stdout


def landlock_abi():
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1))  # _VERSION


def test_jail_check_says_whether_vmms_are_jailed():
    """Root here: the jail's namespaces can be made; the signal scope follows the kernel's
    Landlock ABI; FORKVM_JAIL=0 in the environment is a warning naming it."""
    _, checks = report()
    c = checks["jail"]
    assert "root; the jail's namespaces can be made" in c["found"], c
    abi = landlock_abi()
    if abi >= 6:
        assert c["status"] == "ok" and f"Landlock ABI {abi}: a jailed VM signals only" in \
            c["found"], c
    else:
        assert c["status"] == "warn" and "can signal each other" in c["found"], c
    _, checks = report(env={"FORKVM_JAIL": "0"})
    c = checks["jail"]
    assert c["status"] == "warn" and "FORKVM_JAIL=0 in this environment" in c["found"], c
    assert c["fix"].startswith("unset FORKVM_JAIL"), c
