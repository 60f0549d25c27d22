"""Video QA (tasks/videoqa.py) on the tiny synthetic benchmark with a planted feature store:
multiple choice (tie rule, argmax), fill-in-the-blank (masks per piece, candidate scoring, ties),
joint fine-tuning, records, and malformed annotation files."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import torch
import torch.nn as nn

from helpers_planted_store import tiny_model, write_planted_store

from actbert.data.readers import BlankItem, ReaderError
from actbert.tasks import videoqa as qa
from actbert.data.clips import ClipAssembler
from actbert.models.actbert.processing import ActBertProcessor
from actbert.tasks.common import Benchmark, TaskError
from actbert.text.tokenizer import load_tokenizer

HEADER = "key\tvid_key\tvideo_id\ta1\ta2\ta3\ta4\ta5\tanswer"


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def store(synth_tiny, tmp_path_factory):
    return write_planted_store(synth_tiny, tmp_path_factory.mktemp("qa_store") / "store")


@pytest.fixture(scope="module")
def assembler(store, tokenizer):
    return ClipAssembler(store, tokenizer)


@pytest.fixture
def bench_copy(synth_tiny, tmp_path):
    """A writable copy of the benchmark's annotation files."""
    shutil.copytree(synth_tiny / "annotations", tmp_path / "annotations")
    return Benchmark(tmp_path)


class ScoreByFirstWord(nn.Module):
    """Matching stub: the score of a (video, text) row is a table entry for the text's first piece."""

    def __init__(self, tokenizer, table: dict[str, float]):
        super().__init__()
        self.table = {tokenizer.encode(w)[0]: s for w, s in table.items()}

    processor_class = ActBertProcessor

    def pair_scores(self, batch):
        return torch.tensor([self.table[int(row[1])] for row in batch.input_ids])


class PreferPieces(nn.Module):
    """MLM stub: at every [MASK] the same logits, high for ``preferred`` piece ids."""

    def __init__(self, vocab_size: int, preferred: list[int]):
        super().__init__()
        self.bias = torch.zeros(vocab_size)
        self.bias[preferred] = 5.0

    processor_class = ActBertProcessor

    def masked_token_logits(self, batch, positions):
        return self.bias.expand(int(positions.sum()), -1)


def test_multiple_choice_picks_max_and_counts_ties_as_wrong(assembler, tokenizer, tmp_path):
    words = ["alpha", "beta", "gamma", "delta", "epsilon"]
    rows = [
        ("q0", "clip0001", words, 0),  # alpha strictly highest: correct
        ("q1", "clip0002", ["zeta"] + words[1:], 1),  # beta ties gamma at the top: wrong
        ("q2", "clip0007", words, 3),  # alpha beats the true delta: wrong
    ]
    lines = [HEADER] + [f"{k}\tmsr{v}\t{v}\t" + "\t".join(f"{w} stirs the bowl" for w in c) + f"\t{a}" for k, v, c, a in rows]
    (tmp_path / "annotations" / "msrvtt").mkdir(parents=True)
    (tmp_path / "annotations" / "msrvtt" / "MSR_MC_test.csv").write_text("\n".join(lines) + "\n")
    model = ScoreByFirstWord(tokenizer, {"alpha": 3.0, "beta": 2.0, "gamma": 2.0, "delta": 1.0, "epsilon": 0.0, "zeta": -1.0})
    records = qa.evaluate(model, assembler, Benchmark(tmp_path), qa.VideoQASettings(batch_size=4))
    assert len(records) == 1  # no LSMDC files in this benchmark
    r = records[0]
    assert (r["task"], r["dataset"], r["primary"]) == ("videoqa", "msrvtt", "accuracy")
    assert r["metrics"]["accuracy"] == pytest.approx(100.0 / 3)
    assert r["correct"] == [True, False, False]
    assert r["chosen"] == [0, 1, 0]  # lowest index among tied maxima, but q1 still counts as wrong
    assert np.allclose(r["scores"][1], [-1, 2, 2, 1, 0])


