"""The typed configs (as TRL's one per trainer): SFT and preference alignment share the run settings; eval and
the peers table have theirs. Torch-free, so that the command line (built from these classes) starts fast."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sid_index.errors import RadgrError, make_config
from sid_index.trie import BEAM_WIDTH
from trainer.prompt import PromptConfig

# the metrics with per-session values: intervals, paired differences, validation, picking
HEADLINE = (("sid", "recall@128"), ("sid", "mrr"), ("item", "recall@10"), ("item", "recall@50"), ("item", "recall@100"),
            ("item", "ndcg@10"), ("item", "ndcg@50"), ("item", "mrr"))
HEADLINE_NAMES = tuple(f"{level} {key}" for level, key in HEADLINE)  # per-session metrics: intervals, picking
Method = Literal["rad-dpo", "dpo", "simpo", "orpo"]
SEEDS = (0, 1, 2)  # a comparison runs every method from one SFT run per seed, these by default
MIN_DEFAULT_STEPS = 300  # a run given neither steps nor epochs: one epoch, but at least this many steps


class ScratchModelConfig(BaseModel):
    """A small Qwen3 for the demo and tests: head_dim 64, which vLLM's CPU attention kernels require."""

    model_config = ConfigDict(extra="forbid")

    hidden_size: int = Field(256, ge=64, description="scratch model: hidden size")
    num_layers: int = Field(4, ge=1, description="scratch model: decoder layers")
    num_heads: int = Field(4, ge=1, description="scratch model: attention heads")
    num_kv_heads: int = Field(2, ge=1, description="scratch model: key/value heads (grouped-query attention)")
    head_dim: int = Field(64, ge=8, description="scratch model: head size (64 or more for vLLM's CPU kernels)")
    intermediate_size: int | None = Field(None, ge=64, description="scratch model: MLP width (default 3 x "
                                          "hidden size)")
    max_positions: int = Field(1024, ge=64, description="scratch model: longest prompt + SID")
    tokenizer_vocab: int = Field(4096, ge=300, description="scratch model: BPE vocabulary, trained on catalog and "
                                 "query text")
    tokenizer: Literal["bpe", "text-model"] = Field(
        "bpe", description="scratch model: 'bpe' trains a byte-level BPE of `tokenizer_vocab` tokens on catalog and "
        "query text; 'text-model' takes the index's text model's own vocabulary (MiniLM: WordPiece, 30,522 tokens) "
        "and starts the token embeddings from its embedding matrix (the hidden size must be that model's width: "
        "384 for MiniLM)")

    @model_validator(mode="after")
    def _mlp_width(self) -> ScratchModelConfig:
        if self.intermediate_size is None:
            self.intermediate_size = 3 * self.hidden_size
        return self


class RunConfig(BaseModel):
    """What every training run needs: data, index, output, optimisation, logging, checkpoints."""

    model_config = ConfigDict(extra="forbid")

    data: Path = Field(description="dataset directory (radgr data ...)")
    index: Path = Field(description="SID index directory (radgr index build)")
    out: Path = Field(description="output folder: model/ (the checkpoint), metrics.csv, tb/, loss.png")
    split: Literal["train", "train+valid"] = Field(
        "train", description="sessions trained on; train+valid refits on the valid sessions too once the "
        "recipe is chosen on them (the deployed model: the test sessions stay unseen, their most recent "
        "interactions are not)")
    steps: int | None = Field(None, ge=1, description="optimizer steps; default: `epochs` over the data")
    epochs: float | None = Field(None, gt=0, description="passes over the data when `steps` is not given; "
                                 f"default: one, and at least {MIN_DEFAULT_STEPS} steps (small datasets)")
    stop_at_epoch: float | None = Field(None, gt=0, description="end the run at this epoch of its `steps`/"
                                        "`epochs` LR schedule: a refit on train+valid, stopped at the epoch "
                                        "where validation stopped the train-only run (its best checkpoint's "
                                        "`epochs`)")
    batch_size: int = Field(16, ge=1, description="sessions per step and process")
    lr: float = Field(1e-3, gt=0, description="peak learning rate (scratch 1e-3; pretrained ~1e-5)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on every decoder layer's attention and MLP "
                           "outputs while training (GPT-2's resid_pdrop; SASRec's hidden dropout): forward hooks, "
                           "so the checkpoint and serving are unchanged")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="share of steps with linear LR warm-up (then cosine "
                                "decay to 0)")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping norm")
    max_positives: int = Field(8, ge=1, description="positives per session kept (best grades first)")
    seed: int = Field(0, ge=0, description="seed of the data order, negatives and initialisation")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where to train; several GPUs: accelerate "
                                                   "launch / torchrun")
    mixed_precision: Literal["no", "bf16", "fp16"] = Field("no", description="autocast; weights stay float32")
    save_every: int = Field(200, ge=1, description="steps between checkpoints (and one at the end)")
    log_every: int = Field(10, ge=1, description="steps between metric rows (metrics.csv, TensorBoard)")
    resume: bool = Field(False, description="continue from out/model/trainer_state.pt")
    progress: bool = Field(True, description="a progress bar")
    eval_every: int | None = Field(None, ge=1, description="steps between validation evaluations; the best "
                                   "checkpoint by `eval_metric` is kept in out/best (None: no validation)")
    eval_sessions: int = Field(300, ge=1, description="valid sessions scored each time (the first N)")
    eval_width: int = Field(BEAM_WIDTH, ge=1, description="beam width of the validation search")
    eval_metric: str = Field("item recall@10", description="what picks the best checkpoint: 'sid recall@128', "
                             "'sid mrr', 'item recall@10', 'item recall@100', 'item ndcg@10', ...")
    patience: int | None = Field(None, ge=1, description="stop after this many validations without a better "
                                 "metric (needs eval_every)")

    @model_validator(mode="after")
    def _validation(self) -> RunConfig:
        if self.eval_metric not in HEADLINE_NAMES:
            raise ValueError(f"eval_metric must be one of {', '.join(HEADLINE_NAMES)}")
        if self.patience is not None and self.eval_every is None:
            raise ValueError("patience needs eval_every (validation) to know when to stop")
        if self.eval_every is not None and "valid" in self.split:
            raise ValueError("eval_every validates on sessions that split train+valid trains on: choose the "
                             "steps on a train-only run, then refit without validation")
        return self


