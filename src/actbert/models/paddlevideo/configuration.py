"""PaddleVideo ActBERT's configuration: the constructor arguments of its ``BertForMultiModalPreTraining``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from actbert.errors import ActBertError
from actbert.models.layers import ACTIVATIONS

# PaddleVideo adds (1 - mask) * -10000 to attention scores.
PADDLE_MASKED_VALUE = -10000.0
# Text id that embeds to zeros (PaddleVideo builds the word table with padding_idx=0).
PADDING_ID = 0
# Class of ``seq_relationship`` that means "text and video match" in PaddleVideo's pipeline.
MATCHED_CLASS = 0


class PaddleVideoConfigError(ActBertError):
    """A PaddleVideo ActBERT config that cannot build a model (names the field)."""


class PaddleVideoInputError(ActBertError):
    """Model inputs whose shapes do not fit the config (names the input)."""


@dataclass
class PaddleVideoActBertConfig:
    """Constructor arguments of PaddleVideo's ``BertForMultiModalPreTraining``, same names.

    Defaults are the upstream constructor defaults (which the released checkpoint was trained
    with); the converter overrides every size it can read from the tensor shapes.
    """

    architecture: str = "paddlevideo"
    vocab_size: int = 30522
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    v_target_size: int = 1601
    a_target_size: int = 401
    v_feature_size: int = 2048
    a_feature_size: int = 2048
    num_hidden_layers: int = 12
    v_num_hidden_layers: int = 2
    a_num_hidden_layers: int = 3
    t_ent_attention_id: list[int] = field(default_factory=lambda: [10, 11])
    v_ent_attention_id: list[int] = field(default_factory=lambda: [0, 1])
    a_ent_attention_id: list[int] = field(default_factory=lambda: [0, 1])
    fixed_t_layer: int = 0
    fixed_v_layer: int = 0
    hidden_size: int = 768
    v_hidden_size: int = 1024
    a_hidden_size: int = 768
    bi_hidden_size: int = 1024
    intermediate_size: int = 3072
    v_intermediate_size: int = 1024
    a_intermediate_size: int = 3072
    hidden_act: str = "gelu"
    v_hidden_act: str = "gelu"
    a_hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    v_hidden_dropout_prob: float = 0.1
    a_hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    v_attention_probs_dropout_prob: float = 0.1
    a_attention_probs_dropout_prob: float = 0.1
    av_attention_probs_dropout_prob: float = 0.1
    at_attention_probs_dropout_prob: float = 0.1
    num_attention_heads: int = 12
    v_num_attention_heads: int = 8
    a_num_attention_heads: int = 12
    bi_num_attention_heads: int = 8
    fusion_method: str = "mul"
    initializer_range: float = 0.02
    # Not an upstream argument (a speed setting of this port): in pretraining_forward, compute the
    # vocab-wide text logits only at the positions with an MLM label (same loss and gradients; the
    # upstream forward always returns logits at every text position). False = upstream.
    mlm_logits_at_labels: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, source: str = "PaddleVideoActBertConfig") -> None:
        def fail(name: str, why: str) -> None:
            raise PaddleVideoConfigError(f"{source}: {name} = {getattr(self, name)!r}: {why}")

        if self.architecture != "paddlevideo":
            fail("architecture", "must be 'paddlevideo' for this model")
        if self.a_hidden_size != self.hidden_size:
            # The connection layer's action output block is built with the text width upstream.
            fail("a_hidden_size", f"must equal hidden_size ({self.hidden_size}) in PaddleVideo's ActBERT")
        for width, heads in (
            ("hidden_size", "num_attention_heads"),
            ("v_hidden_size", "v_num_attention_heads"),
            ("a_hidden_size", "a_num_attention_heads"),
            ("bi_hidden_size", "bi_num_attention_heads"),
        ):
            if getattr(self, heads) <= 0 or getattr(self, width) % getattr(self, heads):
                fail(heads, f"must be a positive divisor of {width} = {getattr(self, width)}")
        for name in ("hidden_act", "v_hidden_act", "a_hidden_act"):
            if getattr(self, name) not in ACTIVATIONS:
                fail(name, f"unknown activation; known: {sorted(ACTIVATIONS)}")
        if self.fusion_method not in ("mul", "sum"):
            fail("fusion_method", "must be 'mul' or 'sum'")
        ids = {
            "t_ent_attention_id": self.num_hidden_layers,
            "v_ent_attention_id": self.v_num_hidden_layers,
            "a_ent_attention_id": self.a_num_hidden_layers,
        }
        if not (len(self.t_ent_attention_id) == len(self.v_ent_attention_id) == len(self.a_ent_attention_id)):
            fail("t_ent_attention_id", "t/v/a_ent_attention_id must have the same length (one entry per connection layer)")
        for name, num_layers in ids.items():
            values = list(getattr(self, name))
            if values != sorted(values) or any(v < 0 or v > num_layers for v in values):
                fail(name, f"must be non-decreasing layer ids in [0, {num_layers}]")
        if self.t_ent_attention_id and self.fixed_t_layer > self.t_ent_attention_id[0]:
            fail("fixed_t_layer", "must not exceed the first t_ent_attention_id")
        if self.v_ent_attention_id and self.fixed_v_layer > self.v_ent_attention_id[0]:
            fail("fixed_v_layer", "must not exceed the first v_ent_attention_id")

    @property
    def num_connection_layers(self) -> int:
        return len(self.t_ent_attention_id)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


__all__ = ["MATCHED_CLASS", "PADDING_ID", "PADDLE_MASKED_VALUE", "PaddleVideoActBertConfig", "PaddleVideoConfigError", "PaddleVideoInputError"]
