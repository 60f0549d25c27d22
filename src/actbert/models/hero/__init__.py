"""HERO (Li et al., EMNLP 2020) on the shared core: configuration, batch, encoders, pretraining
heads, processing, the upstream checkpoint loader and the parity check (docs/hero.md)."""

from actbert.models.hero.batch import HeroBatch
from actbert.models.hero.configuration import TASKS, HeroBatchError, HeroConfig, config_from_upstream
from actbert.models.hero.modeling import HeroForPretraining, HeroPretrainingOutput

__all__ = ["HeroBatch", "HeroBatchError", "HeroConfig", "HeroForPretraining", "HeroPretrainingOutput", "TASKS", "config_from_upstream"]
