"""Targets of ActBERT's four pretraining tasks (paper 3.2.3), drawn per sample.

* **Masked language modelling** -- each word piece (never [CLS]/[SEP]/[PAD]) is chosen with
  probability ``mlm_probability``; a chosen one keeps its id as the label and is replaced by
  [MASK] (80%), a random non-special word piece (10%) or left unchanged (10%) -- BERT's rule.
* **Masked action classification** -- each action position that has a verb target (non-zero
  target row) is masked with probability ``action_mask_probability``: its feature is zeroed and
  ``action_target_mask`` marks it; the target is the stored L1-normalised verb distribution.
* **Masked object classification** -- each real region is masked with probability
  ``region_mask_probability``: feature zeroed (its box location is kept, as in ViLBERT), target =
  the stored detector class distribution (``region_targets``).
* **Cross-modal matching** -- with probability ``negative_probability`` the text is swapped for
  another video's (done by :class:`actbert.data.samples.PretrainDataset`, label 0).

Masking targets are produced for negatives too; the model ignores masked losses on negatives.
All draws come from the generator passed in, in a fixed order, so results depend only on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from actbert.data.samples import Sample, SpecialTokens

IGNORE_INDEX = -100


@dataclass
class MaskingConfig:
    mlm_probability: float = 0.15
    mask_token_fraction: float = 0.8  # of the chosen word pieces -> [MASK]
    random_token_fraction: float = 0.1  # -> a random word piece (the rest stay unchanged)
    action_mask_probability: float = 0.15
    region_mask_probability: float = 0.15
    negative_probability: float = 0.5

    def __post_init__(self) -> None:
        for name in ("mlm_probability", "action_mask_probability", "region_mask_probability", "negative_probability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"masking.{name} must be in [0, 1], got {value}")
        if self.mask_token_fraction < 0 or self.random_token_fraction < 0 or self.mask_token_fraction + self.random_token_fraction > 1:
            raise ValueError(
                "masking.mask_token_fraction and masking.random_token_fraction must be >= 0 and sum to <= 1, got "
                f"{self.mask_token_fraction} and {self.random_token_fraction}"
            )


def random_word_pieces(rng: np.random.Generator, count: int, vocab_size: int, special_ids: set[int]) -> np.ndarray:
    """``count`` ids drawn uniformly from the vocabulary without the special tokens. int64 ``[count]``."""
    # a set lookup per id: a sample draws a few ids, for which np.isin's sorting cost ~30x more (docs/scale.md, fix 9)
    is_special = lambda ids: np.fromiter((int(i) in special_ids for i in ids), bool, len(ids))  # noqa: E731
    out = rng.integers(0, vocab_size, size=count)
    bad = is_special(out)
    while bad.any():  # rejection: specials are a handful out of ~30k ids
        out[bad] = rng.integers(0, vocab_size, size=int(bad.sum()))
        bad = is_special(out)
    return out.astype(np.int64)


def mask_tokens(
    input_ids: np.ndarray, eligible: np.ndarray, rng: np.random.Generator, config: MaskingConfig, specials: "SpecialTokens"
) -> tuple[np.ndarray, np.ndarray]:
    """BERT masking of ``input_ids [L]`` at ``eligible [L]`` positions -> (new ids [L], labels [L])."""
    chosen = eligible & (rng.random(len(input_ids)) < config.mlm_probability)
    labels = np.where(chosen, input_ids, IGNORE_INDEX).astype(np.int64)
    ids = input_ids.copy()
    how = rng.random(len(input_ids))
    to_mask = chosen & (how < config.mask_token_fraction)
    to_random = chosen & (how >= config.mask_token_fraction) & (how < config.mask_token_fraction + config.random_token_fraction)
    ids[to_mask] = specials.mask_id
    ids[to_random] = random_word_pieces(rng, int(to_random.sum()), specials.vocab_size, specials.special_ids)
    return ids, labels


def mask_sample(sample: "Sample", rng: np.random.Generator, config: MaskingConfig, specials: "SpecialTokens") -> "Sample":
    """Draw the MLM, masked-action and masked-region targets of ``sample`` (modified in place and returned)."""
    # words
    eligible_words = ~sample.text_special & (sample.input_ids != specials.pad_id)
    sample.input_ids, sample.mlm_labels = mask_tokens(sample.input_ids, eligible_words, rng, config, specials)

    # actions: only clips whose narration gave a verb target can be predicted
    has_target = sample.action_targets.sum(axis=1) > 0
    eligible_actions = (sample.action_token_ids == specials.act_id) & has_target
    masked_actions = eligible_actions & (rng.random(len(eligible_actions)) < config.action_mask_probability)
    sample.action_features[masked_actions] = 0.0
    sample.action_target_mask = masked_actions

    # regions
    eligible_regions = sample.region_token_ids == specials.region_id
    masked_regions = eligible_regions & (rng.random(len(eligible_regions)) < config.region_mask_probability)
    sample.region_features[masked_regions] = 0.0
    sample.region_target_mask = masked_regions
    return sample
