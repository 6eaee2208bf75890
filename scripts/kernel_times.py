#!/usr/bin/env python3
"""Summarises an Nsight Compute CSV (ncu --csv --metrics gpu__time_duration.sum) per kernel:
launches, median and total duration. Usage: kernel_times.py ncu.csv [--last N] (only the
last N launches, e.g. the final decode steps)."""
import csv
import statistics
import sys


def main():
    path = sys.argv[1]
    last = int(sys.argv[sys.argv.index("--last") + 1]) if "--last" in sys.argv else 0
    rows = []
    with open(path, newline="") as f:
        lines = [line for line in f if line.startswith('"')]
    for row in csv.DictReader(lines):
        if row.get("Metric Name") != "gpu__time_duration.sum":
            continue
        value = float(row["Metric Value"].replace(",", ""))
        unit = row.get("Metric Unit", "ns")
        scale = {"ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3, "nsecond": 1e-3}.get(unit, 1e-3)
        rows.append((row["Kernel Name"], value * scale))
    if last:
        rows = rows[-last:]
    per_kernel = {}
    for name, us in rows:
        per_kernel.setdefault(name[:90], []).append(us)
    total = sum(us for _, us in rows)
    print(f"{len(rows)} launches, {total:.1f} us of kernel time")
    print(f"{'kernel':90} {'launches':>8} {'median us':>10} {'total us':>10}")
    for name, times in sorted(per_kernel.items(), key=lambda item: -sum(item[1])):
        print(f"{name:90} {len(times):8d} {statistics.median(times):10.2f} {sum(times):10.1f}")


if __name__ == "__main__":
    main()
