"""A Linux guest boots to its agent; commands, exit codes, files, power-off."""
import os

from linux_image import image_paths


def test_boot_exec_files_poweroff(env):
    g = env.boot("basic")
    print(f"start -> agent answering: {g.boot_s:.1f} s")
    kver = g.sh("uname -r").strip()
    manifest = open(os.path.join(os.path.dirname(image_paths()[0]), "manifest.json")).read()
    assert kver and kver in manifest
    code, out, _ = g.run(["sh", "-c", "echo hi; echo err >&2; exit 3"], check=False)
    assert (code, out) == (3, b"hi\n")
    data = os.urandom(200_000)
    g.write_file("/tmp/blob", data)
    assert g.read_file("/tmp/blob") == data
    assert g.sh("wc -c < /tmp/blob").strip() == "200000"
    with g.agent() as a:
        a.call("shutdown", mode="poweroff")
    assert g.proc.wait(timeout=120) == 0
