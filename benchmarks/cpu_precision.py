"""float32 against bf16 autocast for a frozen backbone on this CPU, per batch size.

What the CPU rule rests on: a frozen :class:`~sb3_pretrained.encoder.BackboneEncoder` with the default ``amp=None``
runs bf16 on a CPU that computes it natively (AVX512-BF16, AMX) and float32 elsewhere, without timing anything (unlike
CUDA, where the faster of the two is measured at the first batch: :mod:`sb3_pretrained.precision`), so a CPU run
stays reproducible from its seed. For each setup (efficientnet_lite0 as the shipped configs use it: the MiniGrid main
job's 56 px view and CarRacing's 96 px frames cut at feature map 2, and the final pooled features at 224 px) this
prints one JSON line per batch size with the milliseconds per batch of each precision (eager, ``no_grad``,
channels_last, the encoder's own preprocessing; the best of ``--rounds`` rounds of ``--repeats`` calls after a
warm-up call) and what the default runs on this CPU.

One torch thread; run it on an otherwise idle core: another process on the same core makes every timing noise (a
first run here beside two trainings on two cores, not kept, had bf16 at 0.5x or 1.4x float32 for one shape). The numbers
in docs/benchmarks.md come from (the second setup list with fewer batches: 224 px at 256 takes minutes):

    python benchmarks/cpu_precision.py --setups minigrid_56px_map2 carracing_96px_map2 > docs/benchmarks_cpu_precision.jsonl
    python benchmarks/cpu_precision.py --setups pooled_224px --batches 1 8 16 >> docs/benchmarks_cpu_precision.jsonl
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from sb3_pretrained.encoder import CPU_NATIVE_BF16, BackboneEncoder
from sb3_pretrained.machine import cpu_description

SETUPS = {
    "minigrid_56px_map2": dict(observation_shape=(3, 56, 56), input_size="native", feature_index=2),
    "carracing_96px_map2": dict(observation_shape=(3, 96, 96), input_size="native", feature_index=2),
    "pooled_224px": dict(observation_shape=(3, 224, 224), input_size=224),
}


def milliseconds(encoder: BackboneEncoder, images: torch.Tensor, repeats: int, rounds: int) -> float:
    with torch.no_grad():
        encoder(images)
        best = float("inf")
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(repeats):
                encoder(images)
            best = min(best, (time.perf_counter() - start) / repeats)
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 16, 64, 256])
    parser.add_argument("--setups", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    machine = {"machine": cpu_description(), "native_bf16": CPU_NATIVE_BF16, "torch": torch.__version__, "threads": 1}
    for setup in args.setups:
        options = SETUPS[setup]
        shape = options["observation_shape"]
        encoders = {amp: BackboneEncoder(model_name="efficientnet_lite0", pretrained=False, amp=amp, **options).eval()
                    for amp in (False, True)}  # fmt: skip
        for batch in args.batches:
            images = torch.rand(batch, *shape)
            fp32, bf16 = (milliseconds(encoders[amp], images, args.repeats, args.rounds) for amp in (False, True))
            row = {"setup": setup, "batch": batch, "fp32_ms": round(fp32, 2), "bf16_ms": round(bf16, 2),
                   "bf16_over_fp32": round(bf16 / fp32, 2), "default_runs": "bf16" if CPU_NATIVE_BF16 else "fp32"}
            print(json.dumps({**row, **machine}), flush=True)


if __name__ == "__main__":
    main()