class SFTConfig(RunConfig):
    """Stage 1: next-token loss on positive paths, optional DSI indexing examples."""

    base: Path | None = Field(None, description="local HF checkpoint to start from; default: a scratch Qwen3")
    init: Path | None = Field(None, description="a radgr checkpoint to continue under a fresh LR schedule (a "
                              "second SFT phase, e.g. annealing an early-stopped model at a low LR); its model, "
                              "tokenizer, prompt and text inputs are kept")
    index_ratio: float | None = Field(None, ge=0, description="indexing examples (item text -> SID) per session "
                                      "example; None: `default_index_ratio` of the data")
    text_inputs: bool = Field(False, description="feed the index's text embeddings to the decoder: the query's as "
                              "a prompt vector, the SID centroids on SID tokens (trainer/text_inputs.py)")
    scratch: ScratchModelConfig = ScratchModelConfig()
    prompt: PromptConfig = PromptConfig()

    @model_validator(mode="after")
    def _text_somewhere(self) -> SFTConfig:
        if self.init is not None:
            if self.base is not None or self.text_inputs or self.scratch != ScratchModelConfig() \
                    or self.prompt != PromptConfig():
                raise ValueError("init continues a radgr checkpoint with its own model, tokenizer, prompt and text "
                                 "inputs: base, text_inputs and the scratch/prompt options do not apply")
            return self
        if self.base is not None and self.scratch != ScratchModelConfig():
            raise ValueError("base brings its own size and tokenizer: the scratch model options (hidden_size, "
                             "layers, tokenizer, ...) do not apply")
        if self.prompt.max_query_tokens == 0 and not self.text_inputs:
            raise ValueError("max_query_tokens 0 drops the query text: only with text_inputs (its embedding)")
        return self


class PrefConfig(RunConfig):
    """Stage 2, what every preference method shares: the SFT checkpoint it starts from and the negatives it is
    shown. One subclass per method (as TRL's DPOConfig, CPOConfig, ORPOConfig) holds that method's defaults."""

    init: Path = Field(description="SFT checkpoint to start from")
    method: Method
    lr: float = Field(1e-4, gt=0, description="peak learning rate")
    num_negatives: int = Field(16, ge=1, description="negatives per session: exposed-unclicked, then random")
    negatives: Literal["exposed", "index"] = Field("exposed", description="where negatives come from: exposed = "
        "the session's exposed-unclicked SIDs, then random; index = the index's own nearest SIDs to the request "
        "(`sid_index.retrieve`, positives removed), a random subset of the nearest `index_pool`: the mistakes "
        "the index-only ranking makes")
    index_pool: int = Field(64, ge=1, description="nearest SIDs the index negatives are drawn from")
    beta: float