def test_blank_becomes_one_mask_per_piece(assembler, tokenizer):
    item = BlankItem("clip0001", 0.0, 6.0, "SOMEONE stirs the _____ on the board .", "teacup")
    ids = qa.blank_pieces(tokenizer, item, 2, tokenizer.mask_id)
    assert ids == tokenizer.encode("SOMEONE stirs the") + [tokenizer.mask_id] * 2 + tokenizer.encode("on the board .")
    batch, masks = qa.fib_batch(ActBertProcessor(assembler, None), [item, item], [1, 3], use_regions=True)
    assert masks.sum(dim=1).tolist() == [1, 3]
    assert batch.input_ids[0, 0] == tokenizer.cls_id
    # text truncation that would cut the blank is an error naming the video
    short = ClipAssembler(assembler.store, tokenizer, max_units=1, max_text_len=6)
    long_item = BlankItem("clip0001", 0.0, 6.0, "SOMEONE stirs the bowl and then rolls the lemon and the _____ .", "cup")
    with pytest.raises(TaskError, match="clip0001.*truncation"):
        qa.fib_batch(ActBertProcessor(short, None), [long_item], [1], use_regions=True)


def test_fill_in_blank_scores_multi_piece_candidates_and_ties(assembler, tokenizer, tmp_path):
    lsmdc = tmp_path / "annotations" / "lsmdc"
    lsmdc.mkdir(parents=True)
    train = ["teacup", "onion", "carrot", "squashes"]
    (lsmdc / "LSMDC16_FIB_train.csv").write_text("".join(f"clip0003\t0.0\t6.0\tSOMEONE stirs the _____ .\t{a}\n" for a in train))
    test = [("clip0001", "teacup"), ("clip0002", "Teacup"), ("clip0007", "onion")]
    (lsmdc / "LSMDC16_FIB_test.csv").write_text("".join(f"{v}\t0.0\t5.0\tSOMEONE washes the _____ .\t{a}\n" for v, a in test))
    bench = Benchmark(tmp_path)
    vocab = qa.AnswerVocabulary.from_answers(tokenizer, train, max_pieces=4)
    assert vocab.words == sorted(train) and vocab.lengths() == [1, 2]
    # the stub prefers the two pieces of "teacup" (tea ##cup): only the 2-mask row can score it high
    model = PreferPieces(tokenizer.vocab_size, tokenizer.encode("teacup"))
    r = qa.evaluate(model, assembler, bench, qa.VideoQASettings(batch_size=4))[0]
    assert (r["dataset"], r["primary"]) == ("lsmdc", "accuracy")
    assert r["predictions"] == ["teacup"] * 3
    assert r["metrics"]["accuracy"] == pytest.approx(200.0 / 3)  # case-insensitive exact match
    assert r["answer_coverage"] == 100.0
    # a model that prefers nothing ties every candidate: all wrong, never a lucky pick
    flat = PreferPieces(tokenizer.vocab_size, [])
    r = qa.evaluate(flat, assembler, bench, qa.VideoQASettings())[0]
    assert r["metrics"]["accuracy"] == 0.0
    assert r["predictions"][0] == "|".join(sorted(train))
    # one preferred piece that is itself a candidate word wins outright
    onion = PreferPieces(tokenizer.vocab_size, tokenizer.encode("onion"))
    assert qa.evaluate(onion, assembler, bench, qa.VideoQASettings())[0]["metrics"]["accuracy"] == pytest.approx(100.0 / 3)


def test_pick_answers_tie_rule():
    scores = np.array([[0.1, 0.5, 0.2], [0.3, 0.3, -1.0]])
    assert qa.pick_answers(scores, ["a", "b", "c"]) == ["b", "a|b"]


