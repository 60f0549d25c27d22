"""Retrieval in PaddleVideo's MSR-VTT test layout (the paddlevideo family's processor) with converted Paddle weights.

The model is the reference fixture (tests/fixtures/paddle_actbert_small) converted by
``actbert convert-paddle`` and loaded with ``from_pretrained``; the gallery is a small feature store
written here with the fixture's feature widths (regions 64, actions 48).
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from actbert.config import ConfigError, load_config
from actbert.data.store import FeatureStore, FeatureStoreWriter, StoreSchema, VideoFeatures
from actbert.metrics.retrieval import ground_truth_ranks, retrieval_metrics
from actbert.models.paddlevideo.convert import convert_paddle_checkpoint
from actbert.models.paddlevideo.modeling import PaddleVideoActBert
from actbert.models.pretrained import from_pretrained
from actbert.tasks import retrieval
from actbert.models.paddlevideo import processing as pv
from actbert.data.clips import ClipAssembler
from actbert.errors import CapabilityError
from actbert.tasks.common import Benchmark

torch.set_num_threads(1)

FIXTURE = Path(__file__).parent / "fixtures" / "paddle_actbert_small"
META = json.loads((FIXTURE / "config.json").read_text())
REGION_DIM, ACTION_DIM = 64, 48  # the fixture model's v_feature_size / a_feature_size


class WordTokenizer:
    """Stand-in for the project tokenizer with the fixture's special ids ([PAD]=0 [CLS]=1 [SEP]=2
    [MASK]=3) and a 1000-id vocabulary (the fixture model's), words hashed to ids 6..999."""

    pad_id, cls_id, sep_id, mask_id, act_id, region_id = 0, 1, 2, 3, 4, 5
    vocab_size = 1000
    all_special_ids = (0, 1, 2, 3, 4, 5)

    def encode(self, text: str) -> list[int]:
        return [6 + zlib.crc32(word.encode()) % 994 for word in text.lower().split()]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> PaddleVideoActBert:
    out = tmp_path_factory.mktemp("converted")
    convert_paddle_checkpoint(FIXTURE / "model.pdparams", out, META["kwargs"])
    loaded = from_pretrained(out)
    assert isinstance(loaded, PaddleVideoActBert)
    return loaded.eval()


# Six test videos: (clips, frames, regions per frame); one has 7 clips (> 5 action slots), one has
# 12 frames x 5 regions = 60 regions (> 35 region slots), one has frames without regions.
VIDEOS = {"v0": (2, 4, 3), "v1": (7, 6, 4), "v2": (1, 3, 2), "v3": (3, 12, 5), "v4": (4, 5, 1), "v5": (2, 4, 0)}
CAPTIONS = {
    "v0": "a person cuts an onion",
    "v1": "someone pours water into a pot",
    "v2": "a man opens the door",
    "v3": "the cook stirs the soup slowly",
    "v4": "a woman washes a plate",
    "v5": "a child draws a tree",
}
TRAIN = ("v0", "v1", "v2")


def _features(rng: np.random.Generator, clips: int, frames: int, regions: int) -> VideoFeatures:
    r = 5
    counts = np.full(frames, regions, np.int64)
    if regions == 0:  # some frames empty, two with regions
        counts[[1, 3]] = 2
    feats = np.zeros((frames, r, REGION_DIM), np.float32)
    boxes = np.zeros((frames, r, 4), np.float32)
    locs = np.zeros((frames, r, 5), np.float32)
    probs = np.zeros((frames, r, 3), np.float32)
    for f in range(frames):
        n = counts[f]
        feats[f, :n] = rng.normal(size=(n, REGION_DIM))
        x1, y1 = rng.uniform(0, 100, (2, n))
        boxes[f, :n] = np.stack([x1, y1, x1 + 20, y1 + 10], axis=1)
        locs[f, :n] = np.stack([x1 / 160, y1 / 120, (x1 + 20) / 160, (y1 + 10) / 120, np.full(n, 200 / 19200)], axis=1)
        probs[f, :n] = 1 / 3
    starts = np.arange(clips, dtype=np.float64) * frames / clips
    return VideoFeatures(
        clip_times=np.stack([starts, starts + frames / clips], axis=1),
        action_features=rng.normal(size=(clips, ACTION_DIM)).astype(np.float32),
        action_targets=np.zeros((clips, 2), np.float32),
        frame_times=np.arange(frames, dtype=np.float64),
        region_features=feats,
        region_boxes=boxes,
        region_locations=locs,
        region_class_probs=probs,
        region_counts=counts,
    )


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> tuple[Benchmark, FeatureStore]:
    root = tmp_path_factory.mktemp("pv_bench")
    schema = StoreSchema(
        action_dim=ACTION_DIM, region_dim=REGION_DIM, num_region_classes=3, num_actions=2,
        region_classes=["a", "b", "c"], action_vocab=["cut", "pour"], max_regions=5,
    )
    writer = FeatureStoreWriter(root / "store", schema)
    rng = np.random.default_rng(0)
    for video_id, shape in VIDEOS.items():
        writer.write(video_id, _features(rng, *shape))
    csv = root / "annotations" / "msrvtt" / "MSRVTT_JSFUSION_test.csv"
    csv.parent.mkdir(parents=True)
    rows = ["key,vid_key,video_id,sentence"]
    captions = {**CAPTIONS, "missing_video": "nobody is here"}
    rows += [f"ret{i},msr{i},{v},{captions[v]}" for i, v in enumerate([*VIDEOS, "missing_video"])]
    csv.write_text("\n".join(rows) + "\n")  # "missing_video" has no features: skipped and reported
    # Training split for fine-tuning: v0, v1, v2, two captions each.
    (csv.parent / "MSRVTT_train.9k.csv").write_text("video_id\nv0\nv1\nv2\n")
    data = {
        "videos": [{"video_id": v, "start time": 0.0, "end time": 10.0, "split": "train" if v in TRAIN else "test"} for v in VIDEOS],
        "sentences": [
            {"video_id": v, "caption": text, "sen_id": 2 * k + n}
            for k, v in enumerate(TRAIN)
            for n, text in enumerate([CAPTIONS[v], CAPTIONS[v].replace("a ", "one ")])
        ],
    }
    (csv.parent / "MSRVTT_data.json").write_text(json.dumps(data))
    return Benchmark(root), FeatureStore(root / "store")


def _pair_probability(model, caption: pv.CaptionInput, video: pv.VideoInput) -> float:
    with torch.no_grad():
        out = model(
            torch.from_numpy(caption.text_ids[None]),
            torch.from_numpy(video.action_feat[None]),
            torch.from_numpy(video.image_feat[None]),
            torch.from_numpy(video.image_loc[None]),
            torch.from_numpy(caption.token_type_ids[None]),
            torch.from_numpy(caption.text_mask[None]),
            torch.from_numpy(video.image_mask[None]),
            torch.from_numpy(video.action_mask[None]),
        )
    return float(torch.softmax(out.seq_relationship_score, dim=-1)[0, 0])


# ----------------------------------------------------------------------------- layout


def test_video_layout_global_slot_35_regions_5_actions():
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(40, REGION_DIM)).astype(np.float32)
    locs = rng.uniform(size=(40, 5)).astype(np.float32)
    acts = rng.normal(size=(3, ACTION_DIM)).astype(np.float32)
    video = pv.video_input(feats, locs, acts)
    assert video.image_feat.shape == (36, REGION_DIM) and video.image_loc.shape == (36, 5)
    assert video.action_feat.shape == (5, ACTION_DIM) and video.action_mask.shape == (5,)
    # Global slot: mean over all 40 regions (before truncation), at the whole-frame location.
    np.testing.assert_allclose(video.image_feat[0], feats.mean(axis=0), atol=1e-6)
    assert video.image_loc[0].tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]
    np.testing.assert_array_equal(video.image_feat[1:], feats[:35])
    assert video.image_mask.tolist() == [1] * 36
    # Three real actions, two zero slots -- all five marked valid, as upstream does.
    np.testing.assert_array_equal(video.action_feat[:3], acts)
    assert not video.action_feat[3:].any()
    assert video.action_mask.tolist() == [1, 1, 1, 1, 1]
    assert pv.video_input(feats, locs, acts, mask_padded_actions=True).action_mask.tolist() == [1, 1, 1, 0, 0]


