"""The README's code works as written."""

import re

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from tests.helpers import ROOT


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_plugin_example_trains():
    namespace: dict = {}
    example = next(block for block in python_blocks() if "lightopt.configure_optimizers" in block)
    exec(example, namespace)  # noqa: S102 - the README's own example
    module = namespace["MyModule"]()
    x = torch.randn(64, 64)
    data = DataLoader(TensorDataset(x, torch.randint(0, 10, (64,))), batch_size=8)
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    before = module.net[0].weight.detach().clone()
    trainer.fit(module, data)
    assert trainer.global_step == 16
    assert not torch.equal(before, module.net[0].weight)
    assert trainer.lr_scheduler_configs[0].interval == "step"
    assert trainer.optimizers[0].param_groups[0]["lr"] < 3e-3  # the cosine schedule has decayed it


def table_choices(header: str) -> set[str]:
    """The backticked names in the first column of the README table whose header starts with `header`."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index(f"| {header}"):].split("\n\n", 1)[0]
    rows = table.splitlines()[2:]
    return {name for row in rows for name in re.findall(r"`([a-z_]+)`", row.split("|")[1])}


def test_sweeper_tables_list_exactly_the_shipped_configs():
    sweeper = ROOT / "hydra_plugins" / "lightopt_sweeper" / "conf" / "hydra" / "sweeper"
    assert table_choices("`hydra/sweeper/sampler=`") == {p.stem for p in (sweeper / "sampler").glob("*.yaml")}
    assert table_choices("`search=`") == {p.stem for p in (ROOT / "conf" / "search").glob("*.yaml")}
    pruners = re.search(r"`hydra/sweeper/pruner=`(.*?)\. Each", (ROOT / "README.md").read_text(), flags=re.S)
    assert set(re.findall(r"`([a-z_]+)`", pruners.group(1))) == {p.stem for p in (sweeper / "pruner").glob("*.yaml")}