def test_joint_finetuning_lowers_the_fill_in_blank_loss_and_evaluates(assembler, tokenizer, store, synth_tiny):
    # Both losses are trained and logged; only the fill-in-the-blank one is asserted to fall: in these
    # 24 steps the matching part moves from 0.694 to 0.690 (first / last 4 steps), within its noise.
    torch.manual_seed(0)
    model = tiny_model(store, tokenizer)
    bench = Benchmark(synth_tiny)
    settings = qa.VideoQASettings(steps=24, lr=2e-3, train_batch=4, fib_batch=6)
    log = qa.finetune(model, assembler, bench, settings)
    assert len(log.losses) == 24 and set(log.parts) == {"match", "fill_in_blank"}
    assert len(log.parts["match"]) == 24 and all(np.isfinite(log.parts["match"]))
    fib = log.parts["fill_in_blank"]
    assert np.mean(fib[-4:]) < np.mean(fib[:4]) - 0.5
    assert np.mean(log.losses[-4:]) < np.mean(log.losses[:4])
    assert not model.training
    records = qa.evaluate(model, assembler, bench, settings, variant="tiny", finetuned=True)
    assert [r["dataset"] for r in records] == ["msrvtt", "lsmdc"]
    for r in records:
        assert r["protocol"].endswith("fine-tuned") and r["variant"] == "tiny"
    mc, fib_record = records
    assert len(mc["scores"]) == len(mc["answers"]) and all(len(s) == 5 for s in mc["scores"])
    # accuracies recomputed from the raw annotation files: MC = the true candidate strictly highest,
    # FIB = the prediction equals the answer (lower-cased)
    import csv

    with open(bench.msrvtt_mc, newline="") as f:
        mc_rows = {row["key"]: int(row["answer"]) for row in csv.DictReader(f, delimiter="\t")}
    hits = [s[mc_rows[q]] > max(v for j, v in enumerate(s) if j != mc_rows[q]) for q, s in zip(mc["questions"], mc["scores"])]
    assert len(hits) == len(mc_rows)
    assert mc["metrics"]["accuracy"] == pytest.approx(100.0 * np.mean(hits))
    with open(bench.lsmdc("test"), newline="") as f:
        fib_answers = [row[4].strip().lower() for row in csv.reader(f, delimiter="\t")]
    assert len(fib_answers) == len(fib_record["predictions"])
    fib_hits = [p.strip().lower() == a for p, a in zip(fib_record["predictions"], fib_answers)]
    assert fib_record["metrics"]["accuracy"] == pytest.approx(100.0 * np.mean(fib_hits))
    assert all(isinstance(p, str) and p for p in fib_record["predictions"])
    # one subtask only
    only = qa.evaluate(model, assembler, bench, qa.VideoQASettings(subtasks=["fill_in_blank"]))
    assert [r["dataset"] for r in only] == ["lsmdc"]
    with pytest.raises(TaskError, match="unknown subtask"):
        qa.evaluate(model, assembler, bench, qa.VideoQASettings(subtasks=["open_ended"]))


def test_malformed_files_name_the_file(assembler, tokenizer, bench_copy):
    model = ScoreByFirstWord(tokenizer, {})
    mc = bench_copy.msrvtt_mc
    lines = mc.read_text().splitlines()
    lines[1] = "\t".join(lines[1].split("\t")[:-1] + ["7"])  # answer index outside 0..4
    mc.write_text("\n".join(lines) + "\n")
    with pytest.raises(ReaderError, match=rf"{re.escape(str(mc))}.*line 2.*answer"):
        qa.evaluate(model, assembler, bench_copy, qa.VideoQASettings(subtasks=["multiple_choice"]))
    fib = bench_copy.lsmdc("train")
    fib.write_text(fib.read_text().replace("_____", "blank", 1))
    with pytest.raises(ReaderError, match=rf"{re.escape(str(fib))}.*line 1.*no blank"):
        qa.finetune(tiny_model(assembler.store, tokenizer), assembler, bench_copy, qa.VideoQASettings(subtasks=["fill_in_blank"], steps=1))
    missing = Benchmark(bench_copy.root / "nowhere")
    with pytest.raises(TaskError, match="nowhere"):
        qa.evaluate(model, assembler, missing, qa.VideoQASettings())
