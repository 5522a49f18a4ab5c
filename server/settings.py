"""Server settings, read from `RADGR_*` environment variables (or `radgr serve` flags, which set them)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sid_index.trie import BEAM_WIDTH


class ServerSettings(BaseSettings):
    """Everything `radgr serve` can be told; one field per environment variable, e.g. RADGR_ENGINE=vllm."""

    model_config = SettingsConfigDict(env_prefix="RADGR_", extra="forbid")

    model: str = Field(..., description="checkpoint folder (a `radgr train` output or its model/ folder)")
    index: str = Field(..., description="SID index folder the checkpoint was trained for")
    engine: Literal["auto", "native", "vllm"] = Field(
        "auto", description="decoder: vLLM, plain PyTorch, or auto (vLLM when installed and the checkpoint's "
        "prompts are 32-aligned, else native)"
    )
    device: str = Field("cpu", description="torch device of the native engine and the constraint (cpu, cuda)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)

    beam_width: int = Field(BEAM_WIDTH, ge=1, description="default beam width of a request")
    max_beam_width: int = Field(BEAM_WIDTH, ge=1, description="largest beam width a request may ask for")
    max_top_k: int = Field(1000, ge=1, description="largest number of SKUs a request may ask for")
    index_prior: float | None = Field(None, ge=0, description="weight of the index's own retrieval score fused "
                                      "into the beam search (radgr eval --index-prior; 0: the model alone; "
                                      "None: the weight the checkpoint was trained with, else 0)")
    item_prior: float | None = Field(None, ge=0, description="weight of the item prior (the request's text "
                                     "embedding against each decoded SKU's own) added to the SKUs' scores (radgr "
                                     "eval --item-prior; None: the checkpoint's, else 0)")
    index_prior_form: Literal["sid", "item"] | None = Field(
        None, description="what the index prior scores (radgr eval --index-prior-form): 'sid' each SID's centroid "
        "sum, 'item' its best SKU's own text vector; None: the checkpoint's, else 'sid'")
    lexical_prior: float | None = Field(None, ge=0, description="with the item form: weight of the query's BM25 "
                                        "score against each SKU's text in the item scores (radgr eval "
                                        "--lexical-prior; None: the checkpoint's, else 0)")
    score_eos: bool = Field(False, description="add log p(EOS | SID) to scores (one more decoder step)")
    max_query_chars: int = Field(512, ge=1)
    max_history: int = Field(200, ge=0, description="history items a request may send (the prompt keeps the last few)")
    max_user_features: int = Field(32, ge=0)
    max_user_chars: int = Field(256, ge=1, description="longest user-feature name or value")
    max_sku_chars: int = Field(128, ge=1, description="longest SKU id in a history")
    max_connections: int = Field(256, ge=1, description="open connections and tasks uvicorn serves at once; "
                                 "past it new ones get 503 before any parsing")
    keep_alive_s: float = Field(5.0, gt=0, description="idle keep-alive connections are closed after this")
    header_timeout_s: float = Field(10.0, gt=0, description="a request line and headers not complete this long "
                                    "after the connection opened (or the last response) close it (slowloris)")
    max_body_bytes: int = Field(64 * 1024, ge=1024, description="largest request body; larger ones get 413 unread")

    max_batch_requests: int = Field(8, ge=1, description="requests decoded together in one batch")
    max_pending: int = Field(64, ge=1, description="requests queued or running; more are refused with 503")
    max_pending_per_client: int | None = Field(None, ge=1, description="requests one client address may have "
        "queued or running; more get 429, so one flooding client cannot starve the others. Off by default: "
        "behind a load balancer every request has its address unless uvicorn trusts its X-Forwarded-For")
    request_timeout_s: float = Field(10.0, gt=0, description="deadline of a request; past it: 504")
    retry_after_s: int = Field(1, ge=0, description="Retry-After sent with 503")
    shutdown_grace_s: float = Field(30.0, gt=0, description="on SIGTERM/SIGINT: time in-flight requests get to "
                                    "finish; those still running just before it ends answer 503 + Retry-After")
    api_token: str | None = Field(None, description="when set, requests need 'Authorization: Bearer <token>'")
    warmup: bool = Field(True, description="run one search before reporting ready")
    log_level: str = "info"

    vllm_kv_cache_gib: float = Field(1.0, gt=0, description="vLLM KV cache size on CPU")
    vllm_gpu_memory_utilization: float = Field(0.5, gt=0, le=1, description="vLLM's share of GPU memory")
    vllm_block_size: int | None = Field(None, ge=1, description="KV block size; default 32 on CPU (prefix reuse)")
    vllm_max_model_len: int = Field(1024, ge=16)

    @field_validator("api_token")
    @classmethod
    def _no_empty_token(cls, v: str | None) -> str | None:
        return v or None  # RADGR_API_TOKEN= (set but empty, as compose passes an unset variable) means no token

    @model_validator(mode="after")
    def _widths(self):
        if self.beam_width > self.max_beam_width:
            raise ValueError(f"beam_width {self.beam_width} exceeds max_beam_width {self.max_beam_width}")
        return self


def with_checkpoint_prior(settings: ServerSettings, trained_prior: float, item_prior: float = 0.0,
                          form: str = "sid", lexical_prior: float = 0.0) -> ServerSettings:
    """`settings` with `index_prior`, `item_prior`, `index_prior_form` and `lexical_prior` set: as given, else
    the checkpoint's."""
    update = {}
    if settings.lexical_prior is None:
        update["lexical_prior"] = float(lexical_prior)
    if settings.index_prior_form is None:
        update["index_prior_form"] = form
    if settings.index_prior is None:
        update["index_prior"] = float(trained_prior)
    if settings.item_prior is None:
        update["item_prior"] = float(item_prior)
    return settings.model_copy(update=update) if update else settings
