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


def chart(name, title, xlabel, ylabel, series, logy=True, xtics=None):
    """series: {label: [(x, y), ...]} -> bench/out/NAME.png via gnuplot (if installed)."""
    import shutil
    import subprocess
    os.makedirs(OUT, exist_ok=True)
    if not shutil.which("gnuplot"):
        return None
    data = os.path.join(OUT, f"{name}.dat")
    with open(data, "w") as f:
        for label, points in series.items():
            f.write(f'"{label}"\n')
            for x, y in points:
                f.write(f"{x} {y}\n")
            f.write("\n\n")
    png = os.path.join(OUT, f"{name}.png")
    plots = ", ".join(f'"{data}" index {i} using 1:2 with linespoints lw 2 pt 7 title columnheader(1)'
                      for i in range(len(series)))
    script = [
        'set terminal pngcairo size 900,560 font "sans,11"', f'set output "{png}"',
        f'set title "{title}"', f'set xlabel "{xlabel}"', f'set ylabel "{ylabel}"',
        "set grid", "set key top left", "set logscale x 2",
    ]
    if logy:
        script.append("set logscale y 10")
    if xtics:
        script.append("set xtics (" + ", ".join(f'"{l}" {v}' for l, v in xtics) + ")")
    script.append(f"plot {plots}")
    subprocess.run(["gnuplot"], input="\n".join(script), text=True, check=True)
    print(f"  chart: {png}")
    return png
