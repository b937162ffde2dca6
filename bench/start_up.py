"""One training run's start-up, phase by phase: ``python bench/start_up.py LOGGER``.

Prints one JSON line: the wall-clock time (``time.time()``, comparable with the launching process's clock) at
which each phase ended: ``torch`` and ``lightning`` imported, ``lightopt`` imported, the config composed
(Hydra, the shipped ``conf/``), the run built (data, model, loggers, trainer) and the first training step
started. ``bench/run.py``'s ``cpu_start_up`` case launches it and takes the differences.
"""

import sys
import time

marks = {}
import torch  # noqa: E402,F401

marks["torch"] = time.time()
import lightning as L  # noqa: E402

marks["lightning"] = time.time()
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from lightopt.run import task, training  # noqa: E402
from lightopt.run.settings import check_config  # noqa: E402

marks["lightopt"] = time.time()
from hydra import compose, initialize_config_dir  # noqa: E402

with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
    cfg = compose(config_name="train", overrides=["trainer.max_steps=1", "trainer.limit_val_batches=1",
                                                  f"logger={sys.argv[1]}", "console.summary=false",
                                                  "trainer.enable_progress_bar=false", "checkpoint.enabled=false"])
cfg = task.resolve(cfg)
marks["compose"] = time.time()
built = training.build(cfg, check_config(cfg), Path(sys.argv[2]))
marks["build"] = time.time()


class FirstStep(L.Callback):
    def on_train_batch_start(self, *args: object) -> None:
        marks.setdefault("first_step", time.time())


built.trainer.callbacks.append(FirstStep())
training.fit(built)
print(__import__("json").dumps(marks), flush=True)
