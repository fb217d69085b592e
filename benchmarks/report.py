"""Markdown tables from ``throughput.py``'s JSON lines: one table per run configuration, with each variant's
env-steps/s, its ratio to the naive recipe, to NatureCNN and to the loop's limit, the share of its time spent in the
env and the backbone (the rest is the loop's own work), and peak memory.

    python benchmarks/report.py docs/benchmarks_cpu.jsonl
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

from plot import LABELS, ORDER


def tables(path: str) -> str:
    runs: dict[tuple, list[dict]] = defaultdict(list)
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            runs[(record["algo"], record["env"], record["size"], record["n_envs"], record["device"])].append(record)
    out = []
    for (algo, env, size, n_envs, device), records in sorted(runs.items()):
        by_variant = {r["variant"]: r for r in records if "env_steps_per_s" in r}
        summary = next((r for r in records if r["variant"] == "summary"), {})
        limit = summary.get("limit_env_steps_per_s")
        env_rate = summary.get("env_only_steps_per_s", by_variant.get("env_only", {}).get("env_steps_per_s"))
        best = summary.get("best_backbone_img_per_s")
        out.append(f"#### {algo.upper()}, {env}, efficientnet_lite0 at {size} px, {n_envs} envs, {device}\n")
        out.append(f"Env alone (E): {env_rate} steps/s; backbone alone at batch {n_envs} (B, best of fp32/bf16 x "
                   f"channels_last): {best} img/s; loop limit 1/(1/E + 1/B): {limit} steps/s.\n")
        columns = ("variant", "env-steps/s", "x naive recipe", "x NatureCNN", "of limit", "time in env + backbone",
                   "peak RSS (MB)")
        out.append(f"| {' | '.join(columns)} |")
        out.append("|---|---:|---:|---:|---:|---:|---:|")
        cnn = by_variant.get("naturecnn", {}).get("env_steps_per_s")
        for variant in ORDER:
            if variant not in by_variant:
                continue
            rate = by_variant[variant]["env_steps_per_s"]
            # Fine-tuning compares with the naive recipe fine-tuned, the frozen paths with it frozen.
            naive = by_variant.get("naive_finetune" if "finetune" in variant else "naive", {}).get("env_steps_per_s")
            cells = [f"{rate / base:.2f}" if base else "–" for base in (naive, cnn)]
            cells.append(f"{rate / limit:.0%}" if limit else "")
            record = by_variant[variant]
            in_loop = "backbone_s" in record and variant in ("frozen", "fastpath")
            cells.append(f"{(record['env_s'] + record['backbone_s']) / record['seconds']:.0%}" if in_loop else "")
            peak = by_variant[variant]['peak_rss_mb']
            out.append(f"| {LABELS[variant]} | {rate:,.2f} | {' | '.join(cells)} | {peak:,.0f} |")
        failed = [r["variant"] for r in records if "error" in r]
        if failed:
            out.append(f"\nFailed: {', '.join(failed)}.")
        out.append("")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", help="JSON lines from throughput.py")
    print(tables(parser.parse_args().results))


if __name__ == "__main__":
    main()
