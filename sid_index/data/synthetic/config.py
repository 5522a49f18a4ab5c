"""Every knob of the synthetic generator (`SynthConfig`), the click model's formulas among them."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sid_index.data.vocabulary import (
    LEAVES,
    TREE,
)
from sid_index.errors import make_config

Prob = Annotated[float, Field(ge=0.0, le=1.0)]


class SynthConfig(BaseModel):
    """Every knob of the generator; stored verbatim in dataset.json so a dataset can be re-made."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, ge=0, description="same settings + seed give identical tables")
    # catalog
    items: int = Field(2000, gt=0, description="catalog size")
    leaves: int | None = Field(None, gt=0, description="leaf categories used; default scales with items")
    popularity_exponent: float = Field(1.0, ge=0.0, description="Zipf exponent of popularity by rank")
    # users
    users: int = Field(500, gt=0, description="users")
    max_preferred_categories: int = Field(3, ge=1, le=len(TREE), description="top categories a user prefers, "
                                          "at most")
    max_history: int = Field(20, ge=0, description="longest history (earlier items) of a session")
    # sessions and queries
    sessions: int = Field(5000, gt=0, description="sessions, each with a click unless keep_no_click")
    empty_query_rate: Prob = Field(0.05, description="share of sessions without a query (recommendation)")
    preference_bias: Prob = Field(0.8, description="P(intent is in one of the user's preferred categories)")
    attribute_probs: tuple[Prob, Prob, Prob] = Field((0.4, 0.4, 0.2), description="P(0/1/2 attributes)",
                                                     json_schema_extra={"comma_separated": True})
    query_dropout: Prob = Field(0.15, description="P(an attribute word is left out of the query)")
    query_synonym_rate: Prob = Field(0.1, description="P(a query uses a synonym where one exists)")
    query_typo_rate: Prob = Field(0.03, description="P(a query has one misspelt word)")
    # exposure (noisy ranker)
    exposure_length: int = Field(10, ge=1, description="items shown per session")
    ranker_noise: float = Field(1.0, ge=0.0, description="std of the Gaussian noise added to relevance")
    leaf_share: Prob = Field(0.3, description="ranker candidates from the intent's leaf, x exposure_length")
    subcategory_share: Prob = Field(0.2, description="ranker candidates from the intent's subcategory")
    # click model
    position_bias: float = Field(1.0, ge=0.0, description="eta: P(examine position p) = p^-eta")
    click_noise: Prob = Field(0.05, description="attractiveness of an irrelevant item (relevance 0)")
    attract_max: Prob = Field(0.9, description="attractiveness of a perfect match (relevance 3)")
    order_rate: Prob = Field(0.3, description="P(order | click) = order_rate * relevance / 3")
    keep_no_click: bool = Field(False, description="keep sessions without a click (else redraw them)")
    pseudo_negative_share: Prob | None = Field(None, description="target share of relevant negatives")
    # splits
    valid_fraction: Prob = Field(0.1, description="share of sessions in the valid split")
    test_fraction: Prob = Field(0.1, description="share of sessions in the test split")

    @model_validator(mode="after")
    def _consistent(self) -> SynthConfig:
        if self.items < 5 * self.exposure_length:
            raise ValueError(f"items ({self.items}) must be >= 5 x exposure_length ({self.exposure_length})")
        if self.leaves is not None and self.leaves > min(len(LEAVES), self.items):
            raise ValueError(f"leaves must be at most {min(len(LEAVES), self.items)}")
        if abs(sum(self.attribute_probs) - 1.0) > 1e-6:
            raise ValueError(f"attribute_probs must sum to 1, got {sum(self.attribute_probs):g}")
        if self.click_noise > self.attract_max:
            raise ValueError("click_noise must not exceed attract_max (relevant items attract more)")
        if not self.keep_no_click and self.attract_max == 0:
            raise ValueError("with attract_max = 0 no session gets a click; pass keep_no_click")
        if self.max_history == 0 and self.empty_query_rate > 0:
            raise ValueError("empty_query_rate > 0 needs max_history >= 1 (sessions need a query or history)")
        if self.valid_fraction + self.test_fraction >= 1:
            raise ValueError("valid_fraction + test_fraction must be below 1")
        return self

    def n_leaves(self) -> int:
        """Leaves used: ~25 items per leaf so small catalogs still have crowded categories."""
        return self.leaves or int(min(len(LEAVES), max(10, self.items // 25)))

    def attract(self, rel: np.ndarray | float) -> np.ndarray:
        """Attractiveness by grade: click_noise at 0 rising exponentially to attract_max at 3."""
        gain = (2.0 ** np.asarray(rel, dtype=np.float64) - 1.0) / 7.0
        return self.click_noise + (self.attract_max - self.click_noise) * gain

    def examine(self, position: np.ndarray) -> np.ndarray:
        """P(a shown item is looked at), by 1-based position."""
        return np.asarray(position, dtype=np.float64) ** (-self.position_bias)


def config_from_options(**options: Any) -> SynthConfig:
    """Build a config from CLI options; a bad value becomes a one-line RadgrError naming the flag."""
    return make_config(SynthConfig, "synthetic-data", **{k: v for k, v in options.items() if v is not None})
