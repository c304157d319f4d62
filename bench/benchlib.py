"""Benchmark helpers: statistics, result files and simple PNG-free SVG charts."""
import json
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
OUT = os.path.join(ROOT, "bench", "out")


def pct(values, p):
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(p / 100 * (len(s) - 1)))))
    return s[k]


def summary(values):
    return {"n": len(values), "median": statistics.median(values), "p90": pct(values, 90),
            "min": min(values), "max": max(values)}


def report(name, rows, unit):
    """Print rows of (label, values) as median/p90 lines and save them as JSON."""
    os.makedirs(OUT, exist_ok=True)
    result = {}
    print(f"\n== {name} ({unit})")
    for label, values in rows:
        s = summary(values) if isinstance(values, list) else {"value": values}
        result[label] = s
        if "median" in s:
            print(f"  {label:<42} median {s['median']:>10.1f}  p90 {s['p90']:>10.1f}  (n={s['n']})")
        else:
            print(f"  {label:<42} {s['value']:>10.1f}")
    with open(os.path.join(OUT, f"{name}.json"), "w") as f:
        json.dump({"unit": unit, "results": result}, f, indent=2)
    return result
