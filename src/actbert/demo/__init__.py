"""``actbert demo``: the whole pipeline on the synthetic benchmark, as a chain of library calls.

- ``profiles``: what sizes a run (``DemoProfile``, ``PROFILES``), where it writes (``DemoPaths``),
  the arguments of the data stages and their equivalent command lines;
- ``pipeline``: the stages (``run_demo``, ``run_tasks``, ``StageBook``);
- ``report``: result files -> tables, win count, plots and ``OUT/report.md``.
"""

from actbert.demo.pipeline import DATA_STAGE_CALLS, StageBook, run_demo, run_tasks
from actbert.demo.profiles import (
    DATA_STAGES,
    PROFILES,
    STAGES,
    VARIANT_TITLES,
    VARIANTS,
    ZERO_SHOT_AND_FINETUNED,
    DemoPaths,
    DemoProfile,
    command_options,
    pretrain_overrides,
    stage_arguments,
    stage_commands,
)
from actbert.demo.report import (
    format_value,
    load_results,
    plot_retrieval_example,
    plot_task_scores,
    results_table,
    retrieval_example,
    task_scores,
    wins,
    write_report,
)

__all__ = [
    "DATA_STAGES",
    "DATA_STAGE_CALLS",
    "PROFILES",
    "STAGES",
    "VARIANTS",
    "VARIANT_TITLES",
    "ZERO_SHOT_AND_FINETUNED",
    "DemoPaths",
    "DemoProfile",
    "StageBook",
    "command_options",
    "format_value",
    "load_results",
    "plot_retrieval_example",
    "plot_task_scores",
    "pretrain_overrides",
    "results_table",
    "retrieval_example",
    "run_demo",
    "run_tasks",
    "stage_arguments",
    "stage_commands",
    "task_scores",
    "wins",
    "write_report",
]
