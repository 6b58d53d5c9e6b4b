"""bf16 autocast against fp32 for one pretraining step, on this machine's CPU.

Why: autocast pays where the CPU has native bf16 (AMX, AVX512-BF16) and costs
where oneDNN emulates it; ``ctx_core.distributed.bf16_autocast`` decides from
oneDNN's capability check, and this measures what that choice is worth.
One step = the default batch (1,280 pairs = 32 grids x 40 pairs, 288 patches of
32 px, compact tower, channels_last) forward + backward + AdamW, random data;
the ratio of medians is the result (both in this run, so machine load cancels).

    .venv/bin/python benchmarks/bench_precision.py [--steps 8]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
import torch.nn.functional as F

from ctx_core.distributed import cpu_has_native_bf16
from ctx_core.models.siamese import ContextPredictionNet
from ctx_core.models.towers import build_tower


def step_seconds(amp: bool, steps: int) -> float:
    torch.manual_seed(0)
    net = ContextPredictionNet(build_tower("compact", 32)).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    patches = torch.randn(288, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    pairs, labels = torch.randint(0, 288, (1280, 2)), torch.randint(0, 8, (1280,))
    times = []
    for _ in range(steps + 2):  # the first two warm up oneDNN's kernels
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(net(patches, pairs).float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    kept = sorted(times[2:])
    return kept[len(kept) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    fp32, bf16 = step_seconds(False, args.steps), step_seconds(True, args.steps)
    print(json.dumps({
        "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "native_bf16": cpu_has_native_bf16(),
        "fp32_s_per_step": round(fp32, 3), "bf16_autocast_s_per_step": round(bf16, 3),
        "bf16_over_fp32": round(bf16 / fp32, 2),
    }, indent=2))


if __name__ == "__main__":
    main()