def test_video_layout_padding_and_action_thinning():
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(4, REGION_DIM)).astype(np.float32)
    locs = rng.uniform(size=(4, 5)).astype(np.float32)
    acts = np.arange(8, dtype=np.float32)[:, None].repeat(ACTION_DIM, axis=1)
    video = pv.video_input(feats, locs, acts)
    assert video.image_mask.tolist() == [1] * 5 + [0] * 31
    assert not video.image_feat[5:].any() and not video.image_loc[5:].any()
    # Eight actions for five slots: picked evenly, first and last kept, order preserved.
    picked = video.action_feat[:, 0].tolist()
    assert len(picked) == 5 and picked[0] == 0 and picked[-1] == 7 and picked == sorted(picked)
    with pytest.raises(pv.PaddleVideoRetrievalError, match="region_features"):
        pv.video_input(np.zeros((0, REGION_DIM)), np.zeros((0, 5)), acts, video_id="v9")
    bad = feats.copy()
    bad[1, 2] = np.nan
    with pytest.raises(pv.PaddleVideoRetrievalError, match=r"'v9'.*region_features.*NaN"):
        pv.video_input(bad, locs, acts, video_id="v9")


def test_caption_layout():
    caption = pv.caption_input([7, 8, 9], cls_id=101, sep_id=102)
    assert caption.text_ids.shape == (36,) and caption.text_ids.dtype == np.int64
    assert caption.text_ids[:5].tolist() == [101, 7, 8, 9, 102] and not caption.text_ids[5:].any()
    assert caption.text_mask.tolist() == [1] * 5 + [0] * 31
    assert not caption.token_type_ids.any()
    long = pv.caption_input(list(range(10, 60)), cls_id=101, sep_id=102)
    assert long.text_ids[0] == 101 and long.text_ids[-1] == 102 and long.text_mask.all()
    with pytest.raises(pv.PaddleVideoRetrievalError, match="caption 1: empty"):
        pv.encode_captions(WordTokenizer(), ["fine", "  "])


