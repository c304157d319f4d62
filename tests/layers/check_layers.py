#!/usr/bin/env python3
"""Layers point one way: a file in src/ includes only from its own layer or the ones below
(docs/ARCHITECTURE.md, "Layers"). Prints every include that points upward; exits 1 if one is
not in the list of known ones (tests/layers/known_upward.txt, the debt still to move) or if a
listed one is gone (then the list must shrink with it)."""
import os
import re
import sys

# Bottom to top; folders of one layer may include each other.
LAYERS = [
    ("util", ["util"]),
    ("net", ["net"]),  # host networking of a VM (docs/NET.md): util only
    ("kvm", ["core", "x86", "mem", "jail"]),
    ("devices", ["devices", "disk", "loader", "agent"]),
    ("builder", ["builder"]),
    ("tools", ["image"]),
    ("vm-operations", ["snapshot", "fork", "uffd"]),
    ("service", ["ctl", "doctor", "daemon"]),
    ("cli", ["cli"]),
]
RANK = {folder: i for i, (_, folders) in enumerate(LAYERS) for folder in folders}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([a-z0-9_]+)/[^"]+"', re.M)
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
KNOWN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "known_upward.txt")


def upward_includes(src):
    """(file, included header) for every include from a higher layer, sorted."""
    found, unknown = [], []
    for folder in sorted(os.listdir(src)):
        path = os.path.join(src, folder)
        if not os.path.isdir(path):
            continue
        if folder not in RANK:
            unknown.append(folder)
            continue
        for name in sorted(os.listdir(path)):
            if not name.endswith((".c", ".h")):
                continue
            text = open(os.path.join(path, name), encoding="utf-8").read()
            for m in INCLUDE.finditer(text):
                target = m.group(1)
                line = m.group(0).strip()
                header = line.split('"')[1]
                if target in RANK and RANK[target] > RANK[folder]:
                    found.append(f"src/{folder}/{name} -> {header}")
                elif target not in RANK and target not in ("probe", "agent"):
                    # guests/ headers (probe, the agent's protocol) are shared definitions
                    unknown.append(f"{folder}/{name} includes {header}")
    return sorted(set(found)), unknown


def main():
    src = os.path.join(ROOT, "src")
    found, unknown = upward_includes(src)
    known = sorted({l.strip() for l in open(KNOWN, encoding="utf-8")
                    if l.strip() and not l.startswith("#")})
    new = [f for f in found if f not in known]
    gone = [k for k in known if k not in found]
    for u in unknown:
        print(f"layers: {u}: a folder no layer names (add it to LAYERS in {__file__})")
    for f in new:
        print(f"layers: {f}: includes from a higher layer")
    for k in gone:
        print(f"layers: {k}: listed in {KNOWN} but no longer there: remove the line")
    print(f"layers: {len(found)} upward includes, all known" if not (new or gone or unknown)
          else f"layers: {len(new)} new, {len(gone)} stale, {len(unknown)} unplaced")
    return 1 if new or gone or unknown else 0


if __name__ == "__main__":
    sys.exit(main())
