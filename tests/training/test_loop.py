"""The shared training loop: schedule, windowed metrics, exact resumption, checkpoint
cadence, and the one error both trainers stop with when the loss is not finite."""

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ctx_core.checkpoints import CheckpointError
from ctx_core.config import DetectionConfig, PretrainConfig
from ctx_core.distributed import Distributed
from ctx_core.errors import UserError
from ctx_core.training import (LoopSettings, Method, MetricLogger, NonFiniteLoss, Schedule, SmoothedValue, StepSums,
                               fit, lr_factor, milestone_steps)
from ctx_core.training import state as state_mod

CPU = torch.device("cpu")


# ---------------------------------------------------------------- schedule

def plain_pretrain_factor(step: int, steps: int, warmup: int, decay: str) -> float:
    """Warm-up (s + 1) / W, then cosine or x0.1 at 2/3 and 8/9 of the steps after it."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    if decay == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return 0.1 ** ((progress >= 2 / 3) + (progress >= 8 / 9))


def plain_detection_factor(step: int, steps: int, warmup: int, fractions: tuple[float, ...]) -> float:
    """torchvision's warm-up from 1/1000, then x0.1 once ``step >= f * steps`` for each fraction."""
    if step < warmup:
        alpha = step / warmup
        return 1e-3 * (1 - alpha) + alpha
    return 0.1 ** len([f for f in fractions if step >= f * steps])


@pytest.mark.parametrize("steps,warmup", [(1, 0), (9, 3), (100, 10), (110, 10), (180, 0), (37, 50), (3000, 100)])
def test_schedule_equals_a_plain_computation(steps, warmup):
    for decay in ("cosine", "step"):
        schedule = Schedule(steps, warmup, decay=decay,
                            milestones=milestone_steps((2 / 3, 8 / 9), warmup, max(1, steps - warmup)))
        for s in range(steps + 2):
            assert lr_factor(s, schedule) == pytest.approx(plain_pretrain_factor(s, steps, warmup, decay),
                                                           rel=1e-12, abs=1e-15), (decay, s)
    fractions = (0.55, 0.67, 0.89)
    schedule = Schedule(steps, warmup, warmup_from=1e-3, decay="step", milestones=milestone_steps(fractions, 0, steps))
    for s in range(steps + 2):
        assert lr_factor(s, schedule) == pytest.approx(plain_detection_factor(s, steps, warmup, fractions),
                                                       rel=1e-12, abs=1e-15), s


def test_schedule_landmarks_and_bad_values():
    cosine = Schedule(110, 10)
    assert lr_factor(0, cosine) == pytest.approx(0.1) and lr_factor(9, cosine) == 1.0
    assert lr_factor(60, cosine) == pytest.approx(0.5) and lr_factor(110, cosine) == 0.0
    # the first step at or past each fraction, as `step >= f * steps` decides it: 0.55 * 100 is 55.00000000000001
    assert milestone_steps((0.67, 0.89), 0, 100) == (67, 89) and milestone_steps((0.55,), 0, 100) == (56,)
    assert milestone_steps((2 / 3, 8 / 9), 10, 90) == (70, 90)
    with pytest.raises(ValueError, match="decay 'linear': expected one of cosine, step"):
        Schedule(10, decay="linear")
    with pytest.raises(ValueError, match="steps = 0 must be >= 1"):
        Schedule(0)


# ---------------------------------------------------------------- metrics

def test_metric_logger_means_equal_numpy():
    rng = np.random.default_rng(0)
    values, weights = rng.normal(size=23), rng.integers(1, 9, size=23).astype(float)
    logger = MetricLogger(window=5)
    for k, (v, n) in enumerate(zip(values, weights), start=1):
        logger.update({"loss": v, "twice": 2 * v}, n)
        recent = slice(max(0, k - 5), k)
        assert logger.avgs()["loss"] == pytest.approx(np.average(values[recent], weights=weights[recent]))
        assert logger.avgs()["twice"] == pytest.approx(2 * np.average(values[recent], weights=weights[recent]))
        last = min(k, 3)
        assert logger.avgs(last=last)["loss"] == pytest.approx(
            np.average(values[k - last:k], weights=weights[k - last:k]))
        assert logger.global_avgs()["loss"] == pytest.approx(np.average(values[:k], weights=weights[:k]))
        assert logger.meters["loss"].value == pytest.approx(v)


def test_smoothed_value_refuses_what_its_window_cannot_answer():
    meter = SmoothedValue(window=3)
    for v in (1.0, 2.0, 3.0, 4.0):
        meter.update(v)
    assert meter.avg() == 3.0 and meter.global_avg == 2.5
    with pytest.raises(ValueError, match=r"avg\(last=4\): between 1 and 3 steps"):
        meter.avg(last=4)
    with pytest.raises(ValueError, match="window = 0"):
        SmoothedValue(window=0)


# ---------------------------------------------------------------- the loop on a toy regression

