"""Data-parallel training under ``torchrun``: ranks, the process group, reductions, global batch norm.

``torchrun`` (``python -m torch.distributed.run``) starts one process per
device and sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; a plain
``python`` or ``ctx`` launch is world size 1 and touches none of this.

The trainers keep three rules that make ``batch_size`` the *global* batch and
the result independent of the world size (up to float rounding):

- the global batch of a step is a pure function of ``(seed, step)``; rank
  ``r`` of ``W`` takes items ``[r B/W, (r+1) B/W)`` of it (:func:`shard`);
- gradients are averaged by DDP, metrics summed over ranks (:func:`all_sum`);
- batch-norm statistics are those of the global batch (:func:`global_batchnorm`).

Only rank 0 writes checkpoints, models and reports and logs to MLflow;
checkpoints are read by rank 0 and broadcast (:func:`from_main`), so other
nodes need not see rank 0's disk.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from ctx_core.errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job: ``rank`` of ``world``, ``local_rank`` on its node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def from_env() -> Distributed:
    """Rank and world size as ``torchrun`` sets them (a single process otherwise)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    return Distributed(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(choice: str, env: Distributed, section: str) -> torch.device:
    """``choice`` (``auto``/``cpu``/``cuda``) as a device; on CUDA, this rank's local GPU."""
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError(f"{section}.device = 'cuda' but no CUDA device is visible; use 'auto' or 'cpu'")
        if env.local_rank >= torch.cuda.device_count():
            raise UserError(f"local rank {env.local_rank} has no GPU: {torch.cuda.device_count()} visible on this node; "
                            f"launch at most that many processes per node (torchrun --nproc_per_node)")
        return torch.device("cuda", env.local_rank)
    return torch.device("cpu")


def bf16_autocast(requested: bool, device: torch.device) -> bool:
    """Whether to run bf16 autocast on ``device`` when the params ask for it (``amp: true``).

    CUDA: when the GPU supports bf16. CPU: only when oneDNN has native bf16
    kernels (AVX512-BF16 or AMX; oneDNN's own capability check). Elsewhere
    bf16 is emulated: measured on a 2-core AMD EPYC with AVX2 only
    (2026-12-01), a pretraining step took 10.9 s with autocast against 0.80 s
    in fp32, so the request is dropped there.
    """
    if not requested:
        return False
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_has_native_bf16()


def cpu_has_native_bf16() -> bool:
    """oneDNN's check for bf16 kernels on this CPU (AVX512-BF16 or AMX)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@contextlib.contextmanager
def process_group(env: Distributed, device: torch.device) -> Iterator[None]:
    """Join the job's process group (NCCL for CUDA, gloo for the CPU) for the block.

    Leaves it after the block only if it joined it; world size 1 does nothing.
    """
    if env.world == 1 or dist.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield
        dist.barrier()  # no rank tears the group down while another is still in a collective
    finally:
        dist.destroy_process_group()


def active() -> bool:
    """Whether collectives run: a process group of more than one rank exists."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def shard(total: int, env: Distributed, what: str) -> range:
    """The items of a global batch of ``total`` that ``env.rank`` takes: ``[r B/W, (r+1) B/W)``."""
    if total % env.world:
        raise UserError(f"{what} = {total} must divide evenly over {env.world} processes "
                        f"(it is the global batch; each process takes {what} / world size)")
    size = total // env.world
    return range(env.rank * size, (env.rank + 1) * size)


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """``values`` summed over all ranks (float64; unchanged in a single process)."""
    if not active():
        return list(values)
    vec = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(vec)
    return vec.tolist()


def from_main(read: Callable[[], T], env: Distributed) -> T:
    """``read()`` on rank 0, its result (or its :class:`UserError`) on every rank.

    Used for checkpoints: only rank 0 needs to see them, and a refused resume
    stops every rank with rank 0's message instead of leaving the others waiting.
    """
    if not active():
        return read()
    box: list[Any] = [None]
    if env.main:
        try:
            box[0] = ("ok", read())
        except UserError as exc:
            box[0] = ("error", exc)
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise value
    return value


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel when collectives run, else ``model`` itself."""
    if not active():
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


# ---------------------------------------------------------------- global batch norm

class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over the global batch of all ranks, on any device and backend.

    ``torch.nn.SyncBatchNorm`` refuses CPU tensors (its kernels are CUDA-only),
    so CPU (gloo) runs use this. The per-channel sums, then the sums of
    squared deviations from the global mean, are all-reduced with the
    autograd-aware ``torch.distributed.nn.functional.all_reduce`` (whose
    backward all-reduces the gradients): two small collectives forward, two
    backward, exact two-pass statistics. The output and its gradients are
    those of one ``BatchNorm`` over the concatenated batch, up to float
    rounding. Without a process group (evaluation, one process) it is plain
    ``BatchNorm``. Parameters and buffers are named as ``BatchNorm1d/2d``'s,
    so state dicts load into the plain modules.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and active()):
            return super().forward(input)
        self._check_input_dim(input)
        dims = [0, *range(2, input.dim())]
        shape = [1, input.shape[1]] + [1] * (input.dim() - 2)
        x = input.float()
        total = _all_reduce(torch.cat([x.sum(dims), x.new_tensor([input.numel() // input.shape[1]])]))
        count = total[-1]
        mean = total[:-1] / count
        centred = x - mean.view(shape)
        var = _all_reduce(centred.pow(2).sum(dims)) / count
        scale = torch.rsqrt(var + self.eps)
        if self.affine:
            y = torch.addcmul(self.bias.view(shape), centred, (scale * self.weight).view(shape))
        else:
            y = centred * scale.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                n = float(count)
                self.running_mean.lerp_(mean.detach().to(self.running_mean), momentum)
                self.running_var.lerp_((var.detach() * n / max(n - 1, 1.0)).to(self.running_var), momentum)
        return y.to(input.dtype)


def _all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, differentiable: the backward pass sums the gradients over ranks."""
    import warnings

    from torch.distributed.nn.functional import all_reduce

    with warnings.catch_warnings():
        # deprecated in favour of _functional_collectives, whose autograd support is still private
        warnings.simplefilter("ignore", FutureWarning)
        return all_reduce(tensor)


def global_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` with every ``BatchNorm1d/2d`` computing global-batch statistics under DDP.

    CUDA: ``torch.nn.SyncBatchNorm`` (one all-gather per layer, fused kernels).
    CPU: :class:`GlobalBatchNorm`. Call before building the optimizer; the
    parameter objects are kept, so either order works, but it is clearer.
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _to_global(model)


def _to_global(module: nn.Module) -> nn.Module:
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats, device=module.running_mean.device
                              if module.running_mean is not None else None)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        if module.track_running_stats:
            out.running_mean, out.running_var = module.running_mean, module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
        return out
    for name, child in module.named_children():
        module.add_module(name, _to_global(child))
    return module


def stage_run_on_main(settings: Any, stage: str, tags: dict[str, str], env: Distributed) -> contextlib.AbstractContextManager:
    """``ctx_core.tracking.stage_run`` on rank 0; elsewhere a run handle that logs nothing."""
    from ctx_core.tracking import StageRun, stage_run

    if env.main:
        return stage_run(settings, stage, tags)
    return contextlib.nullcontext(StageRun(None))
