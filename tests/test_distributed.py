"""bf16 autocast only where the hardware runs it natively: emulated bf16 on a CPU
without AVX512-BF16/AMX made a pretraining step 13x slower (10.9 s vs 0.80 s)."""

import torch

from ctx_core import distributed
from ctx_core.config import PretrainConfig
from ctx_core.distributed import Distributed, bf16_autocast
from ctx_core.pretext.train import ContextPrediction

CPU = torch.device("cpu")


def test_cpu_autocast_follows_the_cpus_bf16_support(monkeypatch):
    assert bf16_autocast(False, CPU) is False
    monkeypatch.setattr(distributed, "cpu_has_native_bf16", lambda: True)
    assert bf16_autocast(True, CPU) is True
    monkeypatch.setattr(distributed, "cpu_has_native_bf16", lambda: False)
    assert bf16_autocast(True, CPU) is False


def test_the_pretraining_step_asks_the_same_question(monkeypatch):
    cfg = PretrainConfig(amp=True)
    for native in (False, True):
        monkeypatch.setattr(distributed, "cpu_has_native_bf16", lambda native=native: native)
        assert ContextPrediction(None, cfg, Distributed(), CPU).amp is native
