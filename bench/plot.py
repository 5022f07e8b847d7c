"""Plots for docs/benchmarks.md from a directory of strake-bench JSON results.

Usage: plot.py RESULTS_DIR OUT_DIR. Writes PNGs only for what was measured:
latency percentile curves per rate, throughput, streaming gaps, revocation.
"""

import json
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter  # noqa: E402

COLORS = {
    "direct": "#888888",
    "direct-repeat": "#bbbbbb",
    "nginx": "#2ca02c",
    "strake": "#1f77b4",
    "strake-nolog": "#9ecae1",
    "litellm": "#d62728",
    "portkey": "#9467bd",
}
ORDER = ["direct", "nginx", "strake", "strake-nolog", "litellm", "portkey"]


def load(results):
    records = []
    for path in sorted(pathlib.Path(results).glob("*.json")):
        records.append(json.loads(path.read_text()))
    return records


def percentile_axis(ax):
    """x axis in 'nines': 0, 90, 99, 99.9, 99.99 evenly spaced."""
    import math

    def to_x(pct):
        return -math.log10(max(1e-6, 1 - pct / 100))

    ticks = [0, 50, 90, 99, 99.9, 99.99]
    ax.xaxis.set_major_locator(FixedLocator([to_x(t) for t in ticks]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{100 * (1 - 10 ** -x):g}"))
    ax.set_xlabel("percentile")
    return to_x


def overhead(records, out):
    loads = [r for r in records if r["kind"] == "load" and r["experiment"] == "overhead"]
    rates = sorted({r["rate"] for r in loads})
    if not rates:
        return
    fig, axes = plt.subplots(1, len(rates), figsize=(4.2 * len(rates), 3.8), squeeze=False)
    for ax, rate in zip(axes[0], rates):
        to_x = percentile_axis(ax)
        for target in ORDER:
            r = next((x for x in loads if x["target"] == target and x["rate"] == rate), None)
            if not r or not r["latency"].get("curve"):
                continue
            pts = [(p, v) for p, v in r["latency"]["curve"] if p < 100]
            ax.plot(
                [to_x(p) for p, _ in pts],
                [v / 1000 for _, v in pts],
                label=target,
                color=COLORS[target],
                marker=".",
            )
        ax.set_yscale("log")
        ax.set_title(f"{rate:g} rps")
        ax.set_ylabel("latency (ms, log)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend()
    fig.suptitle("Non-streaming latency by percentile (open loop, CO-corrected)")
    fig.tight_layout()
    fig.savefig(out / "latency-percentiles.png", dpi=110)
    plt.close(fig)


def saturation(records, out):
    sat = {r["target"]: r for r in records if r["kind"] == "load" and r["experiment"] == "saturation"}
    targets = [t for t in ORDER if t in sat]
    if not targets:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    values = [sat[t]["achieved_rps"] for t in targets]
    bars = ax.bar(targets, values, color=[COLORS[t] for t in targets])
    ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values])
    ax.set_yscale("log")
    ax.set_ylabel("requests / s (log)")
    ax.set_title("Closed-loop throughput, server on one core")
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
    plt.close(fig)


def revocation(records, out):
    rev = next((r for r in records if r["kind"] == "revocation"), None)
    if not rev or not rev["trials_ms"]:
        return
    fig, ax = plt.subplots(figsize=(6, 3.2))
    trials = rev["trials_ms"]
    ax.plot(range(1, len(trials) + 1), trials, "o", color=COLORS["strake"])
    ax.axhline(1000, color="#d62728", linestyle="--", label="target p99 ≤ 1 s")
    ax.set_xlabel("trial")
    ax.set_ylabel("delete → 401 (ms)")
    ax.set_ylim(bottom=0)
    ax.set_title("Revocation: StrakeToken deleted → proxy answers 401")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "revocation.png", dpi=110)
    plt.close(fig)


def main():
    results, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    records = load(results)
    overhead(records, out)
    saturation(records, out)
    revocation(records, out)


if __name__ == "__main__":
    main()