def test_layout_from_feature_store_record(bench):
    _, store = bench
    video = pv.video_input_from_features(store["v3"], video_id="v3")  # 12 frames x 5 regions = 60
    record = store["v3"]
    all_regions = np.concatenate([record.region_features[f, :5] for f in range(12)])
    np.testing.assert_allclose(video.image_feat[0], all_regions.mean(axis=0), atol=1e-5)
    assert video.image_mask.sum() == 36  # global + 35 of the 60 regions
    # Kept regions come from frames spread over the video, not only the first seven frames.
    kept = {tuple(np.round(row[:3], 5)) for row in video.image_feat[1:]}
    last_frame = {tuple(np.round(row[:3], 5)) for row in record.region_features[11, :5]}
    assert kept & last_frame
    # A span keeps only its frames and the clips whose centre lies in it.
    span = pv.video_input_from_features(record, start=0.0, end=3.0, video_id="v3")
    first_frames = np.concatenate([record.region_features[f, :5] for f in range(4)])
    np.testing.assert_allclose(span.image_feat[0], first_frames.mean(axis=0), atol=1e-5)
    assert span.image_mask.sum() == 1 + 20
    np.testing.assert_array_equal(span.action_feat[0], record.action_features[0])
    assert not span.action_feat[1:].any()  # v3's 3 clips are 4 s long: only clip 0 is centred in [0, 3]
    # v5: frames without regions are skipped.
    sparse = pv.video_input_from_features(store["v5"], video_id="v5")
    assert sparse.image_mask.sum() == 1 + 4


# ----------------------------------------------------------------------------- scores


