"""The comparison's report: result files -> intervals, paired comparisons, table, JSON, plots.

Everything is a function of the run folder (result files, ``stages.json``, ``flops.json``,
``metrics.jsonl``), so the report can be rebuilt at any time, also from a partial run.

Per row (a model variant) and task, for each of the task's datasets, the per-item outcomes of the
primary metric (:func:`actbert.metrics.statistics.item_outcomes`) of every seed are kept; a cell
shows the mean over seeds and the 95% percentile bootstrap interval over the test items of the
seed-averaged outcomes (each item's outcome averaged over the seeds; the same items in every seed),
and, with several seeds, the standard deviation over seeds. A task with several datasets shows
the mean of its datasets' metrics (retrieval: YouCook2 zero-shot, MSR-VTT zero-shot and
fine-tuned; video QA: multiple choice and fill-in-the-blank), its interval resampling each
dataset's items on their own. Comparisons use the paired rule of :mod:`actbert.metrics.statistics`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from actbert.compare.profiles import FAMILY_TITLES, ComparePaths, Row, rows
from actbert.demo.report import plots_section, stages_section
from actbert.metrics.errors import MetricInputError
from actbert.metrics.statistics import (
    LEVEL,
    bootstrap_groups,
    bootstrap_interval,
    item_outcomes,
    paired_bootstrap_groups,
    permutation_test,
    seed_spread,
    separation,
    sign_test,
)
from actbert.tasks.common import TASK_NAMES
from actbert.utils.io import atomic_write_json, atomic_write_text, read_json

__all__ = ["collect", "summarize", "comparisons", "markdown", "write_report"]


def _key(record: Mapping[str, Any]) -> str:
    return f"{record['dataset']} / {record['protocol']}"


def collect(paths: ComparePaths, settings: Mapping[str, Any]) -> dict[str, dict[str, dict[str, dict[int, Any]]]]:
    """``{row: {task: {dataset key: {seed: ItemOutcomes}}}}`` from the result files that exist."""
    out: dict[str, dict[str, dict[str, dict[int, Any]]]] = {}
    for row in rows(settings["models"], settings.get("ablations", True)):
        for seed in range(int(settings["seeds"])):
            rp = paths.run(row.run, seed)
            for task in settings.get("tasks", TASK_NAMES):
                path = rp.result_file(task, row.variant)
                if not path.exists():
                    continue
                entry = read_json(path, "compare result")
                for record in entry.get("records") or []:
                    try:
                        items = item_outcomes(record)
                    except MetricInputError:
                        continue  # a record without per-item outcomes cannot get an interval
                    out.setdefault(row.name, {}).setdefault(task, {}).setdefault(_key(record), {})[seed] = items
    return out


def _seed_average(by_seed: Mapping[int, Any], seeds: Sequence[int]) -> Any:
    """The rows averaged over ``seeds`` (same items in every seed, aligned by id)."""
    first = by_seed[seeds[0]]
    return np.mean([by_seed[s].aligned(first.ids) for s in seeds], axis=0)


def summarize(collected: Mapping[str, Mapping[str, Mapping[str, Mapping[int, Any]]]]) -> dict[str, dict[str, Any]]:
    """Per row and task: each dataset's per-seed values, item interval, seed spread; the task mean."""
    out: dict[str, dict[str, Any]] = {}
    for row, by_task in collected.items():
        for task, by_key in by_task.items():
            datasets, groups = {}, []
            common = sorted(set.intersection(*(set(v) for v in by_key.values())))
            for key, by_seed in by_key.items():
                seeds = sorted(by_seed)
                avg = _seed_average(by_seed, seeds)
                stat = by_seed[seeds[0]].statistic
                values = [by_seed[s].value() for s in seeds]
                datasets[key] = {
                    "metric": by_seed[seeds[0]].metric,
                    "seeds": seeds,
                    "values": values,
                    "items": len(avg),
                    "item_interval": bootstrap_interval(avg, stat).to_dict(),
                    "per_seed_intervals": [bootstrap_interval(by_seed[s].rows, stat).to_dict() for s in seeds],
                    "seed_spread": seed_spread(values).to_dict(),
                }
                if common:
                    groups.append((_seed_average(by_seed, common), stat))
            task_mean = None
            if groups:
                per_seed = [float(np.mean([by_key[k][s].value() for k in by_key])) for s in common]
                task_mean = {"seeds": common, "values": per_seed, "interval": bootstrap_groups(groups).to_dict(),
                             "seed_spread": seed_spread(per_seed).to_dict()}
            out.setdefault(row, {})[task] = {"datasets": datasets, "task_mean": task_mean}
    return out


