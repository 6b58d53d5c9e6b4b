"""The resume check every pretext task's tests share."""

from pathlib import Path

import torch

from ctx_core.pretext.train import train


def assert_resumes_bitwise(cfg, sampler, folder: Path, stop_at: int = 8):
    """Train ``cfg`` uninterrupted, then stopped after ``stop_at`` steps (a checkpoint there) and
    resumed: the resumed run's curve starts at step 1 and its losses and weights equal the
    uninterrupted run's bit for bit. Returns the resumed run's result."""
    full = train(cfg, sampler, folder / "full", progress=False)
    killed = train(cfg, sampler, folder / "resumed", progress=False, stop_after=stop_at)
    assert [h["step"] for h in killed.history][-1] == stop_at
    resumed = train(cfg, sampler, folder / "resumed", resume=True, progress=False)
    tail_full = [h["loss"] for h in full.history if h["step"] > stop_at]
    tail_resumed = [h["loss"] for h in resumed.history if h["step"] > stop_at]
    assert [h["step"] for h in resumed.history] == [h["step"] for h in full.history]  # the curve from step 1
    assert len(tail_resumed) == cfg.steps - stop_at and tail_resumed == tail_full
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    return resumed