class Toy(Method):
    """Least squares on batches drawn from (seed, step); dropout draws from the global torch RNG,
    so an exact resumption needs the checkpoint's RNG state too."""

    def __init__(self, nan_at: int | None = None):
        self.nan_at = nan_at

    def batches(self, start, stop):
        for step in range(start, stop):
            g = torch.Generator().manual_seed(1000 + step)
            x = torch.randn(8, 4, generator=g)
            yield step, (x, x @ torch.tensor([1.0, -2.0, 0.5, 3.0]))

    def step(self, net, step, batch):
        x, y = batch
        loss = F.mse_loss(net(x).squeeze(1), y)
        if step == self.nan_at:
            loss = loss * float("nan")
        loss.backward()
        return StepSums({"loss": loss.item() * len(y)}, len(y))


def toy_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.3), nn.ReLU(), nn.Linear(16, 1))


def toy_settings(steps=10, log_every=1, checkpoint_every=3) -> LoopSettings:
    return LoopSettings("toy", Schedule(steps, 2), log_every, checkpoint_every, frozenset({"steps"}), "lower toy.lr")


def toy_fit(folder: Path, settings: LoopSettings | None = None, config=None, method=None, **kw):
    model = toy_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return fit(model, optimizer, method or Toy(), settings or toy_settings(), folder, config or {"lr": 0.05},
               Distributed(), CPU, progress=False, **kw)


def test_resume_is_bitwise_an_uninterrupted_run(tmp_path, monkeypatch):
    full = toy_fit(tmp_path / "full")
    part = toy_fit(tmp_path / "resumed", stop_after=4)
    assert (part.start_step, part.steps) == (0, 4)
    torch.rand(3)  # the global RNG moves on between the two processes' lives
    resumed = toy_fit(tmp_path / "resumed", resume=True)
    assert (resumed.start_step, resumed.steps) == (4, 10)
    # the resumed call's history starts at step 0: the checkpoint kept the rows before it
    assert resumed.history[:len(part.history)] == part.history
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
    assert [h["lr"] for h in resumed.history] == [h["lr"] for h in full.history]
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    # the control: without the checkpoint's RNG state the dropout masks, hence the losses, differ
    toy_fit(tmp_path / "control", stop_after=4)
    monkeypatch.setattr(state_mod, "set_rng_state", lambda rng: None)
    forgetful = toy_fit(tmp_path / "control", resume=True)
    assert [h["loss"] for h in forgetful.history] != [h["loss"] for h in resumed.history]


def test_a_resumed_run_names_the_run_it_continues_and_keeps_its_curve(tmp_path):
    part = toy_fit(tmp_path / "ck", stop_after=5, run_id="run-a")
    assert part.resumed_from is None
    resumed = toy_fit(tmp_path / "ck", resume=True, run_id="run-b")
    assert resumed.resumed_from == "run-a"
    assert [h["step"] for h in resumed.history] == list(range(1, 11))
    assert [h["step"] for h in resumed.history[:5]] == [h["step"] for h in part.history]
    # a checkpoint from before checkpoints kept their rows and run id still resumes, with no rows before it
    saved = torch.load(resumed.last_checkpoint, weights_only=True)
    assert saved["run_id"] == "run-b" and len(saved["history"]) == 10
    assert state_mod.saved_history({"step": 4}) == [] and state_mod.saved_run_id({"step": 4}) is None


def test_resume_checks_the_settings(tmp_path):
    toy_fit(tmp_path, stop_after=4)
    with pytest.raises(CheckpointError, match=r"other settings \(lr: 0.05 -> 0.1\)"):
        toy_fit(tmp_path, config={"lr": 0.1}, resume=True)
    with pytest.raises(CheckpointError, match="step-0000004.pt is at step 4, already >= toy.steps = 4"):
        toy_fit(tmp_path, toy_settings(steps=4), resume=True)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        toy_fit(tmp_path / "empty", resume=True)


def test_checkpoint_cadence_logging_rows_and_format(tmp_path, monkeypatch):
    written = []
    real_write = state_mod.write_checkpoint
    monkeypatch.setattr(state_mod, "write_checkpoint", lambda folder, step, blob: written.append(step)
                        or real_write(folder, step, blob))
    folder = tmp_path / "ck"
    folder.mkdir()
    (folder / "step-0000099.pt").write_bytes(b"an older run's")  # a fresh run deletes it
    logged = []
    result = toy_fit(folder, toy_settings(steps=8, log_every=3, checkpoint_every=3), stop_after=7,
                     on_log=lambda step, m: logged.append(step))
    assert written == [3, 6, 7]  # every checkpoint_every steps and the last step of the call
    assert sorted(p.name for p in folder.glob("*.pt")) == ["step-0000006.pt", "step-0000007.pt"]
    assert result.last_checkpoint == folder / "step-0000007.pt"
    assert logged == [3, 6, 7] == [h["step"] for h in result.history]
    blob = torch.load(result.last_checkpoint, weights_only=True)
    assert set(blob) == {"step", "model", "optimizer", "scheduler", "rng", "config", "history", "run_id"}
    assert blob["step"] == 7 and blob["history"] == result.history and blob["run_id"] == ""

    # each row is the mean over the steps since the previous row: the last one covers step 7 alone
    per_step = toy_fit(tmp_path / "per_step", toy_settings(steps=8, log_every=1), stop_after=7)
    losses = [h["loss"] for h in per_step.history]
    assert [h["loss"] for h in result.history] == pytest.approx([np.mean(losses[:3]), np.mean(losses[3:6]), losses[6]])
    written.clear()
    toy_fit(folder, toy_settings(steps=8, log_every=3, checkpoint_every=3), resume=True)
    assert written == [8]