def _pairs(names: Sequence[str], models: Sequence[str]) -> list[tuple[str, str]]:
    """What the report compares: each family with its unpretrained self; ActBERT with every other
    pretrained family and with each of its ablations."""
    pairs = [(m, f"{m}/no-pretraining") for m in models]
    if "actbert" in models:
        pairs += [("actbert", m) for m in models if m != "actbert"]
        pairs += [("actbert", n) for n in names if n.startswith("actbert/") and n != "actbert/no-pretraining"]
    return [(a, b) for a, b in pairs if a in names and b in names]


def comparisons(collected: Mapping[str, Any], models: Sequence[str]) -> list[dict[str, Any]]:
    """Paired comparisons (module docstring): per pair and task, the task-mean difference's
    interval, the per-seed differences, the verdict; per dataset, the sign and permutation tests."""
    out = []
    for a, b in _pairs(list(collected), models):
        for task in TASK_NAMES:
            ka, kb = collected[a].get(task) or {}, collected[b].get(task) or {}
            keys = [k for k in ka if k in kb]
            if not keys:
                continue
            seeds = sorted(set.intersection(*(set(ka[k]) & set(kb[k]) for k in keys)))
            if not seeds:
                continue
            groups, per_dataset = [], {}
            for key in keys:
                ids = [i for i in ka[key][seeds[0]].ids if i in set(kb[key][seeds[0]].ids)]
                ra = np.mean([ka[key][s].aligned(ids) for s in seeds], axis=0)
                rb = np.mean([kb[key][s].aligned(ids) for s in seeds], axis=0)
                item_value = ka[key][seeds[0]].item_value
                stat = ka[key][seeds[0]].statistic
                groups.append((ra, rb, stat))
                per_dataset[key] = {
                    "items": len(ids),
                    "difference": paired_bootstrap_groups([(ra, rb, stat)]).to_dict(),
                    "sign_test": sign_test(ra, rb, item_value).to_dict(),
                    "permutation_test": permutation_test(ra, rb, item_value).to_dict(),
                }
            seed_diffs = [float(np.mean([ka[k][s].value() for k in keys]) - np.mean([kb[k][s].value() for k in keys])) for s in seeds]
            difference = paired_bootstrap_groups(groups)
            out.append({"a": a, "b": b, "task": task, "seeds": seeds, "difference": difference.to_dict(),
                        "seed_differences": seed_diffs, "verdict": separation(difference, seed_diffs),
                        "datasets": per_dataset})
    return out


def _cell(entry: Mapping[str, Any] | None) -> str:
    if not entry:
        return "-"
    iv = entry["interval"]
    text = f"{iv['estimate']:.2f} [{iv['low']:.2f}, {iv['high']:.2f}]"
    if len(entry["seeds"]) > 1:
        text += f" ±{entry['seed_spread']['std']:.2f}"
    return text


def _titles(models: Sequence[str], ablations: bool) -> dict[str, str]:
    return {r.name: r.title for r in rows(models, ablations)}


