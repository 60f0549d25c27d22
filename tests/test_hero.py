"""HERO family: processing against upstream's collated layout, the model's tasks and capabilities,
pretraining through the shared loop, checkpoints, and the bad-input errors."""

from __future__ import annotations

import json
import math
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers_tasks import TASKS, run_task

from actbert.errors import ActBertError, CheckpointError
from actbert.models.hero import HeroConfig, HeroForPretraining
from actbert.models.hero.convert import UnsafePickleError, load_hero_checkpoint, read_hero_state
from actbert.models.hero.processing import (
    HeroVideo,
    Specials,
    build_task_batch,
    collate_videos,
    match_seconds,
    random_reorder,
)

torch.set_num_threads(1)
# the reference folder produced by the original code, copied beside the tests (../shared/fixtures/hero_small);
# ACTBERT_HERO_FIXTURE points the tests at another folder of the same layout
FIXTURE = Path(os.environ.get("ACTBERT_HERO_FIXTURE", Path(__file__).parent / "fixtures" / "hero_small"))

SPECIALS = Specials(cls=0, sep=2, pad=1, mask=499, vocab_size=500, word_range=(4, 499))


def tiny_config(**changes) -> HeroConfig:
    base = dict(hidden_size=32, vocab_size=500, cross_layers=2, cross_heads=4, cross_intermediate_size=64, max_position_embeddings=64,
                max_frm_seq_len=16, temporal_layers=1, temporal_heads=2, temporal_intermediate_size=64, max_frames=64, query_heads=2,
                query_max_positions=64, vfeat_dim=8, pad_token_id=1, cls_token_id=0, sep_token_id=2, mask_token_id=499,
                hidden_dropout=0.0, attention_dropout=0.0, vsm_query_per_video=2)
    base.update(changes)
    return HeroConfig(**base)


def random_videos(n: int = 3, seed: int = 0) -> list[HeroVideo]:
    rng = np.random.default_rng(seed)
    out = []
    for v in range(n):
        nv = int(rng.integers(5, 10))
        times = np.arange(nv) + 0.5
        starts = np.sort(rng.uniform(0, nv - 1, 3))
        ends = starts + rng.uniform(0.6, 3, 3)
        subs = [list(rng.integers(4, 499, int(rng.integers(2, 6)))) for _ in range(3)]
        out.append(HeroVideo(f"v{v}", rng.standard_normal((nv, 8)).astype(np.float32), subs, match_seconds(times, starts, ends)))
    return out


# ---------------------------------------------------------------------------------------------- processing


def test_match_seconds_unique_by_iou():
    times = np.arange(6) + 0.5  # seconds [0,1) ... [5,6)
    starts, ends = np.array([0.0, 1.6, 4.0]), np.array([2.0, 4.0, 4.5])
    # second 1 ([1,2)): IoU with s0 = 1/2, with s1 = 0.4/2.4 -> s0; second 4: s2 (0.5/1) vs none of s1; second 5 unmatched
    assert match_seconds(times, starts, ends) == [[0, 1], [2, 3], [4]]


def test_random_reorder_semantics():
    rng = np.random.default_rng(3)
    orders, targets = random_reorder(9, rng, 0.5)
    original = np.arange(9) * 10
    shuffled = np.zeros(9, int)
    shuffled[orders] = original  # new[orders[i]] = old[i]
    for j, t in enumerate(targets):
        if t >= 0:
            assert shuffled[j] == original[t]  # target = original index of the frame now at j
        else:
            assert orders[j] == j
    assert (targets >= 0).sum() >= 2


def test_collate_reproduces_upstream_video_collate():
    """The fixture's synthetic database, collated by our processor, gives upstream's repr batch."""
    with np.load(FIXTURE / "inputs.npz") as z:
        inp = {k: z[k] for k in z.files}
    meta = json.loads((FIXTURE / "config.json").read_text())
    videos = []
    for v in meta["videos"]:
        rows = [i for i in range(len(inp["db.sub_video"])) if inp["db.sub_video"][i] == v["video"]]
        rows.sort(key=lambda i: inp["db.sub_index"][i])
        subs = [[int(t) for t in inp["db.sub_tokens"][i] if t >= 0] for i in rows]
        frames = inp["db.frame_feats"][v["video"], : v["n_frames"]]
        videos.append(HeroVideo(str(v["video"]), frames, subs, [s["frames"] for s in v["subtitles"]]))
    ours = collate_videos(videos, SPECIALS.sep, SPECIALS)
    for key in ("f_sub_input_ids", "f_v_feats", "f_attn_masks", "c_v_feats", "c_attn_masks", "num_subs"):
        np.testing.assert_array_equal(ours[key], inp[f"repr.{key}"], err_msg=key)
    real = inp["repr.f_attn_masks"].astype(bool)
    real[:, 0] = True  # the dummy frame slot of a frameless row
    np.testing.assert_array_equal(ours["f_gather_index"][real], inp["repr.f_gather_index"][real])
    np.testing.assert_array_equal(np.where(ours["sub_frames"] >= 0, ours["sub_frames"], -1), inp["repr.sub_idx2frame_idx.frames"])


@pytest.mark.parametrize("task", ["mlm", "mfm_nce", "mffr", "fom", "vsm"])
def test_task_batches_train(task):
    torch.manual_seed(0)
    cfg = tiny_config()
    model = HeroForPretraining(cfg).train()
    batch = build_task_batch(task, random_videos(), np.random.default_rng(1), cfg, SPECIALS)
    out = model(batch)
    assert out.task == task and math.isfinite(float(out.loss.detach()))
    out.loss.backward()
    assert model.v_encoder.f_encoder.img_embeddings.img_linear.weight.grad is not None
    if task == "mlm":  # labels are the original tokens at the masked compact positions
        assert int(batch.txt_mask_tgt.sum()) == len(batch.txt_labels) >= 3
    if task == "vsm":
        assert len(batch.q_vidx) == 2 * 3 and set(batch.q_vidx.tolist()) == {0, 1, 2}
        assert (batch.vsm_targets[:, 1] >= batch.vsm_targets[:, 0]).all()
    if task.startswith("mf"):
        assert batch.feat_targets.shape[0] == int(batch.c_v_masks.sum()) >= 3
        assert float(batch.c_v_feats[batch.c_v_masks].abs().sum()) == 0.0