def test_a_non_finite_loss_names_the_step_and_lr(tmp_path):
    with pytest.raises(NonFiniteLoss) as caught:
        toy_fit(tmp_path, method=Toy(nan_at=1))
    # step 1 of a 2-step warm-up trains at the full lr: 0.05 * (1 + 1) / 2
    assert str(caught.value) == "training stopped at step 1: the loss is nan (lr 0.05); lower toy.lr"
    assert isinstance(caught.value, UserError)


# ---------------------------------------------------------------- both trainers stop with it

def test_pretraining_stops_with_non_finite_loss(synth_root, tmp_path, monkeypatch):
    from ctx_core.pretext import tasks as pretext_tasks  # where every task's training step gets its batches
    from ctx_core.pretext import train as pretext_train
    from ctx_core.pretext.data import PairSampler, usable_images

    cfg = PretrainConfig(batch_size=16, steps=12, warmup_steps=2, checkpoint_every=100, log_every=1, workers=0,
                         amp=False, pairs_per_grid=8, eval_pairs=64)
    sampler = PairSampler(usable_images(sorted((synth_root / "JPEGImages").glob("*.jpg")), cfg), cfg)
    real_loader = pretext_tasks.pair_loader

    def poisoned(*args, **kw):  # a NaN pixel in step 3's patches: the real model, loss and reduction see it
        for batch in real_loader(*args, **kw):
            if batch.step == 3:
                batch.patches[0, 0, 0, 0] = float("nan")
            yield batch

    monkeypatch.setattr(pretext_tasks, "pair_loader", poisoned)
    lr = cfg.lr * lr_factor(3, pretext_train.schedule(cfg))
    with pytest.raises(NonFiniteLoss, match=rf"^training stopped at step 3: the loss is nan \(lr {lr:.3g}\); "
                                            r"lower pretrain.lr or turn off pretrain.amp$"):
        pretext_train.train(cfg, sampler, tmp_path / "ck", progress=False)


def test_finetuning_stops_with_non_finite_loss(synth_root, tmp_path):
    from ctx_core.detection.data import TrainingSet
    from ctx_core.detection.model import build_detector, he_init
    from ctx_core.detection.train import train_detector
    from ctx_core.models.towers import build_tower
    from ctx_core.store.labelled import read_detection_split

    cfg = DetectionConfig(min_size=96, max_size=128, scale_jitter=(1.0, 1.0), head_dim=32, rpn_proposals=64,
                          rois_per_image=32, lr=0.01, warmup_steps=2, log_every=1, checkpoint_every=10, steps=4,
                          batch_size=2, device="cpu")
    split = read_detection_split(synth_root, "trainval")
    data = TrainingSet(split.images, split.classes, batch_size=2, seed=0)
    real_batch = data.batch

    def poisoned(step, rank=0, world=1):  # NaN images at step 1
        images, targets = real_batch(step, rank, world)
        return ([img * float("nan") for img in images] if step == 1 else images), targets

    data.batch = poisoned
    torch.manual_seed(0)
    model = build_detector(build_tower("compact", 32), cfg, len(split.classes), [0.5] * 3, [0.25] * 3)
    he_init(model.backbone.trunk, seed=0)
    lr = cfg.lr * plain_detection_factor(1, cfg.steps, cfg.warmup_steps, cfg.lr_decay_at)  # mid warm-up
    with pytest.raises(NonFiniteLoss, match=rf"^training stopped at step 1: the loss is nan \(lr {lr:.3g}\); "
                                            r"lower detection.lr or raise detection.warmup_steps$"):
        train_detector(model, data, cfg, tmp_path / "ck", {}, progress=False)


# ---------------------------------------------------------------- layering

def test_the_loop_imports_no_stage():
    allowed = {"ctx_core.checkpoints", "ctx_core.distributed", "ctx_core.errors"}
    package = Path(__file__).resolve().parents[2] / "ctx_core" / "training"
    for source in package.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                if name.startswith("ctx_core") and name != "ctx_core":
                    assert name in allowed or name.startswith("ctx_core.training"), (source.name, name)
            if isinstance(node, ast.ImportFrom) and node.module == "ctx_core":
                assert {a.name for a in node.names} <= {"checkpoints", "distributed", "errors"}, source.name
