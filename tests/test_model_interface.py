"""Any registered model family pretrains and runs the five tasks: a test-only mean-pooled dual
encoder ("toy_dual", docs/adding_a_model.md) that reads ActBERT's batch layout."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers_tasks import TASKS, run_task

from actbert.errors import CapabilityError
from actbert.models import registry as model_registry
from actbert.models.actbert.processing import ActBertProcessor
from actbert.models.interface import CAPABILITIES, PretrainingOutput, VideoTextModel, capabilities_of, require


@dataclass
class ToyDualConfig:
    architecture: str = "toy_dual"
    width: int = 32
    vocab_size: int = 30524
    action_feature_dim: int = 64
    region_feature_dim: int = 64
    pad_token_id: int = 0
    act_token_id: int = 30522
    region_token_id: int = 30523
    scale: float = 10.0


def _mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(x.dtype)[..., None]
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


class ToyDualModel(VideoTextModel):
    config_class = ToyDualConfig
    processor_class = ActBertProcessor

    def __init__(self, config: ToyDualConfig):
        super().__init__()
        self.config = config
        self.words = nn.Embedding(config.vocab_size, config.width)
        self.video = nn.Linear(config.action_feature_dim, config.width)

    @classmethod
    def fill_config_from_data(cls, config, schema, tokenizer):
        return replace(config, action_feature_dim=schema.action_dim, region_feature_dim=schema.region_dim,
                       vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_id,
                       act_token_id=tokenizer.act_id, region_token_id=tokenizer.region_id)

    def parameter_groups(self):
        return {"text": list(self.words.parameters()), "video": list(self.video.parameters())}

    # -- capabilities
    def encode_text(self, batch):
        return _mean(self.words(batch.input_ids), batch.text_mask)

    def encode_video(self, batch):
        return _mean(self.video(batch.action_features), batch.action_mask)

    def pair_scores(self, batch):
        return F.cosine_similarity(self.encode_text(batch), self.encode_video(batch), dim=-1) * self.config.scale

    def masked_token_logits(self, batch, positions):
        return self.words(batch.input_ids)[positions] @ self.words.weight.T

    @property
    def unit_state_dim(self) -> int:
        return self.config.width

    def unit_states(self, batch):
        width = int(batch.action_token_ids.shape[1]) - 1
        return self.video(batch.action_features)[:, :width], batch.action_token_ids[:, :width] == self.config.act_token_id

    @property
    def caption_memory_dim(self) -> int:
        return self.config.width

    def caption_memory(self, batch):
        return self.video(batch.action_features), batch.action_mask.bool()

    def word_embeddings(self):
        return self.words.weight

    def forward(self, batch):
        scores = self.pair_scores(batch)
        labels = batch.match_labels if batch.match_labels is not None else torch.ones_like(scores)
        contrastive = F.binary_cross_entropy_with_logits(scores, labels.float())
        mlm = scores.sum() * 0.0
        if batch.mlm_labels is not None and (batch.mlm_labels != -100).any():
            has = batch.mlm_labels != -100
            mlm = F.cross_entropy(self.masked_token_logits(batch, has), batch.mlm_labels[has])
        return PretrainingOutput(loss=contrastive + mlm, losses={"contrastive": contrastive, "mlm": mlm})


@pytest.fixture(scope="module")
def toy_registered():
    model_registry.register_architecture("toy_dual", ToyDualModel)
    yield
    model_registry.ARCHITECTURES.pop("toy_dual", None)


YAML = """
model: {architecture: toy_dual, width: 32}
data:
  random: true
  random_dir: RANDOM_DIR
  random_corpus: {num_videos: 8, clips_per_video: 8, steps_per_video: 4, noise: 0.5, seed: 0}
  clips_per_sample: 6
  max_regions_per_frame: 3
  max_text_len: 64
  samples_per_video: 1
  num_workers: 0
