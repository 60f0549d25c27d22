"""Captioning (tasks/captioning.py) on the tiny synthetic benchmark with a planted feature store:
decoder shapes, teacher forcing, fine-tuning lowers the loss, greedy == beam 1, beam search on a
hand-built case, records, save/load, malformed annotations."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch
import torch.nn as nn

from helpers_planted_store import tiny_model, write_planted_store

from actbert.data.readers import ReaderError
from actbert.tasks import captioning as cap
from actbert.tasks import registry
from actbert.tasks.heads import FinetunedModel
from actbert.data.clips import ClipAssembler
from actbert.models.processing import processor_for
from actbert.tasks.common import Benchmark, TaskError
from actbert.text.tokenizer import load_tokenizer

FAST = dict(meteor=False, dropout=0.0, train_batch=8, lr=3e-3, steps=30, beam_size=2, max_caption_len=12)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def store(synth_tiny, tmp_path_factory):
    return write_planted_store(synth_tiny, tmp_path_factory.mktemp("cap_store") / "store")


@pytest.fixture(scope="module")
def assembler(store, tokenizer):
    return ClipAssembler(store, tokenizer)


@pytest.fixture(scope="module")
def trained(store, tokenizer, assembler, synth_tiny):
    """A captioner fine-tuned for a few steps on the tiny training segments (shared)."""
    model = tiny_model(store, tokenizer)
    log = cap.finetune(model, assembler, Benchmark(synth_tiny), cap.CaptioningSettings(**FAST))
    return log


def test_decoder_shapes_and_teacher_forcing(store, tokenizer, assembler, synth_tiny):
    captioner = cap.build_captioner(tiny_model(store, tokenizer), tokenizer, cap.CaptioningSettings(**FAST))
    model = captioner.model
    # word table copied from the text stream (same width), output layer tied to it
    assert torch.equal(cap.decoder_of(captioner).word_embeddings.weight, model.actbert.text_embeddings.word_embeddings.weight)
    clips, skipped = cap.youcook2_clips(Benchmark(synth_tiny), assembler, "validation")
    assert clips and not skipped
    batch = cap.clip_batch(processor_for(model, assembler), clips[:3])
    memory, mask = cap.encode(captioner, batch)
    assert memory.shape == (*batch.action_token_ids.shape, model.config.visual_hidden_size)
    assert mask.dtype == torch.bool and mask.sum() == batch.action_mask.sum()
    assert batch.region_mask.sum() == (batch.region_token_ids == tokenizer.sep_id).sum()  # no region content
    inputs, targets, tmask = cap.caption_targets(tokenizer, ["stir the bowl", "a very long caption " * 10], max_len=12)
    pieces = tokenizer.encode("stir the bowl")
    assert inputs[0, : len(pieces) + 1].tolist() == [tokenizer.cls_id] + pieces
    assert targets[0, : len(pieces) + 1].tolist() == pieces + [tokenizer.sep_id]
    assert targets[0, len(pieces) + 1 :].eq(-100).all() and inputs.shape[1] == 12
    assert targets[1, -1] == tokenizer.sep_id  # cut to max_len - 1 pieces, [SEP] kept
    logits = cap.caption_logits(captioner, batch, inputs[:1].expand(3, -1), tmask[:1].expand(3, -1))
    assert logits.shape == (3, 12, tokenizer.vocab_size)
    # causal: changing a later input token leaves earlier outputs unchanged
    changed = inputs[:1].expand(3, -1).clone()
    changed[:, 3] = tokenizer.encode("onion")[0]
    logits2 = cap.caption_logits(captioner, batch, changed, tmask[:1].expand(3, -1))
    assert torch.allclose(logits[:, :3], logits2[:, :3], atol=1e-5) and not torch.allclose(logits[:, 3:], logits2[:, 3:])


def test_finetuning_lowers_the_loss(trained):
    losses = trained.losses
    assert len(losses) == FAST["steps"]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 1.0
    assert isinstance(trained.model, FinetunedModel) and set(trained.model.heads) == {cap.HEAD} and not trained.model.training


def test_greedy_equals_beam_one_and_captions_are_text(trained, assembler, synth_tiny, tokenizer):
    captioner = trained.model
    clips, _ = cap.youcook2_clips(Benchmark(synth_tiny), assembler, "validation")
    greedy = cap.generate(captioner, assembler, clips, beam_size=1, batch_size=4, progress=False)
    banned = cap._banned_ids(tokenizer, tokenizer.vocab_size)
    memory, mask = cap.encode(captioner, cap.clip_batch(processor_for(captioner.model, assembler), clips))
    batched_ids = cap.greedy_decode(cap.decoder_of(captioner), memory, mask, banned)
    for i in range(len(clips)):
        one = cap.beam_decode(cap.decoder_of(captioner), memory[i : i + 1], mask[i : i + 1], banned, beam_size=1)
        assert one == batched_ids[i]
        assert one and len(one) <= cap.decoder_of(captioner).config.max_len
        assert not set(one) & set(banned.tolist()) and tokenizer.sep_id not in one
    assert greedy == [tokenizer.decode(ids).strip() for ids in batched_ids]
    assert cap.beam_decode_batch(cap.decoder_of(captioner), memory, mask, banned, beam_size=1) == batched_ids
    # batched beam search decodes each clip as if alone
    beams = cap.beam_decode_batch(cap.decoder_of(captioner), memory, mask, banned, beam_size=3)
    for i in range(len(clips)):
        assert beams[i] == cap.beam_decode(cap.decoder_of(captioner), memory[i : i + 1], mask[i : i + 1], banned, beam_size=3)
    beam = cap.generate(captioner, assembler, clips, beam_size=3, progress=False)
    for text in greedy + beam:
        assert isinstance(text, str) and text and "[" not in text


class TableDecoder(nn.Module):
    """Decoder stub: next-token probabilities depend only on the last token (a hand-built table)."""

    def __init__(self, table: dict[int, dict[int, float]], vocab: int = 6):
        super().__init__()
        self.config = cap.DecoderConfig(vocab_size=vocab, width=2, memory_width=2, max_len=4, bos_id=1, eos_id=2, pad_id=0)
        self.logits = torch.full((vocab, vocab), -30.0)
        for prev, row in table.items():
            for tok, p in row.items():
                self.logits[prev, tok] = float(np.log(p))

    def forward(self, tokens, memory, memory_mask, token_mask=None):
        return self.logits[tokens]


def test_beam_search_finds_the_better_caption_greedy_misses():
    # BOS -> A .6 / B .4; A -> EOS .35 (best) ...; B -> EOS .9.  Greedy: "A" (p .21); beam 2: "B" (p .36)
    A, B, C, EOS = 3, 4, 5, 2
    dec = TableDecoder({1: {A: 0.6, B: 0.4}, A: {EOS: 0.35, A: 0.25, B: 0.2, C: 0.2}, B: {EOS: 0.9, C: 0.1}, C: {EOS: 1.0}})
    memory, mask = torch.zeros(1, 1, 2), torch.ones(1, 1, dtype=torch.bool)
    banned = torch.tensor([0, 1])
    assert cap.greedy_decode(dec, memory, mask, banned) == [[A]]
    assert cap.beam_decode(dec, memory, mask, banned, beam_size=1, length_penalty=0.0) == [A]
    assert cap.beam_decode(dec, memory, mask, banned, beam_size=2, length_penalty=0.0) == [B]
    # EOS is never the first word, banned ids never appear, max_len bounds the caption
    loop = TableDecoder({1: {EOS: 0.9, A: 0.1}, A: {A: 1.0}})
    assert cap.greedy_decode(loop, memory, mask, banned) == [[A] * 4]
    assert cap.beam_decode(loop, memory, mask, banned, beam_size=3) == [A] * 4


def test_evaluate_record_and_save_load(trained, assembler, synth_tiny, tmp_path):
    settings = cap.CaptioningSettings(**{**FAST, "num_examples": 2})
    bench = Benchmark(synth_tiny)
    records = cap.evaluate(trained.model, assembler, bench, settings, variant="tiny")
    assert len(records) == 1
    r = records[0]
    assert (r["task"], r["dataset"], r["primary"], r["variant"]) == ("captioning", "youcook2", "CIDEr", "tiny")
    assert list(r["metrics"]) == ["BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"]
    assert r["metrics"]["METEOR"] is None and any("METEOR" in n for n in r["notes"])
    assert len(r["examples"]) == 2 and all(isinstance(e["prediction"], str) and e["reference"] for e in r["examples"])
    database = json.loads(bench.youcook2.read_text())["database"]
    expected = [f"{v}#{a['id']}" for v, e in database.items() if e["subset"] == "validation" for a in e["annotations"]]
    assert list(r["predictions"]) == expected  # every validation segment, file order
    # the scores are those of each caption against its own segment's sentence in the raw file (the metric
    # functions themselves are checked by hand in test_metrics.py)
    from actbert.metrics.captioning import caption_metrics

    references = {f"{v}#{a['id']}": [a["sentence"]] for v, e in database.items() if e["subset"] == "validation"
                  for a in e["annotations"]}
    again = caption_metrics(r["predictions"], references, meteor=False).to_dict()
    for name in ("BLEU-4", "ROUGE-L", "CIDEr"):
        assert r["metrics"][name] == pytest.approx(again[name], abs=1e-9), name
    json.dumps(r)
    # a bare ActBERT model has no decoder
    with pytest.raises(TaskError, match="finetune"):
        cap.evaluate(trained.model.model, assembler, bench, settings)
    # save / load: same captions
    registry.save_finetuned("captioning", trained.model, tmp_path / "captioner")
    loaded = registry.load_for_evaluation("captioning", tmp_path / "captioner")
    clips, _ = cap.youcook2_clips(bench, assembler, "validation")
    assert cap.generate(loaded, assembler, clips[:4], 2, progress=False) == cap.generate(trained.model, assembler, clips[:4], 2, progress=False)
    heads = tmp_path / "captioner" / "heads.json"
    info = json.loads(heads.read_text())
    info["heads"]["caption_decoder"]["config"]["width"] += 8  # tensors no longer fit the config
    heads.write_text(json.dumps(info))
    with pytest.raises(TaskError, match=re.escape(str(tmp_path / "captioner" / "heads.safetensors"))):
        registry.load_for_evaluation("captioning", tmp_path / "captioner")
    info["heads"]["caption_decoder"]["kind"] = "os:system"  # a file never picks the code that runs
    heads.write_text(json.dumps(info))
    with pytest.raises(TaskError, match="unknown head kind 'os:system'"):
        registry.load_for_evaluation("captioning", tmp_path / "captioner")


def test_malformed_annotations_name_the_file(store, tokenizer, assembler, synth_tiny, tmp_path):
    shutil.copytree(synth_tiny / "annotations", tmp_path / "annotations")
    bench = Benchmark(tmp_path)
    data = json.loads(bench.youcook2.read_text())
    video = next(v for v in data["database"].values() if v["subset"] == "training")
    video["annotations"][0]["segment"] = [5.0, 1.0]
    bench.youcook2.write_text(json.dumps(data))
    with pytest.raises(ReaderError, match=re.escape(str(bench.youcook2)) + r".*segment.*before start"):
        cap.finetune(tiny_model(store, tokenizer), assembler, bench, cap.CaptioningSettings(**FAST))
    with pytest.raises(TaskError, match="YouCook2 annotation file not found"):
        cap.finetune(tiny_model(store, tokenizer), assembler, Benchmark(tmp_path / "nowhere"), cap.CaptioningSettings(**FAST))


def test_no_repeat_ngram_bans_the_pieces_that_repeat_an_ngram():
    A, B, C, EOS = 3, 4, 5, 2
    tokens = torch.tensor([[1, A, B, A], [1, C, C, C]])  # [CLS] is in no n-gram
    by_hand = {  # n -> the banned pieces of each row
        1: [{A, B}, {C}],
        2: [{B}, {C}],  # row 0 ends in A, and "A B" occurred; row 1 ends in C, and "C C" occurred
        3: [set(), {C}],  # row 0's "B A" occurred once only, as the last two; row 1's "C C" is followed by C once
    }
    for n, rows in by_hand.items():
        mask = cap.repeated_ngrams(tokens, n, 6)
        assert [set(torch.nonzero(m).flatten().tolist()) for m in mask] == rows, n
    assert not cap.repeated_ngrams(tokens, 0, 6).any()
    # a decoder that loops on A: greedy and beam leave the loop for the next-best piece
    loop = TableDecoder({1: {A: 0.9, EOS: 0.1}, A: {A: 0.7, B: 0.2, EOS: 0.1}, B: {A: 0.6, EOS: 0.4}})
    memory, mask = torch.zeros(1, 1, 2), torch.ones(1, 1, dtype=torch.bool)
    banned = torch.tensor([0, 1])
    assert cap.greedy_decode(loop, memory, mask, banned) == [[A] * 4]
    # n = 2: "A A" once is allowed; a third A would repeat it, so B (.2 > EOS .1); "B A" is new; max_len 4
    assert cap.greedy_decode(loop, memory, mask, banned, no_repeat_ngram=2) == [[A, A, B, A]]
    # n = 1: no piece twice: A, then B (A banned), then EOS (A and B banned)
    assert cap.greedy_decode(loop, memory, mask, banned, no_repeat_ngram=1) == [[A, B]]
    for n in (1, 2):
        assert cap.beam_decode_batch(loop, memory, mask, banned, 1, no_repeat_ngram=n) == cap.greedy_decode(
            loop, memory, mask, banned, no_repeat_ngram=n)


def test_evaluate_with_no_repeat_ngram_never_repeats_a_piece(trained, assembler, synth_tiny, tokenizer):
    settings = cap.CaptioningSettings(**{**FAST, "beam_size": 1})
    bench = Benchmark(synth_tiny)
    plain = cap.evaluate(trained.model, assembler, bench, settings)[0]
    guarded = cap.evaluate(trained.model, assembler, bench, cap.CaptioningSettings(**{**FAST, "beam_size": 1, "no_repeat_ngram": 1}))[0]
    assert list(guarded["predictions"]) == list(plain["predictions"])
    repeats = lambda text: len(tokenizer.encode(text)) - len(set(tokenizer.encode(text)))  # noqa: E731
    assert any(repeats(text) for text in plain["predictions"].values())  # this few-step captioner does repeat
    for text in guarded["predictions"].values():
        assert repeats(text) == 0, text
    assert any("no_repeat_ngram" in n for n in guarded["notes"]) and not any("no_repeat_ngram" in n for n in plain["notes"])
    with pytest.raises(Exception, match="no_repeat_ngram"):
        registry.make_settings("captioning", {"no_repeat_ngram": -1})
