#!/usr/bin/env python3
"""Plot the latency of a `nanoflow bench serve --sweep` against the request rate.

Usage: scripts/plot_serve_sweep.py RESULT.json [OUT.png]

RESULT.json is what `bench serve --result-json` wrote: a sweep ({"sweep": [run, ...]}), a list of
runs, or a single run. The PNG (default: RESULT.png) has two panels, TTFT and TPOT, each with the
median and p99 in ms against the offered request rate; an `inf` rate (all requests at once) is
drawn right of the finite rates. Needs matplotlib (pip install matplotlib).
"""
import json
import math
import os
import sys


def load_runs(path):
    with open(path) as f:
        data = json.load(f)
    if isinstance(data, dict) and "sweep" in data:
        runs = data["sweep"]
    elif isinstance(data, list):
        runs = data
    else:
        runs = [data]
    for i, run in enumerate(runs):
        for key in ("request_rate", "median_ttft_ms", "p99_ttft_ms", "median_tpot_ms", "p99_tpot_ms"):
            if key not in run:
                sys.exit(f"{path}: run {i} has no '{key}'; is this a bench serve --result-json?")
    return data, runs


def rate_value(rate):
    """A finite rate as a float, None for 'inf' and 'trace'."""
    if isinstance(rate, (int, float)) and math.isfinite(rate):
        return float(rate)
    return None


def main():
    if len(sys.argv) not in (2, 3) or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(sys.argv) == 2 else 2
    path = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) == 3 else os.path.splitext(path)[0] + ".png"
    data, runs = load_runs(path)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("plot_serve_sweep.py needs matplotlib: pip install matplotlib")

    finite = sorted(r for r in (rate_value(run["request_rate"]) for run in runs) if r is not None)
    # Rates without a number (inf, trace) go one step right of the largest finite rate.
    step = (finite[-1] - finite[0]) / max(1, len(finite) - 1) if len(finite) > 1 else 1.0
    extra_x = (finite[-1] + step) if finite else 1.0
    points = []
    labels = {}
    for run in runs:
        r = rate_value(run["request_rate"])
        x = r if r is not None else extra_x
        if r is None:
            labels[x] = str(run["request_rate"])
            extra_x += step
        points.append((x, run))
    points.sort(key=lambda p: p[0])
    xs = [p[0] for p in points]

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric, title in ((axes[0], "ttft", "Time to first token"),
                              (axes[1], "tpot", "Time per output token")):
        for stat, style in (("median", "o-"), ("p99", "s--")):
            ys = [p[1][f"{stat}_{metric}_ms"] for p in points]
            ax.plot(xs, ys, style, label=f"{stat} {metric.upper()}")
        ax.set_title(title)
        ax.set_xlabel("request rate (req/s)")
        ax.set_ylabel("ms")
        ax.grid(True, alpha=0.3)
        ax.legend()
        ticks = sorted(set(xs))
        ax.set_xticks(ticks)
        ax.set_xticklabels([labels.get(t, f"{t:g}") for t in ticks])
    meta = data if isinstance(data, dict) else runs[0]
    first = runs[0]
    parts = [str(meta.get("model", first.get("model", ""))), str(meta.get("dataset", first.get("dataset", "")))]
    if first.get("dataset") == "random":
        parts.append(f"in {first.get('random_input_len')} / out {first.get('random_output_len')}")
    parts.append(f"{first.get('num_prompts')} prompts")
    commit = meta.get("git_commit", first.get("git_commit", ""))
    if commit:
        parts.append(f"commit {commit[:10]}")
    fig.suptitle(", ".join(p for p in parts if p), fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
