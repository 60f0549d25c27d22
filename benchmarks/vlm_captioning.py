"""VLM captioning: greedy decoding and the caption loss, against their whole-sequence forms.

VLM captions with its own encoder under the generation mask (``VLMForPretraining.generate_captions``,
``caption_loss``). Two savings that change no number (``tests/test_vlm.py`` checks both against the
whole-sequence forms):

* decoding: step k runs the encoder on the caption prefix (``4 + k`` caption slots) instead of
  all ``Lc`` slots, and projects only position ``2 + k`` onto the 30,522-word vocabulary;
* the loss: the vocabulary projection at the labelled positions only, not at all ``Lc``.

"before" is the whole-sequence form, written here as the code was: every step the full-length
logits ``[B, Lc, V]``, of which one position is read; the loss over ``[B, Lc, V]`` logits indexed
by the labels. Both forms run in alternating rounds in one process (the same machine load); the
table gives the median seconds and the ratio. The model is the preset's architecture with random
weights (a random model rarely emits ``[SEP]``, so every caption runs to ``--words``: the longest
case; a trained model stops earlier, which shortens the prefixes and helps the new form more).

    python benchmarks/vlm_captioning.py                      # vlm-small, 32 rows, 16 s of video
    python benchmarks/vlm_captioning.py --rows 16 --frames 32 --words 20 --rounds 5

Figures depend on the machine and on whatever else runs on it; quote them with that caveat.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import time

import torch
import torch.nn.functional as F

from actbert.models import registry
from actbert.models.vlm.processing import VLMBatch


def whole_sequence_decoding(model, batch: VLMBatch, words: int) -> list[list[int]]:
    """Greedy decoding as before: full-length logits every step, one position read."""
    b, lc = batch.caps.shape
    cfg = model.config
    caps = torch.full((b, lc), cfg.pad_token_id, dtype=torch.long)
    caps[:, 0] = caps[:, 2] = cfg.cls_token_id
    caps[:, 1] = cfg.sep_token_id
    out: list[list[int]] = [[] for _ in range(b)]
    for step in range(min(words, lc - 3)):
        cmasks = torch.zeros(b, lc, dtype=torch.bool)
        cmasks[:, : 3 + step] = True
        logits = model._generation_logits(caps, cmasks, batch.vfeats, batch.vmasks)[:, 2 + step]
        logits[:, cfg.pad_token_id] = -math.inf
        word = logits.argmax(-1)
        for i in range(b):
            out[i].append(int(word[i]))
        caps[:, 3 + step] = word
    return out


def whole_sequence_loss(model, batch: VLMBatch) -> torch.Tensor:
    inputs, labels = model._shifted(batch.caps, batch.cmasks)
    logits = model._generation_logits(inputs, batch.cmasks, batch.vfeats, batch.vmasks)
    valid = labels != -100
    return F.cross_entropy(logits[valid].float(), labels[valid])


def make_batch(cfg, rows: int, frames: int, words: int, seed: int = 0) -> VLMBatch:
    g = torch.Generator().manual_seed(seed)
    lc = cfg.caption_len
    caps = torch.full((rows, lc), cfg.pad_token_id, dtype=torch.long)
    cmasks = torch.zeros(rows, lc, dtype=torch.bool)
    caps[:, 0], caps[:, 1] = cfg.cls_token_id, cfg.sep_token_id
    caps[:, 2 : 2 + words] = torch.randint(1000, cfg.vocab_size, (rows, words), generator=g)
    caps[:, 2 + words] = cfg.sep_token_id
    cmasks[:, : 3 + words] = True
    vfeats = torch.randn(rows, frames, cfg.input_dim, generator=g)
    vmasks = torch.ones(rows, frames, dtype=torch.bool)
    return VLMBatch(caps=caps, cmasks=cmasks, vfeats=vfeats, vmasks=vmasks)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="vlm_small")
    parser.add_argument("--rows", type=int, default=32, help="captions per batch")
    parser.add_argument("--frames", type=int, default=16, help="seconds of video per row")
    parser.add_argument("--words", type=int, default=20, help="words decoded per caption; words in each training caption")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = registry.load_model_config(args.preset)
    cfg = dataclasses.replace(cfg, text_init=None)  # random weights: the timing does not depend on them
    torch.manual_seed(0)
    model = registry.create_model(cfg, verbose=False)
    batch = make_batch(cfg, args.rows, args.frames, min(args.words, cfg.caption_len - 3))

    model.eval()
    with torch.no_grad():
        new, old = model.generate_captions(batch, max_words=args.words), whole_sequence_decoding(model, batch, args.words)
    same = sum(a == b[: len(a)] for a, b in zip(new, old))
    model.train()

    def loss_step(fn):
        model.zero_grad(set_to_none=True)
        fn(model, batch).backward()

    def decode(fn):
        with torch.no_grad():
            model.eval()
            fn()
            model.train()

    cases = {
        "greedy decoding": (lambda: decode(lambda: whole_sequence_decoding(model, batch, args.words)),
                            lambda: decode(lambda: model.generate_captions(batch, max_words=args.words))),
        "caption loss, forward + backward": (lambda: loss_step(whole_sequence_loss), lambda: loss_step(lambda m, b: m.caption_loss(b))),
    }
    times = {name: ([], []) for name in cases}
    for _ in range(args.rounds):  # alternating rounds: both forms see the same load
        for name, (before, after) in cases.items():
            times[name][0].append(timed(before))
            times[name][1].append(timed(after))
    print(f"{args.preset} (random weights), {args.rows} rows x {args.frames} s of video, {args.words} words, "
          f"{torch.get_num_threads()} thread(s), {args.rounds} alternating rounds; medians")
    print(f"greedy captions identical to the whole-sequence form: {same} of {len(new)}")
    print("| part | before (s) | now (s) | now / before |")
    print("| --- | --- | --- | --- |")
    for name, (before, after) in times.items():
        b, a = statistics.median(before), statistics.median(after)
        print(f"| {name} | {b:.3f} | {a:.3f} | {a / b:.2f} |")


if __name__ == "__main__":
    main()