def markdown(summary: Mapping[str, Any], compared: Sequence[Mapping[str, Any]], settings: Mapping[str, Any],
             stages: Mapping[str, Any], flops: Mapping[str, Any], plots: Sequence[tuple[str, str]]) -> str:
    models, ablations = settings["models"], settings.get("ablations", True)
    titles = _titles(models, ablations)
    tasks = [t for t in settings.get("tasks", TASK_NAMES)]
    lines = [f"# Model comparison ({settings['size']})", ""]
    lines.append(f"Models: {', '.join(FAMILY_TITLES[m] for m in models)}; seeds: {settings['seeds']} "
                 f"(ablation rows: the first {settings.get('ablation_seeds', 1)}); every family pretrained with the same budget "
                 "on the same features and narrations (`compare_settings.json`).")
    lines.append("")
    lines.append("## Results")
    lines.append("")
    lines.append("Task mean of the primary metrics (R@5 and accuracies in %, CIDEr as a fraction): mean over seeds "
                 f"[{int(LEVEL * 100)}% bootstrap interval over test items] ±std over seeds (with several seeds).")
    lines.append("")
    lines.append("| model | " + " | ".join(tasks) + " |")
    lines.append("| --- |" + " --- |" * len(tasks))
    for name, title in titles.items():
        if name not in summary:
            continue
        lines.append(f"| {title} | " + " | ".join(_cell((summary[name].get(t) or {}).get("task_mean")) for t in tasks) + " |")
    lines.append("")
    lines.append("Per dataset (mean over seeds [interval]; half-width; items):")
    lines.append("")
    lines.append("| model | task | dataset / protocol | metric | value | half-width | items | seeds |")
    lines.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, title in titles.items():
        for task in tasks:
            for key, d in ((summary.get(name) or {}).get(task) or {}).get("datasets", {}).items():
                iv = d["item_interval"]
                lines.append(f"| {title} | {task} | {key} | {d['metric']} | {d['seed_spread']['mean']:.2f} [{iv['low']:.2f}, {iv['high']:.2f}] "
                             f"| {iv['half_width']:.2f} | {d['items']} | {len(d['seeds'])} |")
    lines.append("")
    if compared:
        lines.append("## Paired comparisons")
        lines.append("")
        lines.append("A - B on the same test items: the task-mean difference [95% paired bootstrap interval]; per-seed "
                     "differences; verdict by the rule below. p: exact sign test per dataset.")
        lines.append("")
        lines.append("| A | B | task | A - B [interval] | per seed | verdict | sign-test p per dataset |")
        lines.append("| --- | --- | --- | --- | --- | --- | --- |")
        for c in compared:
            d = c["difference"]
            ps = "; ".join(f"{k.split(' / ')[0]} {v['sign_test']['p_value']:.3g}" for k, v in c["datasets"].items())
            lines.append(f"| {titles.get(c['a'], c['a'])} | {titles.get(c['b'], c['b'])} | {c['task']} | {d['estimate']:+.2f} "
                         f"[{d['low']:+.2f}, {d['high']:+.2f}] | {', '.join(f'{x:+.2f}' for x in c['seed_differences'])} | "
                         f"**{c['verdict']}** | {ps} |")
        lines.append("")
        for family in models:
            wins = [c["task"] for c in compared if c["a"] == family and c["b"] == f"{family}/no-pretraining" and c["verdict"] == "better"]
            total = [c["task"] for c in compared if c["a"] == family and c["b"] == f"{family}/no-pretraining"]
            if total:
                lines.append(f"- **{FAMILY_TITLES[family]} pretrained is better than its unpretrained self on {len(wins)} of {len(total)} tasks**"
                             + (f" ({', '.join(wins)})." if wins else "."))
        lines.append("")
        lines.append("Rule: A is *better* only where the 95% paired-bootstrap interval of A - B over the test items "
                     "excludes 0 and, with two or more seeds, the t-interval of the per-seed differences excludes 0 with "
                     "the same sign (`actbert.metrics.statistics`, docs/compare.md says why).")
        lines.append("")
    if flops:
        lines.append("## Pretraining budget")
        lines.append("")
        lines.append("| run | preset | steps x batch | parameters | GFLOP per step | total PFLOP |")
        lines.append("| --- | --- | --- | --- | --- | --- |")
        for run, f in flops.items():
            lines.append(f"| {run} | {f.get('preset')} | {f['steps']} x {f['batch_size']} | {f['params'] / 1e6:.1f} M | "
                         f"{f['flops_per_step'] / 1e9:.1f} | {f['total_flops'] / 1e15:.3f} |")
        lines.append("")
        lines.append("FLOPs: `torch.utils.flop_counter.FlopCounterMode` over one forward + backward of a real batch (seed 0's run).")
        lines.append("")
    if plots:
        lines.extend(plots_section(plots))
    lines.extend(stages_section(stages))
    lines.append("## Notes")
    lines.append("")
    lines.append("- Everything is synthetic (rendered sprites, template narrations): the numbers compare models on this data, not on the papers' benchmarks.")
    lines.append("- `no pretraining`: the same architecture, the text stream initialised as its preset says (MiniLM for the small presets), the rest random.")
    lines.append("- Segmentation and step localization resample videos (frames and steps of one video are not independent); "
                 "captioning resamples captions with the CIDEr document frequencies of the whole test set held fixed.")
    lines.append("")
    return "\n".join(lines)