def test_unmasked_frames_get_mask_embedding_row0():
    """Upstream quirk: MFM adds mask_embedding row 0 to every unmasked frame (it is not zero once trained)."""
    torch.manual_seed(0)
    cfg = tiny_config()
    model = HeroForPretraining(cfg).eval()
    batch = build_task_batch("mfm_nce", random_videos(), np.random.default_rng(1), cfg, SPECIALS)
    with torch.no_grad():
        base = model(batch).loss
        # not a constant: every path starts with a LayerNorm, which ignores a constant shift
        model.v_encoder.mask_embedding.weight[0] += torch.linspace(-1, 1, cfg.vfeat_dim)
        moved = model(batch).loss
    assert abs(float(moved - base)) > 1e-4


# ---------------------------------------------------------------------------------------------- checkpoints and errors


def test_torch_checkpoint_through_the_restricted_reader(tmp_path):
    from actbert.models.hero.parity import fixture_batches, fixture_model

    model = fixture_model(FIXTURE)
    path = tmp_path / "hero.pt"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)
    loaded, report = load_hero_checkpoint(path, FIXTURE / "model_config.json", vfeat_dim=24, pad_token_id=1, cls_token_id=0,
                                          sep_token_id=2, hidden_dropout=0.0, attention_dropout=0.0)
    assert report.unused == [] and report.missing == []
    batch = fixture_batches(FIXTURE)["repr"]
    with torch.no_grad():
        assert torch.equal(model.encode(batch).temporal_output, loaded.encode(batch).temporal_output)


def test_restricted_reader_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": Evil()}, protocol=2))
    with pytest.raises(UnsafePickleError, match="refused to load global"):
        read_hero_state(path)


def test_checkpoint_of_another_family_is_refused(tmp_path):
    path = tmp_path / "paddle.npz"
    np.savez(path, **{"bert.embeddings.word_embeddings.weight": np.zeros((5, 4), np.float32)})
    with pytest.raises(CheckpointError, match=r"paddle\.npz.*v_encoder\.f_encoder\.embeddings\.word_embeddings\.weight.*not a HERO"):
        load_hero_checkpoint(path)


def test_store_without_second_features_is_refused():
    from actbert.data.store import StoreSchema

    schema = StoreSchema(action_dim=8, region_dim=8, num_region_classes=2, num_actions=2, region_classes=["a", "b"], action_vocab=["x", "y"])

    class Tok:
        vocab_size, pad_id, cls_id, sep_id, mask_id = 500, 1, 0, 2, 499

    with pytest.raises(ActBertError, match="schema.json: field 'second_features'"):
        HeroForPretraining.fill_config_from_data(tiny_config(), schema, Tok())


def test_save_and_load_pretrained(tmp_path):
    from actbert.models.pretrained import from_pretrained

    torch.manual_seed(0)
    model = HeroForPretraining(tiny_config()).eval()
    model.save_pretrained(tmp_path / "m")
    again = from_pretrained(tmp_path / "m")
    batch = build_task_batch("vsm", random_videos(), np.random.default_rng(0), model.config, SPECIALS)
    with torch.no_grad():
        assert torch.equal(model.vsm(batch, include_st_ed=True).loss, again.vsm(batch, include_st_ed=True).loss)
    assert again.v_encoder.f_encoder.lm_head.decoder.weight is again.v_encoder.f_encoder.embeddings.word_embeddings.weight


# ---------------------------------------------------------------------------------------------- pretraining and tasks


def test_pretrain_through_the_shared_loop(tmp_path):
    from actbert.train.config import load_pretrain_config
    from actbert.train.loop import train

    cfg = load_pretrain_config("hero_tiny", ["train.max_steps=12", "train.log_every=12", "train.checkpoint_every=0"])
    summary = train(cfg, tmp_path / "run")
    last = summary["last"]
    for task in ("mlm", "mfm_nce", "fom", "vsm"):
        assert task in last
    assert math.isfinite(last["loss"]) and math.isfinite(last["mlm"])
    from actbert.models.pretrained import from_pretrained

    assert isinstance(from_pretrained(tmp_path / "run" / "model"), HeroForPretraining)


@pytest.fixture(scope="module")
def task_setup(synth_tiny, tmp_path_factory):
    from helpers_planted_store import write_planted_store
    from actbert.data.clips import ClipAssembler
    from actbert.tasks.common import Benchmark
    from actbert.text.tokenizer import load_tokenizer

    store = write_planted_store(synth_tiny, tmp_path_factory.mktemp("hero_tasks") / "store")
    tokenizer = load_tokenizer()
    config = HeroForPretraining.fill_config_from_data(tiny_config(vocab_size=30524, mask_token_id=103, pad_token_id=0, cls_token_id=101,
                                                                  sep_token_id=102), store.schema, tokenizer)
    return config, ClipAssembler(store, tokenizer), Benchmark(synth_tiny)


@pytest.mark.parametrize("task", TASKS)
def test_all_tasks_run_on_hero(task_setup, task, tmp_path):
    config, assembler, bench = task_setup
    torch.manual_seed(0)
    run_task(task, HeroForPretraining(config), assembler, bench, tmp_path / "finetuned")
