"""ActBERT's configuration: :class:`ActBertConfig` (the ``model:`` section of an ``actbert`` preset).

Defaults are the paper's base model; ``ActBertForPretraining.fill_config_from_data`` fills the
feature widths, vocabulary size, class counts and special-token ids from the data.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from actbert.config import ConfigError
from actbert.errors import ActBertError
from actbert.models.layers import ACTIVATIONS

# Rows of the visual token table (the model's own ids; batches carry tokenizer ids).
VISUAL_TOKENS = ("[PAD]", "[SEP]", "[ACT]", "[REGION]")
LOCATION_DIM = 5  # x1/W, y1/H, x2/W, y2/H, area fraction
LOSS_NAMES = ("mlm", "action", "region", "match")
# optional losses: off (weight 0) unless ``loss_weights`` names them; they need the embedding heads
OPTIONAL_LOSS_NAMES = ("contrastive",)
MATCH_FUSIONS = ("cls", "mul")


class BatchError(ActBertError):
    """A batch that does not fit the model (wrong dimension, id out of range, non-finite feature)."""


@dataclass
class ActBertConfig:
    """Hyper-parameters of :class:`ActBertModel` (the ``model:`` section of ``configs/*.yaml``).

    Defaults are the paper's base model's sizes. Two defaults are not the paper's and say so where
    they are set: ``match_fusion="mul"`` (the paper's head is ``"cls"``) and ``text_init=None`` (the
    paper starts the text stream from BERT-base; :meth:`text_init_warning`). Feature dims and
    ``vocab_size`` are filled by the data side from the feature store schema and the tokenizer.
    """

    architecture: str = "actbert"
    # text stream (w-transformer), BERT layout
    vocab_size: int = 30524
    text_hidden_size: int = 768
    text_num_heads: int = 12
    text_intermediate_size: int = 3072
    text_layers: int = 12
    text_tangled: list[int] = field(default_factory=lambda: [6, 7, 8, 9, 10, 11])
    max_position_embeddings: int = 512
    type_vocab_size: int = 16  # segment ids = clip index; >= clips per sample + 1
    # tokenizer ids that may appear in the visual streams
    pad_token_id: int = 0
    sep_token_id: int = 102
    act_token_id: int = 30522
    region_token_id: int = 30523
    # visual streams (a- and r-transformers share the width)
    visual_hidden_size: int = 1024
    visual_num_heads: int = 8
    visual_intermediate_size: int = 1024
    action_layers: int = 6
    action_tangled: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4, 5])
    region_layers: int = 6
    region_tangled: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4, 5])
    max_visual_positions: int = 512
    # input/output dims from the data
    action_feature_dim: int = 2048
    region_feature_dim: int = 2048
    num_actions: int = 1000
    num_region_classes: int = 1601
    # regularisation and init
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    activation: str = "gelu"
    initializer_range: float = 0.02
    use_regions: bool = True  # False: the region stream is skipped ("without region cues")
    # False: "without action cues" -- the [ACT] tokens keep their token, position and segment
    # embeddings but never see the 3D-CNN action features (they enter as zeros, so only the
    # projection's bias reaches the stream); the action stream stays as the tangled layers' hub
    use_actions: bool = True
    # what the matching head reads: "cls" = the text [CLS] alone (the paper's head); "mul" = [CLS] x
    # pooled video (the released implementation's fusion, NOT the paper's; see CrossModalMatchingHead)
    match_fusion: str = "mul"
    loss_weights: dict[str, float] = field(default_factory=lambda: {name: 1.0 for name in LOSS_NAMES})
    # text checkpoint (folder or installed package) loaded by pretrained.create_model; None = random
    text_init: str | None = None
    # separate text / video embeddings (the ``embeddings`` capability, issue 14; not in the paper):
    # width of the shared space of the two projection heads; 0 = no heads, the paper's model
    embed_dim: int = 0
    # ALBEF-style hard negatives for the matching loss, sampled from the embedding similarity in
    # place of the collator's random negatives (needs embed_dim > 0; modeling.py says how)
    hard_negatives: bool = False

    def __post_init__(self) -> None:
        def fail(key: str, why: str) -> None:
            raise ConfigError(f"ActBertConfig.{key}: {why}")

        if self.architecture != "actbert":
            fail("architecture", f"must be 'actbert' for this model, got {self.architecture!r}")
        for key in (
            "vocab_size", "text_hidden_size", "text_num_heads", "text_intermediate_size", "max_position_embeddings",
            "type_vocab_size", "visual_hidden_size", "visual_num_heads", "visual_intermediate_size",
            "max_visual_positions", "action_feature_dim", "region_feature_dim", "num_actions", "num_region_classes",
        ):  # fmt: skip
            if getattr(self, key) <= 0:
                fail(key, f"must be positive, got {getattr(self, key)}")
        if self.text_hidden_size % self.text_num_heads:
            fail("text_num_heads", f"{self.text_num_heads} does not divide text_hidden_size={self.text_hidden_size}")
        if self.visual_hidden_size % self.visual_num_heads:
            fail("visual_num_heads", f"{self.visual_num_heads} does not divide visual_hidden_size={self.visual_hidden_size}")
        for stream in ("text", "action", "region"):
            depth, tangled = getattr(self, f"{stream}_layers"), list(getattr(self, f"{stream}_tangled"))
            if depth < 0:
                fail(f"{stream}_layers", f"must be >= 0, got {depth}")
            if any(not 0 <= i < depth for i in tangled):
                fail(f"{stream}_tangled", f"indices {tangled} must lie in [0, {stream}_layers={depth})")
            if any(b <= a for a, b in zip(tangled, tangled[1:])):
                fail(f"{stream}_tangled", f"indices {tangled} must be strictly increasing")
        if not len(self.text_tangled) == len(self.action_tangled) == len(self.region_tangled):
            fail(
                "text_tangled",
                f"text_tangled {self.text_tangled}, action_tangled {self.action_tangled} and region_tangled "
                f"{self.region_tangled} must have the same length (one entry per tangled block)",
            )
        if self.match_fusion not in MATCH_FUSIONS:
            fail("match_fusion", f"{self.match_fusion!r} is not one of {list(MATCH_FUSIONS)}")
        if self.activation not in ACTIVATIONS:
            fail("activation", f"{self.activation!r} is not one of {sorted(ACTIVATIONS)}")
        for key in ("hidden_dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                fail(key, f"must be in [0, 1), got {getattr(self, key)}")
        known = LOSS_NAMES + OPTIONAL_LOSS_NAMES
        unknown = sorted(set(self.loss_weights) - set(known))
        if unknown:
            fail("loss_weights", f"unknown loss name(s) {unknown}; known: {list(known)}")
        # optional losses stay out of the dict unless named, so existing configs read and save unchanged
        weights = {name: float(self.loss_weights.get(name, 1.0)) for name in LOSS_NAMES}
        weights.update({name: float(self.loss_weights[name]) for name in OPTIONAL_LOSS_NAMES if name in self.loss_weights})
        self.loss_weights = weights
        if self.embed_dim < 0:
            fail("embed_dim", f"must be >= 0 (0 = no embedding heads), got {self.embed_dim}")
        if self.embed_dim == 0 and self.loss_weights.get("contrastive", 0.0) > 0:
            fail("loss_weights", "contrastive > 0 needs the embedding heads (set embed_dim > 0)")
        if self.embed_dim == 0 and self.hard_negatives:
            fail("hard_negatives", "true needs the embedding similarity (set embed_dim > 0)")
        ids = [self.pad_token_id, self.sep_token_id, self.act_token_id, self.region_token_id]
        if len(set(ids)) != 4:
            fail("act_token_id", f"pad/sep/act/region token ids must differ, got {ids}")

    @property
    def num_tangled(self) -> int:
        return len(self.text_tangled)

    def text_init_warning(self) -> str | None:
        """A warning when the text stream would start from random weights where the paper starts from BERT.

        Paper 4.1 initialises the 12-layer, 768-wide linguistic transformer from BERT-base; a config
        with that text stream and no ``text_init`` (the ``base`` preset as shipped: no BERT-base
        weights come with the package) trains a different starting point. Smaller text streams (the
        test and demo presets) have no BERT-base to start from and get no warning. None = nothing to say.
        """
        bert_base = (self.text_hidden_size, self.text_layers, self.text_num_heads, self.text_intermediate_size) == (768, 12, 12, 3072)
        if self.text_init is not None or not bert_base:
            return None
        return ("model.text_init is not set: the 12 x 768 text stream starts from random weights, while the paper "
                "initialises it from BERT-base (ActBERT 4.1); pass a local bert-base-uncased folder with "
                "--set model.text_init=/path/to/bert-base-uncased")


# ----------------------------------------------------------------------------------------------


def replace_config(config: ActBertConfig, **changes) -> ActBertConfig:
    """A copy of ``config`` with ``changes`` (validated again)."""
    return dataclasses.replace(config, **changes)


__all__ = ["ActBertConfig", "BatchError", "LOCATION_DIM", "LOSS_NAMES", "MATCH_FUSIONS", "OPTIONAL_LOSS_NAMES", "VISUAL_TOKENS", "replace_config"]