def _plot_tasks(summary: Mapping[str, Any], titles: Mapping[str, str], tasks: Sequence[str], path: Path) -> Path | None:
    names = [n for n in titles if n in summary]
    tasks = [t for t in tasks if any((summary[n].get(t) or {}).get("task_mean") for n in names)]
    if not names or not tasks:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from actbert.utils.plotting import save_png

    fig, axes = plt.subplots(1, len(tasks), figsize=(2.6 * len(tasks) + 1, 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        vals, lows, highs, labels = [], [], [], []
        for n in names:
            tm = (summary[n].get(task) or {}).get("task_mean")
            if not tm:
                continue
            iv = tm["interval"]
            vals.append(iv["estimate"])
            lows.append(iv["estimate"] - iv["low"])
            highs.append(iv["high"] - iv["estimate"])
            labels.append(titles[n])
        xs = np.arange(len(vals))
        ax.bar(xs, vals, yerr=[lows, highs], capsize=3, color=[f"C{i}" for i in range(len(vals))])
        ax.set_xticks(xs)
        ax.set_xticklabels(labels, rotation=70, ha="right", fontsize=6)
        ax.set_title(task.replace("_", " "), fontsize=8)
    fig.suptitle("task mean of the primary metrics, 95% bootstrap interval over test items", fontsize=8)
    fig.tight_layout()
    return save_png(fig, path)


def _plot_losses(paths: ComparePaths, run_names: Sequence[str], path: Path) -> Path | None:
    from actbert.train.metrics_log import read_metrics

    curves = {}
    for run in run_names:
        records = read_metrics(paths.run(run, 0).pretrain / "metrics.jsonl")
        records = [r for r in records if "loss" in r and "step" in r]
        if records:
            curves[run] = ([r["step"] for r in records], [r["loss"] for r in records])
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from actbert.utils.plotting import save_png

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for run, (steps, losses) in curves.items():
        ax.plot(steps, losses, label=run)
    ax.set_xlabel("step")
    ax.set_ylabel("total pretraining loss (each family's own losses)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_png(fig, path)


def write_report(paths: ComparePaths, log: Callable[[str], None] = print) -> Path:
    """``OUT/report.md``, ``OUT/report.json`` and ``OUT/report/*.png`` from what the folder holds."""
    settings = read_json(paths.root / "compare_settings.json", "compare settings")
    stages = read_json(paths.root / "stages.json", "compare stages") if (paths.root / "stages.json").exists() else {}
    collected = collect(paths, settings)
    summary = summarize(collected)
    compared = comparisons(collected, settings["models"])
    run_names = sorted({r.run for r in rows(settings["models"], settings.get("ablations", True))})
    flops = {}
    for run in run_names:
        f = paths.run(run, 0).root / "flops.json"
        if f.exists():
            flops[run] = read_json(f, "flops")
    paths.report_dir.mkdir(parents=True, exist_ok=True)
    titles = _titles(settings["models"], settings.get("ablations", True))
    plots = []
    try:
        if _plot_tasks(summary, titles, settings.get("tasks", TASK_NAMES), paths.report_dir / "tasks.png"):
            plots.append(("Per-task scores with 95% intervals", "report/tasks.png"))
        if _plot_losses(paths, run_names, paths.report_dir / "pretrain_loss.png"):
            plots.append(("Pretraining loss curves (seed 0)", "report/pretrain_loss.png"))
    except Exception as exc:  # a plot must never lose the report
        log(f"warning: a plot failed: {exc}")
    atomic_write_json(paths.root / "report.json", {"settings": settings, "stages": stages, "flops": flops,
                                                     "results": summary, "comparisons": compared})
    path = atomic_write_text(paths.root / "report.md", markdown(summary, compared, settings, stages, flops, plots))
    log(f"report: {path}")
    return path