def test_scores_are_paddle_matched_probability_on_fixture_inputs(model):
    """Fed the fixture's own inputs, the layout's scorer returns softmax(Paddle's logits)[:, 0]."""
    with np.load(FIXTURE / "inputs.npz") as inputs, np.load(FIXTURE / "outputs.npz") as outputs:
        captions = [
            pv.CaptionInput(inputs["input_txt"][i], inputs["token_type_ids"][i], inputs["attention_mask"][i]) for i in range(4)
        ]
        videos = [
            pv.VideoInput(inputs["image_feat"][i], inputs["image_loc"][i], inputs["image_attention_mask"][i],
                          inputs["action_feat"][i], inputs["action_attention_mask"][i])
            for i in range(4)
        ]
        paddle_logits = outputs["seq_relationship_score"].astype(np.float64)
    paddle_prob = np.exp(paddle_logits[:, 0]) / np.exp(paddle_logits).sum(axis=1)
    ours = pv.match_probabilities(model, captions, videos, [(i, i) for i in range(4)], batch_size=3, progress=False)
    np.testing.assert_allclose(ours, paddle_prob, atol=1e-5)
    # The full matrix: diagonal = the pairs above; every entry agrees with a single-pair forward.
    matrix = pv.score_matrix(model, captions, videos, batch_size=5, progress=False)
    assert matrix.shape == (4, 4)
    np.testing.assert_allclose(np.diag(matrix), ours, atol=1e-6)
    assert abs(matrix[1, 2] - _pair_probability(model, captions[1], videos[2])) < 1e-6
    assert np.ptp(matrix) > 1e-3  # pairs are told apart


def test_vocab_and_model_checks(model, bench):
    caption = pv.caption_input([5000], cls_id=1, sep_id=2)
    video = pv.video_input(np.ones((2, REGION_DIM)), np.zeros((2, 5)), np.ones((1, ACTION_DIM)))
    with pytest.raises(pv.PaddleVideoRetrievalError, match="text_ids.*vocab_size 1000"):
        pv.score_matrix(model, [caption], [video], progress=False)
    benchmark, store = bench
    assembler = ClipAssembler(store, WordTokenizer())
    # a model without the pair_scores capability fails at once, naming the capability
    with pytest.raises(CapabilityError, match="Linear lacks the capability 'pair_scores'"):
        retrieval.evaluate(torch.nn.Linear(2, 2), assembler, benchmark, retrieval.RetrievalSettings(), datasets=("msrvtt",))


# ----------------------------------------------------------------------------- gallery evaluation


def test_msrvtt_gallery_with_paddlevideo_layout(model, bench):
    benchmark, store = bench
    assembler = ClipAssembler(store, WordTokenizer())
    # the layout is the paddlevideo family's input processing: no task setting selects it
    settings = load_config(retrieval.RetrievalSettings, None, ["batch_size=7"])
    (record,) = retrieval.evaluate(model, assembler, benchmark, settings, variant="paddle", datasets=("msrvtt",))
    assert record["dataset"] == "msrvtt"
    assert record["skipped"] == [{"video_id": "missing_video", "error": "not in the feature store"}]
    assert any("PaddleVideo MSR-VTT test layout" in note for note in record["notes"])
    assert record["clip_videos"] == list(VIDEOS)

    # The record's metrics are those of the matched-probability matrix built by hand.
    captions = pv.encode_captions(WordTokenizer(), [CAPTIONS[v] for v in VIDEOS])
    videos = [pv.video_input_from_features(store[v], video_id=v) for v in VIDEOS]
    scores = pv.score_matrix(model, captions, videos, progress=False)
    expected = retrieval_metrics(scores, np.arange(len(VIDEOS)))
    assert record["metrics"] == expected
    assert record["ranks"] == ground_truth_ranks(scores, np.arange(len(VIDEOS))).tolist()
    assert set(record["metrics"]) >= {"R@1", "R@5", "R@10", "MedR"} and record["metrics"]["num_queries"] == 6
    assert abs(scores[3, 1] - _pair_probability(model, captions[3], videos[1])) < 1e-6

    with pytest.raises(pv.PaddleVideoRetrievalError, match="use_regions=False"):
        retrieval.evaluate(model, assembler, benchmark, retrieval.RetrievalSettings(use_regions=False), datasets=("msrvtt",))
    with pytest.raises(ConfigError, match="layout"):  # the old task option is gone
        load_config(retrieval.RetrievalSettings, None, ["layout=paddlevideo"])


def test_feature_width_mismatch_names_the_field(model, tmp_path):
    schema = StoreSchema(action_dim=ACTION_DIM, region_dim=32, num_region_classes=3, num_actions=2,
                         region_classes=["a", "b", "c"], action_vocab=["cut", "pour"], max_regions=5)
    writer = FeatureStoreWriter(tmp_path / "store", schema)
    f = _features(np.random.default_rng(3), 2, 3, 2)
    f.region_features = f.region_features[..., :32].copy()
    writer.write("w0", f)
    assembler = ClipAssembler(FeatureStore(tmp_path / "store"), WordTokenizer())
    with pytest.raises(pv.PaddleVideoRetrievalError, match=r"'w0'.*'region_features' has width 32.*expects 64"):
        retrieval.score_matrix(model, assembler, ["a cat"], [retrieval.Clip("w0")], progress=False)


