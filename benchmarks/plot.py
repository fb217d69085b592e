"""Bar chart of env-steps/s by variant from ``throughput.py``'s JSON lines, one panel per run configuration.

    python benchmarks/plot.py docs/benchmarks_cpu.jsonl docs/benchmarks_cpu.png

The dashed line in each panel is the loop's limit 1/(1/E + 1/B) of that run (env-only steps/s E, best
backbone-only img/s B at the env batch size).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

ORDER = ("naive", "naive_finetune", "naturecnn", "frozen", "fastpath", "finetune")
LABELS = {
    "naive": "naive recipe (frozen)",
    "naive_finetune": "naive recipe (fine-tune)",
    "naturecnn": "NatureCNN",
    "frozen": "TimmExtractor frozen",
    "fastpath": "frozen fast path",
    "finetune": "TimmExtractor fine-tune",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", help="JSON lines from throughput.py")
    parser.add_argument("png", help="output image")
    args = parser.parse_args()

    runs: dict[tuple, dict[str, dict]] = defaultdict(dict)
    with open(args.results) as f:
        for line in f:
            record = json.loads(line)
            key = (record["algo"], record["env"], record["size"], record["n_envs"], record["device"])
            if "env_steps_per_s" in record or record["variant"] == "summary":
                runs[key][record["variant"]] = record
    if not runs:
        raise SystemExit(f"{args.results} holds no throughput results.")

    fig, axes = plt.subplots(len(runs), 1, figsize=(8, 2.4 * len(runs)), squeeze=False)
    for ax, (key, variants) in zip(axes[:, 0], sorted(runs.items()), strict=False):
        algo, env, size, n_envs, device = key
        names = [v for v in ORDER if v in variants]
        rates = [variants[v]["env_steps_per_s"] for v in names]
        bars = ax.barh([LABELS[v] for v in names], rates, color=["#bbbbbb" if "naive" in v else "#4477aa" for v in names])
        ax.bar_label(bars, labels=[f"{r:,.1f}" for r in rates], padding=3, fontsize=8)
        if "summary" in variants:
            ax.axvline(variants["summary"]["limit_env_steps_per_s"], color="#cc3311", linestyle="--", label="limit")
            # The top bar (the naive recipe) is the shortest: its row has room for the legend.
            ax.legend(loc="upper right", fontsize=8)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(f"{algo.upper()} {env}, efficientnet_lite0 at {size} px, {n_envs} envs, {device}", fontsize=9)
        ax.invert_yaxis()
        ax.tick_params(labelsize=8)
    axes[-1, 0].set_xlabel("env-steps/s of full learn() (log scale)")
    fig.tight_layout()
    fig.savefig(args.png, dpi=110)


if __name__ == "__main__":
    main()
