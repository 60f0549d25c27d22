"""The paddlevideo family through the shared pretraining loop: the `paddlevideo` preset, continued
pretraining from a model folder (`train.init_from`), and its interface pieces."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from actbert.errors import CheckpointError
from actbert.models.paddlevideo import PaddleVideoActBert, PaddleVideoActBertConfig
from actbert.models.pretrained import from_pretrained
from actbert.train.config import load_pretrain_config
from actbert.train.loop import build_optimizer, train
from helpers_planted_store import write_planted_store

SMALL = [  # a few-step CPU run of the same architecture
    "model.num_hidden_layers=2", "model.v_num_hidden_layers=1", "model.a_num_hidden_layers=1",
    "model.t_ent_attention_id=[1]", "model.v_ent_attention_id=[0]", "model.a_ent_attention_id=[0]",
    "model.hidden_size=32", "model.a_hidden_size=32", "model.v_hidden_size=32", "model.bi_hidden_size=32",
    "model.num_attention_heads=2", "model.a_num_attention_heads=2", "model.v_num_attention_heads=2",
    "model.bi_num_attention_heads=2", "model.intermediate_size=64", "model.a_intermediate_size=64",
    "model.v_intermediate_size=64", "data.clips_per_sample=3", "data.max_text_len=40", "data.num_workers=0",
    "data.samples_per_video=2", "train.batch_size=4", "train.max_steps=4", "train.log_every=1",
    "train.checkpoint_every=0", "train.bf16=false", "train.progress=false", "train.num_threads=1",
    "train.plot_every_checkpoint=false", "optim.warmup_steps=1",
]


@pytest.fixture(scope="module")
def corpus(synth_tiny, tmp_path_factory):
    store = tmp_path_factory.mktemp("paddle_store") / "store"
    write_planted_store(synth_tiny, store)
    return [f"data.store={store}", f"data.narrations={synth_tiny / 'narrations.json'}"]


def test_preset_has_the_released_sizes():
    cfg = load_pretrain_config("paddlevideo", ["data.store=s", "data.narrations=n.json"])
    assert isinstance(cfg.model, PaddleVideoActBertConfig)
    # the upstream constructor defaults the released checkpoint was trained with (BERT-base text stream)
    m = cfg.model
    assert (m.num_hidden_layers, m.hidden_size, m.num_attention_heads, m.intermediate_size) == (12, 768, 12, 3072)
    assert (m.v_num_hidden_layers, m.v_hidden_size, m.a_num_hidden_layers, m.bi_hidden_size) == (2, 1024, 3, 1024)
    assert (m.t_ent_attention_id, m.v_ent_attention_id, m.a_ent_attention_id) == ([10, 11], [0, 1], [0, 1])
    assert dataclasses.asdict(m) == dataclasses.asdict(PaddleVideoActBertConfig())


def test_paddlevideo_pretrains_and_continues_from_a_model_folder(corpus, tmp_path):
    cfg = load_pretrain_config("paddlevideo", [*corpus, *SMALL, "optim.lr=1e-3", "optim.lr_scales.matching=3"])
    summary = train(cfg, tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert summary["steps"] == 4 and len(records) == 4
    for record in records:  # the family's own four losses, logged under its names
        assert {"loss", "mlm", "region", "action", "match"} <= set(record)
        assert abs(record["loss"] - (record["mlm"] + record["region"] + record["action"] + record["match"])) < 1e-4
        assert all(torch.isfinite(torch.tensor(record[k])) for k in ("mlm", "region", "action", "match"))
    assert records[0]["match"] > 0.3  # two-way CE on a fresh head is near ln 2, not zero
    model = from_pretrained(tmp_path / "run" / "model")
    assert isinstance(model, PaddleVideoActBert)
    assert model.config.v_feature_size == 64 and model.config.vocab_size == 30524  # filled from the store / tokenizer

    # lr_scales act on the family's named groups
    optimizer = build_optimizer(model, cfg)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert lr_of[id(model.cls.seq_relationship.weight)] == pytest.approx(3e-3)
    assert lr_of[id(model.bert.encoder.layer[0].attention.self.query.weight)] == pytest.approx(1e-3)

    # continue from the saved folder: with lr 0 the weights stay exactly those of the folder
    again = load_pretrain_config("paddlevideo", [*corpus, *SMALL, "optim.lr=0.0", "train.max_steps=1",
                                                 f"train.init_from={tmp_path / 'run' / 'model'}"])
    train(again, tmp_path / "again")
    continued = from_pretrained(tmp_path / "again" / "model")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, continued.state_dict()[name]), name

    # a folder of another model is refused, naming the fields that differ
    other = load_pretrain_config("paddlevideo", [*corpus, *SMALL, "model.hidden_size=64", "model.a_hidden_size=64",
                                                 f"train.init_from={tmp_path / 'run' / 'model'}"])
    with pytest.raises(CheckpointError, match="another model.*hidden_size"):
        train(other, tmp_path / "other")