def test_finetune_in_paddlevideo_layout(model, bench):
    import copy

    benchmark, store = bench
    assembler = ClipAssembler(store, WordTokenizer())
    captions = pv.encode_captions(WordTokenizer(), [CAPTIONS[v] for v in TRAIN])
    videos = [pv.video_input_from_features(store[v], video_id=v) for v in TRAIN]

    def mean_match(m) -> float:
        return float(pv.score_matrix(m, captions, videos, progress=False).mean())

    # Only true pairs (negatives=0): every label is "matched" (class 0, PaddleVideo's convention),
    # so fine-tuning must raise P(matched); with the classes swapped it would fall.
    positives = copy.deepcopy(model)
    settings = retrieval.RetrievalSettings(steps=6, lr=3e-3, train_batch=3, negatives=0, seed=0)
    log = retrieval.finetune(positives, assembler, benchmark, settings)
    assert len(log.losses) == 6 and all(np.isfinite(log.losses))
    assert not positives.training  # back in eval mode
    before, after = mean_match(model), mean_match(positives)
    assert after > before + 0.1, (before, after)
    assert log.losses[-1] < log.losses[0]

    # With negatives (label 1 = a caption of another video) the loss is the 2-way cross-entropy.
    mixed = copy.deepcopy(model)
    settings = retrieval.RetrievalSettings(steps=3, lr=1e-4, train_batch=2, negatives=1, seed=1)
    log = retrieval.finetune(mixed, assembler, benchmark, settings)
    assert len(log.losses) == 3 and all(0.0 < loss < 5.0 for loss in log.losses)
    assert not torch.equal(mixed.cls.seq_relationship.weight, model.cls.seq_relationship.weight)
    with pytest.raises(CapabilityError, match="retrieval: model Linear lacks the capability 'pair_scores'"):
        retrieval.finetune(torch.nn.Linear(2, 2), assembler, benchmark, settings)


def test_paddle_record_to_store_rebuilds_the_port_layout(tmp_path):
    """Arrays of one record of the port's MSR-VTT test features -> store -> the port's layout."""
    rng = np.random.default_rng(4)
    n, w, h = 40, 320.0, 240.0
    feats = rng.normal(size=(n, REGION_DIM)).astype(np.float32)
    x1, y1 = rng.uniform(0, 200, n), rng.uniform(0, 150, n)
    boxes = np.stack([x1, y1, x1 + 50, y1 + 30], axis=1).astype(np.float32)
    acts = rng.normal(size=(3, ACTION_DIM)).astype(np.float32)
    schema = StoreSchema(action_dim=ACTION_DIM, region_dim=REGION_DIM, num_region_classes=1, num_actions=1,
                         region_classes=["none"], action_vocab=["none"], max_regions=48)
    FeatureStoreWriter(tmp_path, schema).write("msr7", pv.features_from_paddle_record(feats, boxes, w, h, acts, 48, "msr7"))
    video = pv.video_input_from_features(FeatureStore(tmp_path)["msr7"], video_id="msr7")
    np.testing.assert_allclose(video.image_feat[0], feats.sum(axis=0) / n, atol=1e-5)
    np.testing.assert_array_equal(video.image_feat[1:], feats[:35])
    expected_loc = np.stack([x1 / w, y1 / h, (x1 + 50) / w, (y1 + 30) / h, np.full(n, 50 * 30 / (w * h))], axis=1)
    np.testing.assert_allclose(video.image_loc[1:], expected_loc[:35], atol=1e-6)
    assert video.image_mask.tolist() == [1] * 36
    np.testing.assert_array_equal(video.action_feat[:3], acts)
    assert video.action_mask.tolist() == [1] * 5
    with pytest.raises(pv.PaddleVideoRetrievalError, match=r"'msr8'.*'features' has 40 regions"):
        pv.features_from_paddle_record(feats, boxes, w, h, acts, 32, "msr8")
