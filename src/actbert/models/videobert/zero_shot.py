"""VideoBERT's own evaluation (paper 4.4, Table 1): zero-shot verb / object classification.

The video's visual words follow the fixed sentence "now let me show you how to [MASK] the [MASK]"
(``zero_shot_template``); the verb is read from the first ``[MASK]``, the object from the second,
over the whole word-piece vocabulary (open vocabulary; special tokens excluded). A prediction is
correct when the predicted word is one of the label's words; top-1 and top-5 accuracy.

Here the clips are the YouCook2 validation segments of a benchmark folder and the labels come from
its ground truth (``ground_truth.json``: every step's verb and object; a segment takes the step it
overlaps most). The label's words are the verb's / object's names in ``meta.json``'s narration and
caption vocabularies (for a phrase, its head: the first word of a verb, the last of an object).

Beside it, as the paper's Table 1:

* ``language prior``: the same template without video (``[CLS] template [SEP]``);
* ``supervised``: the paper's fully supervised baseline -- the same clip features the vocabulary
  quantises (the store's per-second features) mean-pooled over the segment, then a linear
  (multinomial logistic-regression) classifier per label set, trained on the training segments;
* ``chance``: uniform over the label set (top-k = k / classes).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from actbert.errors import ActBertError
from actbert.models.processing import Item, VideoRef
from actbert.models.videobert.processing import collate_rows, layout, Row, REGIME_ID

TASK = "zero_shot_classification"


class ZeroShotError(ActBertError):
    """A benchmark that cannot give zero-shot labels (names the file and the field)."""


@dataclass(frozen=True)
class LabelledClip:
    video_id: str
    start: float
    end: float
    verb: str
    obj: str


def label_words(meta: dict[str, Any], where: str) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Per verb / object name, the single words that count as that label (module docstring)."""
    try:
        vocab = meta["vocabulary"]
        verbs = {name: {name} for name in meta["actions"]}
        objects = {name: {name} for name in meta["objects"]}
        for part in ("narration", "caption"):
            for name, forms in vocab[part]["verbs"].items():
                verbs.setdefault(name, {name}).update(f.split()[0].lower() for f in forms)
            for name, words in vocab[part]["objects"].items():
                objects.setdefault(name, {name}).update(w.split()[-1].lower() for w in words)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ZeroShotError(f"{where}: field 'vocabulary' / 'actions' / 'objects' missing or malformed ({exc})") from exc
    return verbs, objects


def labelled_clips(bench_root: str | os.PathLike, subset: str) -> list[LabelledClip]:
    """The YouCook2 ``subset`` segments with the verb and object of the ground-truth step each overlaps most."""
    from actbert.data.readers import read_youcook2, youcook2_segments
    from actbert.tasks.common import Benchmark
    from actbert.utils.io import read_json

    bench = Benchmark(Path(bench_root))
    truth_path = bench.root / "ground_truth.json"
    truth = read_json(truth_path, "ground truth")
    out = []
    for s in youcook2_segments(read_youcook2(bench.require(bench.youcook2, "YouCook2"), subset=subset)):
        steps = truth.get(s.video_id, {}).get("steps") if isinstance(truth, dict) else None
        if not steps:
            raise ZeroShotError(f"{truth_path}: video {s.video_id!r}: field 'steps' missing (no verb/object labels)")
        overlap = [min(s.end, st["end"]) - max(s.start, st["start"]) for st in steps]
        best = steps[int(np.argmax(overlap))]
        out.append(LabelledClip(s.video_id, s.start, s.end, str(best["verb"]), str(best["object"])))
    return out


def topk_hits(logits: torch.Tensor, accepted: Sequence[set[int]], k: int) -> np.ndarray:
    """``logits [N, V]``; row n is a hit when one of its top-``k`` ids is in ``accepted[n]``: bool ``[N]``."""
    top = logits.topk(k, dim=-1).indices.cpu().numpy()
    return np.array([bool(set(row.tolist()) & acc) for row, acc in zip(top, accepted)])