class RadDPOConfig(PrefConfig):
    """RAD-DPO: multi-label SFT + a list-wise preference term over all negatives, with token-level gradient
    detachment (TLGD) and similarity-based reward weighting (RDRW); trainer/losses.py:rad_dpo_loss."""

    method: Literal["rad-dpo"] = "rad-dpo"
    beta: float = Field(1.0, gt=0, description="reward scale of the list-wise term")
    form: Literal["paper", "softmax"] = Field("softmax", description="the list-wise term: paper = eq. 7, "
                                              "softmax = the softmax-DPO form (trainer/losses.py)")
    tlgd: bool = Field(True, description="token-level gradient detachment on shared prefixes")
    rdrw: bool = Field(True, description="representation-based dynamic reward weighting")
    multi_label_sft: bool = Field(True, description="SFT on every positive (off: on y_w* only)")
    sft_weight: float = Field(1.0, ge=0, description="weight of L_SFT")
    rdrw_warmup: int = Field(4096, ge=1, description="pairs collected before weights leave 1")
    rdrw_window: int = Field(4096, ge=1, description="recent pairs whose quartiles set the weights")
    rdrw_lambda: float = Field(12.0, gt=0, description="slope of the RDRW weight (paper: 12)")
    rdrw_signal: Literal["eos", "sid"] = Field("eos", description="RDRW similarity: eos = the model's EOS hidden "
        "states (eq. 5); sid = the index's RQ-KMeans reconstructions of the two SIDs (bench/rdrw_signal.py)")
    index_prior: float = Field(0.0, ge=0, description="add the index's retrieval score with this weight to "
        "every candidate's reward: the model learns what its index does not know; the checkpoint records it, "
        "and radgr eval / serve fuse the same prior by default")


class DPOConfig(PrefConfig):
    """DPO (Rafailov et al. 2023), one pair per negative, against the frozen SFT checkpoint as reference."""

    method: Literal["dpo"] = "dpo"
    beta: float = Field(0.1, gt=0, description="strength of the KL tie to the reference (TRL's default)")


class SimPOConfig(PrefConfig):
    """SimPO (Meng et al. 2024): length-normalised log-likelihood as the reward, no reference model."""

    method: Literal["simpo"] = "simpo"
    beta: float = Field(2.0, gt=0, description="reward scale (the SimPO paper's range: 2-2.5)")
    gamma: float = Field(1.0, ge=0, description="target reward margin")


class ORPOConfig(PrefConfig):
    """ORPO (Hong et al. 2024): SFT plus an odds-ratio penalty, no reference model."""

    method: Literal["orpo"] = "orpo"
    beta: float = Field(0.1, gt=0, description="weight of the odds-ratio term (the ORPO paper's lambda)")


PREF_CONFIGS: dict[str, type[PrefConfig]] = {
    cls.model_fields["method"].default: cls for cls in (RadDPOConfig, DPOConfig, SimPOConfig, ORPOConfig)}


def pref_config(what: str, **options: Any) -> PrefConfig:
    """The config of `options["method"]` (default rad-dpo) from the options it has. Options shared by a grid of
    methods (e.g. `rdrw_warmup`) reach the methods that have them; an option no method has is an error (a typo
    would otherwise change nothing). A bad value: one RadgrError line."""
    method = options.get("method", "rad-dpo")
    if method not in PREF_CONFIGS:
        raise RadgrError(f"invalid {what} settings: method {method!r}, expected one of {', '.join(PREF_CONFIGS)}")
    unknown = sorted(set(options).difference(*(c.model_fields for c in PREF_CONFIGS.values())))
    if unknown:
        raise RadgrError(f"invalid {what} settings: no preference method has the option(s) {', '.join(unknown)}")
    cls = PREF_CONFIGS[method]
    return make_config(cls, what, **{k: v for k, v in options.items() if k in cls.model_fields})


