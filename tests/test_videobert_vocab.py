"""VideoBERT's visual vocabulary: 1.5 s pooling, the hierarchical k-means tree, files, tokenised stores."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from actbert.models.videobert.visual_vocab import (
    VOCAB_JSON,
    VOCAB_WEIGHTS,
    VisualVocabError,
    VisualVocabulary,
    fit_visual_vocabulary,
    pool_clips,
    read_video_tokens,
    tokenize_store,
)


def test_pool_clips_overlap_weighted_by_hand():
    # seconds centred at 0.5, 1.5, 2.5 stand for [0,1), [1,2), [2,3)
    times = np.array([0.5, 1.5, 2.5])
    feats = np.array([[0.0], [3.0], [6.0]], np.float32)
    clip_times, pooled = pool_clips(times, feats, 1.5)
    np.testing.assert_allclose(clip_times, [[0.0, 1.5], [1.5, 3.0]])
    # clip [0, 1.5): 1 s of f0 + 0.5 s of f1 -> (0 + 1.5) / 1.5 = 1; clip [1.5, 3): (0.5*3 + 6) / 1.5 = 5
    np.testing.assert_allclose(pooled[:, 0], [1.0, 5.0])
    # 4 s: the partial third clip [3, 4.5) is 1 s of 1.5 covered (>= half) -> kept, = f3
    clip_times, pooled = pool_clips(np.arange(4) + 0.5, np.array([[0.0], [3.0], [6.0], [9.0]], np.float32), 1.5)
    assert len(clip_times) == 3 and pooled[2, 0] == pytest.approx(9.0)
    # 3.5 s would need 0.5 of 1.5 s -> dropped
    assert len(pool_clips(np.arange(3) + 0.5, feats, 1.5)[0]) == 2


def _hand_tree() -> VisualVocabulary:
    # level 0: A=(0,0), B=(10,0); level 1: A -> (-4,0), (4,0); B -> (9,0), (20,0)
    level0 = np.array([[0.0, 0.0], [10.0, 0.0]], np.float32)
    level1 = np.array([[-4.0, 0.0], [4.0, 0.0], [9.0, 0.0], [20.0, 0.0]], np.float32)
    return VisualVocabulary(2, 2, [level0, level1], [np.array([3, 3]), np.array([1, 2, 2, 1])])


def test_tokenize_goes_level_by_level():
    vocab = _hand_tree()
    # (6,0): nearest top-level centroid is B (4 < 6), then B's nearest child (9,0) -> leaf 2,
    # although A's child (4,0) is the nearest leaf overall (2 < 3): the tree decides, not the leaves
    # (-5,0) -> A -> (-4,0) = leaf 0; (3,0) -> A -> (4,0) = leaf 1; (30,0) -> B -> (20,0) = leaf 3
    ids = vocab.tokenize(np.array([[6.0, 0.0], [-5.0, 0.0], [3.0, 0.0], [30.0, 1.0]], np.float32))
    assert ids.tolist() == [2, 0, 1, 3]
    assert vocab.size == 4 and vocab.feature_dim == 2


def _blobs(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.array([[0, 0], [0, 1], [10, 0], [10, 1], [0, 10], [0, 11], [10, 10], [10, 11]], np.float32) * 3
    return np.concatenate([c + 0.1 * rng.standard_normal((20, 2)) for c in centres]).astype(np.float32)


def test_fit_is_deterministic_and_splits_the_planted_hierarchy():
    x = _blobs()
    a = fit_visual_vocabulary(x, depth=2, branching=4, seed=3)
    b = fit_visual_vocabulary(x, depth=2, branching=4, seed=3)
    for ca, cb in zip(a.centroids, b.centroids):
        np.testing.assert_array_equal(ca, cb)
    assert a.digest() == b.digest()
    ids = a.tokenize(x)
    np.testing.assert_array_equal(ids, b.tokenize(x))
    # the 4 big groups are the top level; each splits its two sub-blobs on level 1
    top = ids // 4
    for g in range(4):
        block = top[g * 40 : (g + 1) * 40]
        assert len(set(block.tolist())) == 1
    assert a.counts[0].tolist() == [40, 40, 40, 40]
    assert a.counts[1].sum() == 160 and (a.counts[1] > 0).all()
    # children are ordered by their first member: the first point's path is 0/0
    assert ids[0] == 0


def test_empty_cluster_is_an_error_naming_where():
    x = _blobs()[:6]
    with pytest.raises(VisualVocabError, match=r"mystore: field 'second_features'.*empty cluster"):
        fit_visual_vocabulary(x, depth=2, branching=4, seed=0, where="mystore")


def test_save_load_roundtrip_and_bad_files(tmp_path):
    vocab = _hand_tree()
    vocab.save(tmp_path / "v")
    assert (tmp_path / "v" / VOCAB_WEIGHTS).is_file() and (tmp_path / "v" / VOCAB_JSON).is_file()
    back = VisualVocabulary.load(tmp_path / "v")
    assert back.digest() == vocab.digest()
    np.testing.assert_array_equal(back.tokenize(np.array([[6.0, 0.0]], np.float32)), [2])

    # a vocabulary built for 2-wide features applied to 3-wide ones
    with pytest.raises(VisualVocabError, match=r"store/v1: field 'second_features' has width 3.*feature_dim=2"):
        back.tokenize(np.zeros((1, 3), np.float32), "store/v1")

    # an empty cluster in the file
    bad = VisualVocabulary(2, 2, vocab.centroids, [np.array([3, 3]), np.array([1, 2, 2, 1])])
    bad.counts[1] = np.array([0, 3, 2, 1])
    with pytest.raises(VisualVocabError, match=r"field 'counts_1': cluster 0 of level 1 is empty"):
        bad.validate(str(tmp_path / "v" / VOCAB_WEIGHTS))
    with pytest.raises(VisualVocabError, match=r"visual_vocab.json: not found"):
        VisualVocabulary.load(tmp_path / "nothing")


def test_tokenize_store_is_resumable_and_deterministic(tmp_path):
    vocab = _hand_tree()
    calls = []

    def seconds(vid, values):
        def get():
            calls.append(vid)
            return SimpleNamespace(times=np.arange(len(values)) + 0.5, features=np.array(values, np.float32))
        return get

    videos = [("a", seconds("a", [[6, 0], [6, 0], [-5, 0]])), ("b", seconds("b", [[30, 0], [30, 0], [30, 0]]))]
    assert tokenize_store(vocab, tmp_path, videos) == {"written": 2, "kept": 0}
    first = (tmp_path / "tokens" / "a.safetensors").read_bytes()
    tok = read_video_tokens(tmp_path, "a", vocab.digest())
    # clip 0 [0,1.5) = (6,0); clip 1 [1.5,3) = (0.5*6 + (-5))/1.5 = -1.33 -> A -> leaf 0
    assert tok.ids.tolist() == [2, 0]
    np.testing.assert_allclose(tok.clip_times, [[0, 1.5], [1.5, 3]])
    # an interrupted run resumes: only the missing file is computed again, and it is identical
    (tmp_path / "tokens" / "a.safetensors").unlink()
    calls.clear()
    assert tokenize_store(vocab, tmp_path, videos) == {"written": 1, "kept": 1}
    assert calls == ["a"] and (tmp_path / "tokens" / "a.safetensors").read_bytes() == first
    # another vocabulary's tokens are stale
    assert read_video_tokens(tmp_path, "a", "0" * 16) is None
