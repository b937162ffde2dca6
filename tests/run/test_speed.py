"""Speed knobs (``trainer.precision: auto``, ``trainer.tf32``, ``trainer.compile``): the decisions as pure
functions of the device's capabilities (tested everywhere), and the real thing on a CUDA GPU (skipped without)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from lightopt.errors import ConfigError
from lightopt.run import speed
from tests.helpers import compose_cfg

AMPERE = {"cuda_available": True, "bf16_supported": True, "capability": (8, 0)}
TURING = {"cuda_available": True, "bf16_supported": False, "capability": (7, 5)}
CPU_ONLY = {"cuda_available": False, "bf16_supported": False, "capability": None}
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize(
    "requested,accelerator,flags,expected",
    [
        ("auto", "auto", AMPERE, "bf16-mixed"),
        ("auto", "gpu", AMPERE, "bf16-mixed"),
        ("auto", "cuda", AMPERE, "bf16-mixed"),
        ("auto", "cpu", AMPERE, "32-true"),  # trainer=cpu on a GPU machine
        ("auto", "auto", TURING, "32-true"),  # no bf16: fp16 needs loss scaling, so only on request
        ("auto", "auto", CPU_ONLY, "32-true"),
        ("auto", "mps", CPU_ONLY, "32-true"),
        ("16-mixed", "auto", TURING, "16-mixed"),  # explicit values pass through
        ("32-true", "gpu", AMPERE, "32-true"),
        ("bf16-mixed", "cpu", CPU_ONLY, "bf16-mixed"),
        (None, "gpu", AMPERE, None),  # null: Lightning's default (32-true)
    ],
)
def test_precision_decision(requested, accelerator, flags, expected):
    got = speed.choose_precision(requested, accelerator=accelerator, cuda_available=flags["cuda_available"],
                                 bf16_supported=flags["bf16_supported"])
    assert got == expected


@pytest.mark.parametrize(
    "requested,accelerator,flags,expected",
    [
        (True, "auto", AMPERE, True),
        (True, "gpu", {**AMPERE, "capability": (9, 0)}, True),  # Hopper
        (False, "auto", AMPERE, False),  # turned off on a GPU that has it: full fp32 is set
        (True, "auto", TURING, None),  # no TF32 on this GPU: nothing to set
        (True, "cpu", AMPERE, None),  # the run does not use the GPU
        (True, "auto", CPU_ONLY, None),
        (False, "auto", CPU_ONLY, None),
    ],
)
def test_tf32_decision(requested, accelerator, flags, expected):
    got = speed.use_tf32(requested, accelerator=accelerator, cuda_available=flags["cuda_available"],
                         capability=flags["capability"])
    assert got is expected


def test_compile_options():
    assert speed.compile_options(False) is None and speed.compile_options(None) is None
    assert speed.compile_options(True) == {}
    assert speed.compile_options("max-autotune") == {"mode": "max-autotune"}
    with pytest.raises(ConfigError, match="trainer.compile='fast'.*reduce-overhead"):
        speed.compile_options("fast")
    with pytest.raises(ConfigError, match="trainer.tf32='yes'"):
        speed.use_tf32("yes", accelerator="auto", cuda_available=False, capability=None)


class Recorder(torch.nn.Linear):
    def __init__(self):
        super().__init__(2, 2)
        self.compiled_with = None

    def compile(self, **kwargs):  # noqa: A003 - nn.Module.compile's name
        self.compiled_with = kwargs


@pytest.mark.parametrize("trainer", ["default", "gpu", "ddp", "cpu", "ddp_cpu"])
def test_trainer_configs_resolve_to_lightning_arguments(trainer, monkeypatch):
    set_precision = []
    monkeypatch.setattr(torch, "set_float32_matmul_precision", set_precision.append)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", torch.backends.cudnn.allow_tf32)
    cfg = compose_cfg(f"trainer={trainer}").trainer
    assert (cfg.precision, cfg.tf32, cfg.compile) == ("auto", True, False)
    model = Recorder()
    on_gpu = speed.configure(cfg, model, flags=AMPERE)
    on_cpu = speed.configure(cfg, model, flags=CPU_ONLY)
    for resolved in (on_gpu, on_cpu):
        assert not set(speed.SPEED_KEYS) & set(resolved)  # never passed to lightning.Trainer
        assert {k: v for k, v in resolved.items() if k != "precision"} == {
            k: v for k, v in OmegaConf.to_container(cfg).items() if k not in ("precision", *speed.SPEED_KEYS)}
    uses_gpu = trainer != "cpu" and trainer != "ddp_cpu"
    assert on_gpu.precision == ("bf16-mixed" if uses_gpu else "32-true")
    assert on_cpu.precision == "32-true"
    assert set_precision == (["high"] if uses_gpu else [])  # only the GPU run switched TF32 on
    assert model.compiled_with is None


def test_configure_compiles_and_switches_tf32_off_when_asked(monkeypatch):
    set_precision = []
    monkeypatch.setattr(torch, "set_float32_matmul_precision", set_precision.append)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    cfg = compose_cfg("trainer=gpu", "trainer.tf32=false", "trainer.compile=true", "trainer.precision=16-mixed")
    model = Recorder()
    resolved = speed.configure(cfg.trainer, model, flags=AMPERE)
    assert resolved.precision == "16-mixed"
    assert set_precision == ["highest"] and torch.backends.cudnn.allow_tf32 is False
    assert model.compiled_with == {}


def test_lightning_accepts_the_resolved_cpu_config():
    import lightning as L

    cfg = speed.configure(compose_cfg("trainer=cpu").trainer, Recorder(), flags=CPU_ONLY)
    trainer = L.Trainer(**{k: v for k, v in OmegaConf.to_container(cfg).items() if k != "_target_"},
                        logger=False, enable_checkpointing=False)
    assert trainer.precision == "32-true"


# ---- on a CUDA GPU only ------------------------------------------------------------------------------------


@needs_cuda
def test_auto_precision_and_tf32_on_this_gpu(tmp_path, caplog):
    import logging

    from lightopt.run.training import run

    before = torch.get_float32_matmul_precision()
    try:
        cfg = compose_cfg("experiment=gpt", "data.num_tokens=20000", "trainer.max_epochs=1", "logger=csv",
                          "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false")
        with caplog.at_level(logging.INFO, logger="lightopt.run.speed"):
            run(cfg, tmp_path)
        expected = "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
        assert f"trainer.precision=auto: {expected}" in caplog.text
        major, _ = torch.cuda.get_device_capability()
        assert torch.get_float32_matmul_precision() == ("high" if major >= 8 else before)
    finally:
        torch.set_float32_matmul_precision(before)
    import json

    res = json.loads((tmp_path / "results.json").read_text())
    assert res["status"] == "completed" and res["metrics"]["val/loss"]["final"] < 5.0


@needs_cuda
@pytest.mark.skipif(not (torch.cuda.is_available() and torch.cuda.is_bf16_supported()), reason="needs bf16")
def test_gpt_forward_in_bf16_autocast_on_gpu():
    from lightopt.run.models import GPT

    model = GPT(256, 64).cuda()
    x = torch.randint(0, 256, (4, 64), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(x)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    full = model(x)
    assert (logits.float() - full).abs().max() < 0.1


@needs_cuda
@pytest.mark.slow
def test_gpt_compiled_on_gpu(tmp_path):
    from lightopt.run.training import run

    torch._dynamo.reset()
    cfg = compose_cfg("experiment=gpt", "data.num_tokens=20000", "trainer.max_epochs=1", "logger=csv",
                      "trainer.compile=true", "trainer.enable_progress_bar=false")
    run(cfg, tmp_path)
    torch._dynamo.reset()
    assert (tmp_path / "results.json").exists()


@pytest.mark.parametrize(
    "requested,cores,processes,environment,expected",
    [
        ("auto", 8, 1, None, (8, "auto: 8 cores / 1 process")),
        ("auto", 8, 2, None, (4, "auto: 8 cores / 2 processes")),  # two DDP ranks on this machine
        ("auto", 2, 4, None, (1, "auto: 2 cores / 4 processes")),  # more ranks than cores: one each
        ("auto", 8, 2, "3", (3, "OMP_NUM_THREADS=3")),  # the user's (or the launching rank's) choice
        ("auto", 8, 1, "many", (8, "auto: 8 cores / 1 process")),  # unreadable: as if unset
        (6, 8, 2, "3", (6, "trainer.threads")),  # an explicit count wins over everything
    ],
)
def test_thread_count_decision(requested, cores, processes, environment, expected):
    assert speed.choose_threads(requested, cores=cores, processes=processes, environment=environment) == expected


@pytest.mark.parametrize("bad", [0, -2, "two", True, 1.5])
def test_a_bad_thread_count_names_the_key(bad):
    with pytest.raises(ConfigError, match=r"trainer\.threads.*auto \| an integer >= 1"):
        speed.choose_threads(bad, cores=2, processes=1, environment=None)


def test_ddp_ranks_inherit_the_chosen_threads_while_they_start(monkeypatch):
    monkeypatch.delenv(speed.THREADS_ENV, raising=False)
    with speed.threads_for_ranks(3, distributed=True):
        assert speed.os.environ[speed.THREADS_ENV] == "3"  # Lightning's launcher then keeps it
    assert speed.THREADS_ENV not in speed.os.environ  # the next run of an in-process sweep decides afresh
    with speed.threads_for_ranks(3, distributed=False):
        assert speed.THREADS_ENV not in speed.os.environ
    monkeypatch.setenv(speed.THREADS_ENV, "1")
    with speed.threads_for_ranks(3, distributed=True):
        assert speed.os.environ[speed.THREADS_ENV] == "1"  # a value the user set is theirs
