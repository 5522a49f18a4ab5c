"""The HTTP contract of the retrieval server: paths, request and response models, error bodies.

The app serves these models (and its OpenAPI spec states them); `server.client` speaks them. One home,
so a field changes in one place for the server, `radgr query`, the load test and the tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
    create_model,
    model_validator,
)

if TYPE_CHECKING:  # the client imports this module: it needs the paths and bodies, not the server's settings
    from server.settings import ServerSettings

RETRIEVE_PATH = "/v1/retrieve"
READY_PATH = "/readyz"
HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"


class RetrieveBase(BaseModel):
    """Fields and rules shared by every server's request model (limits come from its settings)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _not_empty(self):
        if not (self.query and self.query.strip()) and not self.history:
            raise ValueError("a request needs a non-empty query or a history (or both)")
        return self


def request_model(s: ServerSettings) -> type[BaseModel]:
    """The request schema with this server's limits in it, so the OpenAPI spec states them. Types are strict
    ("5" is not a number, 5 is not a text) and every string and list is bounded."""
    sku = Annotated[StrictStr, StringConstraints(min_length=1, max_length=s.max_sku_chars)]
    user_text = Annotated[StrictStr, StringConstraints(max_length=s.max_user_chars)]
    return create_model(
        "RetrieveRequest",
        __base__=RetrieveBase,
        query=(StrictStr | None, Field(None, max_length=s.max_query_chars, description="search query text")),
        history=(
            list[sku],
            Field(default_factory=list, max_length=s.max_history, description="SKU ids the user saw, oldest first"),
        ),
        user=(
            dict[user_text, user_text],
            Field(default_factory=dict, max_length=s.max_user_features, description="user features, name -> value"),
        ),
        top_k=(StrictInt, Field(100, ge=1, le=s.max_top_k, description="SKUs to return")),
        beam_width=(StrictInt | None, Field(None, ge=1, le=s.max_beam_width, description=f"default {s.beam_width}")),
        with_titles=(StrictBool, Field(False, description="add each item's catalog title (indexes built with "
                                       "titles; null otherwise)")),
    )


class Hit(BaseModel):
    sku_id: str = Field(description="the SKU, as `sku_id` in the data schema")
    sku: str = Field(description="deprecated alias of `sku_id` (removed in the next release)", deprecated=True)
    sid: str = Field(description="Semantic ID, e.g. <a_3><b_17><c_5>")
    score: float = Field(description="log-probability of the SKU: its SID's under the model (fused with the "
                         "index prior when one is set) minus log of the number of SKUs sharing that SID; items "
                         "are ranked by it")
    rank: int = Field(description="rank of the SID among the decoded ones (0 = best)")
    title: str | None = Field(None, description="the catalog title, when the request asked `with_titles`")


class RetrieveResponse(BaseModel):
    request_id: str
    items: list[Hit]
    beam_width: int
    reachable: int = Field(description="distinct SKUs the decoded SIDs hold; below top_k, only that many items "
                           "could be returned at this beam width")
    model: str
    index: str
    engine: str
    timing_ms: dict[str, float]


class ErrorResponse(BaseModel):
    detail: Any


def error_reason(payload: Any, text: str = "") -> str:
    """One line out of an error body: FastAPI's `detail`, as a message or a list of field errors."""
    detail = payload.get("detail") if isinstance(payload, dict) else None
    if detail is None:
        return text[:300]
    if isinstance(detail, list):
        return "; ".join(f"{'.'.join(str(x) for x in e.get('loc', [])[1:]) or 'request'}: {e.get('msg')}"
                         for e in detail if isinstance(e, dict))
    if isinstance(detail, dict):
        return str(detail.get("msg") or detail)
    return str(detail)