def template_logits(model: Any, processor: Any, clips: Sequence[LabelledClip], with_video: bool = True,
                    batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Word logits at the template's two ``[MASK]`` slots: (verb ``[N, V]``, object ``[N, V]``).

    ``with_video=False``: the language prior ``[CLS] template [SEP]``. Special tokens get -inf.
    """
    cfg = model.config
    template = processor.assembler.encode(cfg.zero_shot_template)
    if template.count(cfg.mask_token_id) != 2:
        raise ZeroShotError(f"model config: field 'zero_shot_template' must hold two [MASK] slots, got {cfg.zero_shot_template!r}")
    device = next(model.parameters()).device
    verbs, objs = [], []
    specials = sorted(processor.tokenizer.special_ids) if hasattr(processor.tokenizer, "special_ids") else []
    with torch.no_grad():
        for i in range(0, len(clips), batch_size):
            chunk = clips[i : i + batch_size]
            if with_video:
                batch = processor.batch([Item(VideoRef(c.video_id, c.start, c.end), tuple(template)) for c in chunk])
            else:
                rows = []
                for c in chunk:
                    ids, types, _ = layout(cfg, template, None)
                    rows.append(Row(ids, types, np.full(len(ids), -100, np.int64), REGIME_ID["text"], -1.0, c.video_id))
                batch = collate_rows(rows, cfg.pad_token_id)
            positions = processor.mask_positions(batch)
            logits = model.masked_token_logits(batch.to(device), positions.to(device)).float().view(len(chunk), 2, -1)
            logits[..., specials] = -float("inf")
            verbs.append(logits[:, 0].cpu())
            objs.append(logits[:, 1].cpu())
    return torch.cat(verbs), torch.cat(objs)


def mean_features(assembler: Any, clips: Sequence[LabelledClip]) -> np.ndarray:
    """The supervised baseline's input: per-second features mean-pooled over each clip, ``[N, Da]``."""
    rows = []
    for c in clips:
        s = assembler.second_features(c.video_id, c.start, c.end)
        if len(s) == 0:  # a span shorter than one window centre: the nearest second
            s_all = assembler.second_features(c.video_id)
            j = int(np.argmin(np.abs(s_all.times - (c.start + c.end) / 2)))
            rows.append(s_all.features[j])
        else:
            rows.append(s.features.mean(0))
    return np.stack(rows).astype(np.float32)


def supervised_topk(train_x: np.ndarray, train_y: Sequence[str], test_x: np.ndarray, test_y: Sequence[str],
                    seed: int = 0) -> dict[str, float]:
    """Multinomial logistic regression on standardised features: top-1 / top-5 accuracy (%) on the test clips."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed)).fit(train_x, list(train_y))
    classes = list(clf.classes_)
    proba = clf.predict_proba(test_x)
    order = np.argsort(-proba, axis=1, kind="stable")
    out = {}
    for k in (1, 5):
        hits = [y in {classes[j] for j in row[:k]} for row, y in zip(order, test_y)]  # an unseen class is a miss
        out[f"top{k}"] = 100.0 * float(np.mean(hits))
    return out


def evaluate(model: Any, assembler: Any, bench_root: str | os.PathLike, out_dir: str | os.PathLike | None = None,
             variant: str = "", batch_size: int = 32) -> list[dict[str, Any]]:
    """Table 1 on a benchmark folder: records for VideoBERT (cross modal), its language prior, the
    supervised baseline and chance (the tasks' results format; written to ``out_dir`` when given)."""
    from actbert.models.processing import processor_for
    from actbert.tasks.common import make_record, write_results
    from actbert.utils.io import read_json

    began = time.perf_counter()
    bench_root = Path(bench_root)
    meta = read_json(bench_root / "meta.json", "benchmark meta")
    verb_words, object_words = label_words(meta, str(bench_root / "meta.json"))
    test = [c for c in labelled_clips(bench_root, "validation") if c.video_id in assembler]
    train = [c for c in labelled_clips(bench_root, "training") if c.video_id in assembler]
    if not test:
        raise ZeroShotError(f"{bench_root}: no YouCook2 validation segment has features in {assembler.store_name}")
    tok = assembler.tokenizer

    def ids_of(words: set[str]) -> set[int]:
        out = set()
        for w in words:
            pieces = tok.encode(w)
            if len(pieces) == 1:  # a word the vocabulary spells as one piece can be predicted exactly
                out.add(int(pieces[0]))
        return out

    verb_ids = {v: ids_of(w) for v, w in verb_words.items()}
    obj_ids = {o: ids_of(w) for o, w in object_words.items()}
    model.eval()
    processor = processor_for(model, assembler)
    records = []
    settings = {"template": model.config.zero_shot_template, "test_clips": len(test), "train_clips": len(train),
                "verbs": len(verb_words), "objects": len(object_words)}
    for name, with_video in (("VideoBERT (cross modal)", True), ("VideoBERT (language prior)", False)):
        v_logits, o_logits = template_logits(model, processor, test, with_video, batch_size)
        metrics = {}
        for label, logits, accepted in (("verb", v_logits, [verb_ids[c.verb] for c in test]),
                                        ("object", o_logits, [obj_ids[c.obj] for c in test])):
            for k in (1, 5):
                metrics[f"{label}_top{k}"] = 100.0 * float(topk_hits(logits, accepted, k).mean())
        records.append(make_record(TASK, "youcook2", "validation segments, zero-shot", metrics, "verb_top5",
                                   variant=f"{variant} {name}".strip(), settings=settings, seconds=time.perf_counter() - began))
    if train:
        tx, ex = mean_features(assembler, train), mean_features(assembler, test)
        sv = supervised_topk(tx, [c.verb for c in train], ex, [c.verb for c in test])
        so = supervised_topk(tx, [c.obj for c in train], ex, [c.obj for c in test])
        metrics = {"verb_top1": sv["top1"], "verb_top5": sv["top5"], "object_top1": so["top1"], "object_top5": so["top5"]}
        records.append(make_record(TASK, "youcook2", "validation segments, supervised", metrics, "verb_top5",
                                   variant="supervised (mean-pooled features + linear)", settings=settings,
                                   notes=["trained on the YouCook2 training segments' ground-truth verbs/objects"]))
    nv, no = len(verb_words), len(object_words)
    chance = {"verb_top1": 100.0 / nv, "verb_top5": 100.0 * min(5, nv) / nv, "object_top1": 100.0 / no,
              "object_top5": 100.0 * min(5, no) / no}
    records.append(make_record(TASK, "youcook2", "validation segments, chance", chance, "verb_top5", variant="chance (uniform over the label set)",
                               settings=settings))
    if out_dir is not None:
        for r in records:
            write_results(out_dir, r)
    return records


def markdown(records: Sequence[dict[str, Any]]) -> str:
    """Table 1's layout: one row per method."""
    lines = ["| method | verb top-1 (%) | verb top-5 (%) | object top-1 (%) | object top-5 (%) |", "|---|---|---|---|---|"]
    for r in records:
        m = r["metrics"]
        lines.append(f"| {r['variant']} | {m['verb_top1']:.1f} | {m['verb_top5']:.1f} | {m['object_top1']:.1f} | {m['object_top5']:.1f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m actbert.models.videobert.zero_shot --model DIR --data BENCH --store STORE --out DIR``."""
    import argparse
    import json

    from actbert.data.clips import ClipAssembler
    from actbert.data.store import FeatureStore
    from actbert.models.pretrained import from_pretrained
    from actbert.text.tokenizer import load_tokenizer

    p = argparse.ArgumentParser(prog="python -m actbert.models.videobert.zero_shot", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--store", required=True)
    p.add_argument("--out", default=None)
    p.add_argument("--tokenizer", default=None)
    a = p.parse_args(argv)
    model = from_pretrained(a.model)
    records = evaluate(model, ClipAssembler(FeatureStore(a.store), load_tokenizer(a.tokenizer)), a.data, a.out)
    print(markdown(records))
    if a.out:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        (Path(a.out) / "zero_shot_table.md").write_text(markdown(records) + "\n")
        (Path(a.out) / "zero_shot.json").write_text(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["LabelledClip", "ZeroShotError", "evaluate", "label_words", "labelled_clips", "markdown",
           "mean_features", "supervised_topk", "template_logits", "topk_hits"]