optim: {lr: 1.0e-2, warmup_steps: 1, lr_scales: {video: 2.0}}
train: {seed: 0, batch_size: 4, max_steps: 6, log_every: 1, checkpoint_every: 0, bf16: false, device: cpu, num_threads: 1, progress: false}
"""


@pytest.fixture(scope="module")
def pretrained(toy_registered, tmp_path_factory):
    from actbert.train.config import load_pretrain_config
    from actbert.train.loop import train

    root = tmp_path_factory.mktemp("toy_pretrain")
    path = root / "toy.yaml"
    path.write_text(YAML.replace("RANDOM_DIR", str(root / "random")))
    cfg = load_pretrain_config(path)
    run_dir = root / "run"
    summary = train(cfg, run_dir)
    return cfg, run_dir, summary


def test_capabilities_and_require(toy_registered):
    model = ToyDualModel(ToyDualConfig(vocab_size=50, action_feature_dim=4))
    assert capabilities_of(model) == frozenset(CAPABILITIES) - {"caption_generation", "factored_scores"}  # it captions with a decoder; its scores are joint
    require(model, sorted(set(CAPABILITIES) - {"caption_generation", "factored_scores"}), "test")
    with pytest.raises(CapabilityError) as err:
        require(nn.Linear(2, 2), ["unit_states"], "segmentation")
    assert "Linear" in str(err.value) and "unit_states" in str(err.value)


def test_pretrain_logs_toy_losses_saves_and_scales_lr(pretrained):
    from actbert.models.pretrained import from_pretrained
    from actbert.train.loop import build_optimizer
    from actbert.train.metrics_log import read_metrics

    cfg, run_dir, summary = pretrained
    records = read_metrics(run_dir / "metrics.jsonl")
    assert len(records) == 6
    for r in records:
        assert math.isfinite(r["contrastive"]) and math.isfinite(r["mlm"]) and "match" not in r
    model_dirs = [p.parent for p in run_dir.rglob("*.safetensors")]
    assert model_dirs, list(run_dir.rglob("*"))
    loaded = from_pretrained(model_dirs[0])
    assert isinstance(loaded, ToyDualModel)

    # pair_scores of the loaded model vs a hand computation of the cosine for row 0
    from actbert.models.actbert.processing import random_batch
    from actbert.models.actbert.configuration import ActBertConfig
    c = loaded.config
    batch = random_batch(ActBertConfig(vocab_size=c.vocab_size, action_feature_dim=c.action_feature_dim,
                                       region_feature_dim=c.region_feature_dim, act_token_id=c.act_token_id,
                                       region_token_id=c.region_token_id, pad_token_id=c.pad_token_id), batch_size=3)
    with torch.no_grad():
        scores = loaded.pair_scores(batch)
        m = batch.text_mask[0]
        t = loaded.words.weight[batch.input_ids[0][m]].mean(0)
        a = batch.action_mask[0]
        v = (batch.action_features[0][a] @ loaded.video.weight.T + loaded.video.bias).mean(0)
        hand = float(t @ v / (t.norm() * v.norm())) * c.scale
    assert scores.shape == (3,)
    assert abs(float(scores[0]) - hand) < 1e-4

    optimizer = build_optimizer(loaded, cfg)
    video_ids = {id(p) for p in loaded.video.parameters()}
    lrs = {("video" if any(id(p) in video_ids for p in g["params"]) else "other"): g["lr"] for g in optimizer.param_groups}
    assert lrs["video"] == pytest.approx(2 * lrs["other"])


@pytest.fixture(scope="module")
def task_setup(toy_registered, synth_tiny, tmp_path_factory):
    from helpers_planted_store import write_planted_store
    from actbert.data.clips import ClipAssembler
    from actbert.tasks.common import Benchmark
    from actbert.text.tokenizer import load_tokenizer

    root = tmp_path_factory.mktemp("toy_tasks")
    store = write_planted_store(synth_tiny, root / "store")
    tokenizer = load_tokenizer()
    config = ToyDualModel.fill_config_from_data(ToyDualConfig(), store.schema, tokenizer)
    return config, ClipAssembler(store, tokenizer), Benchmark(synth_tiny)


@pytest.mark.parametrize("task", TASKS)
def test_all_tasks_run_on_the_toy_model(task_setup, task, tmp_path):
    config, assembler, bench = task_setup
    torch.manual_seed(0)
    run_task(task, model_registry.create_model(config, verbose=False), assembler, bench, tmp_path / "finetuned")


class ToyOneTaskPerBatch(ToyDualModel):
    """Reports one of its two losses per batch, alternating (as HERO draws one task per batch)."""

    def __init__(self, config):
        super().__init__(config)
        self.calls = 0

    def loss_names(self):
        return ["contrastive", "mlm"]

    def forward(self, batch):
        out = super().forward(batch)
        self.calls += 1
        name = "contrastive" if self.calls % 2 else "mlm"
        return PretrainingOutput(loss=out.losses[name], losses={name: out.losses[name]})


def test_a_loss_is_averaged_only_over_the_steps_that_report_it(toy_registered, tmp_path):
    from actbert.train.config import load_pretrain_config
    from actbert.train.loop import train
    from actbert.train.metrics_log import read_metrics

    model_registry.register_architecture("toy_dual", ToyOneTaskPerBatch)
    try:
        path = tmp_path / "toy.yaml"
        path.write_text(YAML.replace("RANDOM_DIR", str(tmp_path / "random")).replace("max_steps: 6", "max_steps: 4"))
        train(load_pretrain_config(path), tmp_path / "run")
    finally:
        model_registry.register_architecture("toy_dual", ToyDualModel)
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    # step 1 draws contrastive, step 2 mlm, ...: the other name is null (no value), never a stale or NaN one
    assert [r["mlm"] is None for r in records] == [True, False, True, False]
    assert [r["contrastive"] is None for r in records] == [False, True, False, True]
    for r in records:
        assert r["loss"] == pytest.approx(r["contrastive"] if r["mlm"] is None else r["mlm"], rel=1e-6)
    png = (tmp_path / "run" / "metrics.png").read_bytes()
    assert png[:4] == b"\x89PNG"
