"""trainer=fsdp: composes and builds Lightning's FSDP strategy on any machine (training with it needs GPUs)."""

import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.strategies import FSDPStrategy
from torch.distributed.fsdp.wrap import ModuleWrapPolicy

from lightopt.errors import ConfigError
from lightopt.run.models import Block
from lightopt.run.sharding import module_classes
from tests.helpers import compose_cfg


def test_the_fsdp_config_builds_the_strategy_with_the_gpt_blocks_as_units():
    cfg = compose_cfg("trainer=fsdp", "model=gpt", "data=tokens")
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.devices == -1
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, FSDPStrategy)
    policy = strategy.kwargs["auto_wrap_policy"]  # Lightning's ModuleWrapPolicy over the classes given
    assert isinstance(policy, ModuleWrapPolicy)
    assert policy(Block(16, 2), recurse=False, nonwrapped_numel=0)
    assert not policy(torch.nn.Linear(2, 2), recurse=False, nonwrapped_numel=0)
    assert strategy.sharding_strategy.name == "FULL_SHARD"


@pytest.mark.parametrize("path,problem", [("lightopt.run.models.Nothing", "cannot import"),
                                          ("lightopt.run.models.make_activation", "cannot import|not an nn.Module")])
def test_wrap_classes_must_be_modules(path, problem):
    with pytest.raises(ConfigError, match=problem):
        module_classes([path])