class EvalConfig(BaseModel):
    """Everything `radgr eval` needs."""

    model_config = ConfigDict(extra="forbid")

    model: list[Path] = Field(min_length=1, description="checkpoint folder or training output folder; repeat for "
                              "several (one row each)")
    index: Path = Field(description="SID index directory the checkpoints were trained for")
    data: Path = Field(description="dataset directory")
    split: Literal["train", "valid", "test"] = Field("test", description="split to evaluate")
    beam_width: int = Field(BEAM_WIDTH, ge=1, description="beams per session (SIDs returned)")
    batch_size: int = Field(16, ge=1, description="sessions decoded together")
    max_sessions: int | None = Field(None, ge=1, description="evaluate only the first N sessions")
    device: str = Field("cpu", description="where to decode: cpu or cuda[:N]")
    unconstrained: bool = Field(True, description="also decode without the trie, to measure the invalid-SID rate")
    baselines: bool = Field(True, description="add the most-popular and index-only rows (same sessions)")
    index_prior: list[float] | None = Field(None, description="weights of the index's retrieval score fused into "
                                            "the search; repeat: one row per model and weight (0: the model "
                                            "alone; not given: the weight each checkpoint was trained with)")
    item_prior: list[float] | None = Field(None, description="weights of the item prior (the request's text "
                                           "embedding against each SKU's own) added to every SKU of the beam; "
                                           "repeat: one row per weight, all from one beam search (0: none; not "
                                           "given: the checkpoint's)")
    index_prior_form: Literal["sid", "item"] | None = Field(None, description="what the index prior scores: 'sid' "
                                                           "each SID's centroid sum, 'item' its best SKU's own text "
                                                           "vector, searched with exact lookahead (adds the index-only "
                                                           "row at item resolution; not given: the checkpoint's)")
    lexical_prior: float | None = Field(None, ge=0, description="with the item form: add the query's BM25 score "
                                        "against each SKU's text (over the request's best, sid_index.lexical) x "
                                        "this to every item's score (0: none; not given: the checkpoint's)")
    embedding_model: Path | None = Field(None, description="the index's text model, when not where the index says")
    out: Path | None = Field(None, description="write every model's metrics as JSON here")
    markdown: Path | None = Field(None, description="write the results table (markdown) here")
    pick_prior: str | None = Field(None, description="after scoring the index-prior (and item-prior) weights of one "
                                   "model on valid, write into its checkpoint the pair surest to beat the index-only "
                                   "row on this metric (e.g. 'item recall@10'; the highest lower end of the paired "
                                   "95% interval): radgr eval and serve then fuse it by default")

    @model_validator(mode="after")
    def _picking(self) -> EvalConfig:
        if self.pick_prior is None:
            return self
        if self.pick_prior not in HEADLINE_NAMES:
            raise ValueError(f"pick_prior must be one of {', '.join(HEADLINE_NAMES)}")
        if self.split == "test":
            raise ValueError("pick_prior on the test split would choose on the sessions it is judged on: use valid")
        if len(self.model) != 1 or not self.baselines:
            raise ValueError("pick_prior needs exactly one model and the baselines (the index-only row)")
        return self

    @field_validator("index_prior", "item_prior")
    @classmethod
    def _weights(cls, v: list[float] | None) -> list[float] | None:
        """>= 0, each once (a weight given twice would score, and print, the same row twice)."""
        if v is not None and (not v or any(w < 0 for w in v)):
            raise ValueError("weights must be >= 0")
        return None if v is None else list(dict.fromkeys(v))

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        import torch  # here, not at the top: the command line imports this module and starts without torch

        try:
            dev = torch.device(v)
        except RuntimeError:
            dev = None
        if dev is None or dev.type not in ("cpu", "cuda"):
            raise ValueError(f"expected cpu or cuda[:N], got '{v}'")
        return v


class PeersConfig(BaseModel):
    """Everything `radgr bench peers` needs."""

    model_config = ConfigDict(extra="forbid")

    index: Path = Field(description="SID index directory (radgr index build)")
    data: Path = Field(description="dataset directory (radgr data ...)")
    model: list[Path] = Field(default_factory=list, description="a checkpoint to evaluate on the same sessions; "
                              "repeat for several")
    index_prior: list[float] | None = Field(None, description="as radgr eval --index-prior: one row per model and "
                                            "weight (0: the model alone)")
    item_prior: list[float] | None = Field(None, description="as radgr eval --item-prior: one row per model, "
                                           "index-prior weight and item-prior weight")
    index_prior_form: Literal["sid", "item"] | None = Field(None, description="as radgr eval --index-prior-form")
    lexical_prior: float | None = Field(None, ge=0, description="as radgr eval --lexical-prior")
    rankings: list[Path] = Field(default_factory=list, description="rankings made elsewhere (JSON; e.g. "
                                 "bench/sasrec_recbole.py); repeatable")
    rows_from: list[Path] = Field(default_factory=list, description="rows scored earlier on the same sessions "
                                  "(the --out JSON of radgr eval or radgr bench peers), added without decoding again; "
                                  "a row this run computes is kept from this run; repeatable")
    split: Literal["train", "valid", "test"] = Field("test", description="split to evaluate")
    max_sessions: int | None = Field(None, ge=1, description="only the first N sessions (the same for every row)")
    beam_width: int = Field(BEAM_WIDTH, ge=1, description="beams per session (SIDs returned)")
    batch_size: int = Field(8, ge=1, description="sessions decoded together")
    device: str = Field("cpu", description="where to decode: cpu or cuda[:N]")
    embedding_model: Path | None = Field(None, description="the index's text model folder, when it is not where "
                                         "the index says")
    out: Path | None = Field(None, description="write every row's metrics as JSON here")
    markdown: Path | None = Field(None, description="write the table (markdown) here")
