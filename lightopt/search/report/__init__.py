"""The sweep report: ``report.html``, its pictures and ``comparison.csv``, written into a sweep directory
from its Optuna study and its trials' run directories (what the page shows: README, "Sweep report").

One concept per module, each importing the others by full path (never from this package):
:mod:`~lightopt.search.report.study` finds and opens a sweep's study, :mod:`~lightopt.search.report.runs`
reads the trials' ``metrics.csv``, :mod:`~lightopt.search.report.comparison` is the optimizer x schedule
table, :mod:`~lightopt.search.report.pictures` draws the PNGs, :mod:`~lightopt.search.report.page` renders
``templates/report.html.j2``, :mod:`~lightopt.search.report.build` puts them together and
:mod:`~lightopt.search.report.sweep_end` is what the sweeper calls when a sweep ends. The trial table is
:mod:`lightopt.search.trials`; publishing to W&B is :mod:`lightopt.search.wandb_summary`. This module only
re-exports.
"""

from lightopt.search.report.build import Report, build_report, make_report
from lightopt.search.report.comparison import Cell, Comparison, cell_text, comparison_table, write_comparison_csv
from lightopt.search.report.pictures import PICTURES, Picture
from lightopt.search.report.study import NotASweepDir, SweepInfo, load_study, sweep_info
from lightopt.search.report.sweep_end import after_sweep
from lightopt.search.trials import TrialRow
from lightopt.search.wandb_summary import SUMMARY_RUN_ID_ATTR, log_to_wandb, wandb_settings

__all__ = [
    "PICTURES", "SUMMARY_RUN_ID_ATTR", "Cell", "Comparison", "NotASweepDir", "Picture", "Report", "SweepInfo",
    "TrialRow", "after_sweep", "build_report", "cell_text", "comparison_table", "load_study", "log_to_wandb",
    "make_report", "sweep_info", "wandb_settings", "write_comparison_csv",
]
