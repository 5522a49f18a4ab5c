"""Models and checkpoints: a local HF checkpoint or a small Qwen3 trained from scratch, with SID tokens.

A checkpoint is a plain Hugging Face folder (safetensors, config, tokenizer) that vLLM and
transformers load unchanged, plus `radgr.json` naming the index it was trained for, where
the SID tokens sit and how prompts are built. Training state (optimizer, scheduler, RNG,
data position, RDRW quantiles) rides along in `trainer_state.pt`, which loaders ignore.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sid_index.atomic import CHECKSUMS, atomic_dir, complete_leftover, sha256_file, verify_checksums
from sid_index.embed import HF_LOAD_LOCK
from sid_index.errors import RadgrError
from sid_index.index import SidIndex, load_centroids, require_index
from sid_index.retrieve import embedding_model_of
from sid_index.tokens import SidVocab, add_sid_tokens
from trainer.config import ScratchModelConfig
from trainer.prompt import PromptBuilder, PromptConfig
from trainer.text_inputs import TEXT_INPUTS_FILE, TEXT_VECTOR_TOKEN, TextInputLM, TextInputs

META_FILE = "radgr.json"
STATE_FILE = "trainer_state.pt"
CHECKPOINT_FORMAT = "radgr-checkpoint"
CHECKPOINT_VERSION = 1
EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"


@dataclass
class Checkpoint:
    """A loaded model with everything needed to build its prompts and read its outputs."""

    path: Path | None
    model: Any
    tokenizer: Any
    vocab: SidVocab
    meta: dict[str, Any]
    text_inputs: TextInputs | None = None  # text-embedding inputs (trainer/text_inputs.py), when trained with them

    @property
    def decoder(self):
        """What to call for logits: the LM itself, or the LM behind its text-embedding inputs."""
        return self.model if self.text_inputs is None else TextInputLM(self.model, self.text_inputs)

    @property
    def text_model(self) -> dict[str, Any] | None:
        """The text model whose embeddings fill the prompts' text-vector slot (None: no slot)."""
        return self.meta.get("text_inputs")

    @property
    def index_prior(self) -> float:
        """Weight of the index prior the model is served with (0: none): the one it was trained on top of
        (`RadDPOConfig.index_prior`) or the one `radgr eval --pick-prior` chose on valid; what `radgr eval` and
        the server fuse into the search unless told otherwise."""
        return float(self.meta.get("index_prior", 0.0))

    @property
    def index_prior_form(self) -> str:
        """What the index prior scores: 'sid' (each SID's centroid sum) or 'item' (its best SKU's own vector,
        `sid_index.decoding.ItemPrior`); set by `radgr eval --pick-prior` with the weight."""
        return str(self.meta.get("index_prior_form", "sid"))

    @property
    def item_prior(self) -> float:
        """Weight of the item prior the model is served with (0: none; `sid_index.retrieve.item_prior_scores`):
        the one `radgr eval --pick-prior` chose on valid beside the index prior."""
        return float(self.meta.get("item_prior", 0.0))

    @property
    def lexical_prior(self) -> float:
        """Weight of the lexical term of the item-form index prior (0: none; `sid_index.lexical`): the one the
        `radgr eval --pick-prior` run that chose the index prior was given."""
        return float(self.meta.get("lexical_prior", 0.0))

    @property
    def eos_id(self) -> int:
        return int(self.meta["eos_id"])

    @property
    def pad_id(self) -> int:
        return int(self.meta["pad_id"])

    @property
    def prompts(self) -> PromptBuilder:
        config = PromptConfig(**self.meta["prompt"])
        slot = self.tokenizer.convert_tokens_to_ids(TEXT_VECTOR_TOKEN) if self.text_model else None
        return PromptBuilder(self.tokenizer, self.vocab, self.eos_id, config, pad_id=self.pad_id, vector_id=slot)

    def check_index(self, index: SidIndex) -> None:
        """Refuse an index other than the one this checkpoint was trained for."""
        require_index(self.meta["index_id"], index, f"checkpoint {self.path}")


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096):
    """A byte-level BPE tokenizer trained on catalog and query text (any input text encodes)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN)


def text_model_vocab(folder: Path) -> tuple[Any, torch.Tensor]:
    """The text model's own tokenizer (MiniLM: WordPiece, 30,522 tokens), given the EOS and PAD a decoder needs
    where it lacks them, and its input token-embedding matrix [vocab, width]: a scratch decoder that starts from
    what the text model knows about words (issue 16's pretrained-text lever)."""
    from transformers import AutoModel, AutoTokenizer

    try:
        with HF_LOAD_LOCK:
            tokenizer = AutoTokenizer.from_pretrained(folder)
            encoder = AutoModel.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise RadgrError(f"--tokenizer text-model: cannot load the text model {folder}: {exc}") from None
    weights = encoder.get_input_embeddings().weight.detach().float()
    if len(weights) < len(tokenizer):
        raise RadgrError(f"--tokenizer text-model: {folder} has {len(weights)} token embeddings for a "
                         f"{len(tokenizer)}-token vocabulary")
    weights = weights[: len(tokenizer)].clone()  # rows past the vocabulary (padding) would land on added tokens
    tokenizer.add_special_tokens({"eos_token": tokenizer.eos_token or EOS_TOKEN,
                                  "pad_token": tokenizer.pad_token or PAD_TOKEN})
    tokenizer.model_max_length = 1 << 30  # prompts are cut by PromptConfig, not by the encoder's 512 positions
    return tokenizer, weights


def scratch_model(tokenizer, cfg: ScratchModelConfig, seed: int = 0):
    """A randomly initialised Qwen3 sized for `tokenizer` (which already holds the SID tokens)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.max_positions,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    with HF_LOAD_LOCK:  # post_init ties the weights: not while another thread loads (see HF_LOAD_LOCK)
        return Qwen3ForCausalLM(config)


def residual_dropout(model: torch.nn.Module, p: float) -> list[torch.utils.hooks.RemovableHandle]:
    """Dropout with rate `p` on the output of every decoder layer's attention and MLP block, in training mode
    only: the regulariser GPT-2 (resid_pdrop) and SASRec (hidden dropout) use, which Qwen3 lacks. Forward hooks,
    not weights or config, so the saved checkpoint is what vLLM and the native engine already serve."""

    def drop(module, args, output):
        if not module.training:
            return output
        if isinstance(output, tuple):  # attention: (output, weights)
            return (torch.nn.functional.dropout(output[0], p, True), *output[1:])
        return torch.nn.functional.dropout(output, p, True)

    layers = [m for m in model.modules() if hasattr(m, "self_attn") and hasattr(m, "mlp")]
    if not layers:
        raise RadgrError(f"--dropout: no decoder layers (self_attn + mlp) in {type(model).__name__}")
    return [block.register_forward_hook(drop) for layer in layers for block in (layer.self_attn, layer.mlp)]


def new_model(
    index: SidIndex,
    texts: Iterable[str],
    base: str | Path | None = None,
    scratch: ScratchModelConfig | None = None,
    prompt: PromptConfig | None = None,
    seed: int = 0,
    text_inputs: bool = False,
) -> Checkpoint:
    """The starting point of SFT: a local HF checkpoint (`base`) or a scratch Qwen3, with the index's SID tokens
    (and, with `text_inputs`, the text-vector slot token and fresh projections of the index's text space)."""
    if base is not None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        base = Path(base)
        if not (base / "config.json").is_file():
            raise RadgrError(f"{base}: not a Hugging Face checkpoint folder (no config.json)")
        with HF_LOAD_LOCK:
            tokenizer = AutoTokenizer.from_pretrained(base)
            model = AutoModelForCausalLM.from_pretrained(base, dtype="auto")
        if tokenizer.eos_token_id is None:
            raise RadgrError(f"{base}: the tokenizer has no EOS token")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        vocab = add_sid_tokens(tokenizer, index.codebook_sizes, model)
        if text_inputs:
            tokenizer.add_special_tokens({"additional_special_tokens": [TEXT_VECTOR_TOKEN]})
            model.resize_token_embeddings(len(tokenizer))
    else:
        scratch = scratch or ScratchModelConfig()
        word_vectors = None
        if scratch.tokenizer == "text-model":
            tokenizer, word_vectors = text_model_vocab(embedding_model_of(index))
            if word_vectors.shape[1] != scratch.hidden_size:
                raise RadgrError(f"--tokenizer text-model: the index's text model is {word_vectors.shape[1]} wide; "
                                 f"pass --hidden-size {word_vectors.shape[1]} (now {scratch.hidden_size})")
        else:
            tokenizer = train_tokenizer(texts, scratch.tokenizer_vocab)
        vocab = add_sid_tokens(tokenizer, index.codebook_sizes)
        if text_inputs:
            tokenizer.add_special_tokens({"additional_special_tokens": [TEXT_VECTOR_TOKEN]})
        model = scratch_model(tokenizer, scratch, seed)
        if word_vectors is not None:  # the text model's rows; SID, EOS/PAD and slot tokens keep their fresh init
            with torch.no_grad():
                model.get_input_embeddings().weight[: len(word_vectors)] = word_vectors
    module, text_meta = None, None
    if text_inputs:

        centroids = load_centroids(index)
        if len(centroids) != index.levels:
            raise RadgrError(f"--text-inputs: index {index.root} has no RQ-KMeans centroids (built from given codes)")
        module = TextInputs.for_index(centroids, vocab.offsets, model.config.hidden_size,
                                      tokenizer.convert_tokens_to_ids(TEXT_VECTOR_TOKEN), seed)
        emb = index.manifest.get("embedding") or {}
        embedding_model_of(index)  # the index's text model must be here: it embeds every prompt's text
        text_meta = {"embedding_model": emb.get("model"), "embedding_fingerprint": emb.get("model_fingerprint"),
                     "text_dim": module.text_dim, "file": TEXT_INPUTS_FILE}
    meta = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "index_id": index.index_id,
        "codebook_sizes": list(index.codebook_sizes),
        "sid_offsets": list(vocab.offsets),
        "eos_id": int(tokenizer.eos_token_id),
        "pad_id": int(tokenizer.pad_token_id),
        "prompt": (prompt or PromptConfig()).model_dump(),
        "base": str(base) if base is not None else "scratch",
        "stages": [],
        **({"text_inputs": text_meta} if text_meta else {}),
    }
    return Checkpoint(path=None, model=model, tokenizer=tokenizer, vocab=vocab, meta=meta, text_inputs=module)


def save_checkpoint(
    ckpt: Checkpoint, out: str | Path, state: dict[str, Any] | None = None, model=None, state_dict=None
) -> Path:
    """Write the checkpoint folder atomically (a kill never leaves a damaged one); `state` -> trainer_state.pt.

    `model` / `state_dict`: the unwrapped model (the LM, or the `TextInputLM` around it) and its full
    weights when training under DDP/FSDP.
    """
    out = Path(out)
    model = model if model is not None else ckpt.model
    text_inputs = ckpt.text_inputs
    if isinstance(model, TextInputLM):
        model, text_inputs = model.lm, model.text_inputs
        if state_dict is not None:
            if text_inputs is not None:
                text_inputs = TextInputs.load_from(text_inputs, {k.removeprefix("text_inputs."): v
                                                                for k, v in state_dict.items()
                                                                if k.startswith("text_inputs.")})
            state_dict = {k.removeprefix("lm."): v for k, v in state_dict.items() if k.startswith("lm.")}
    with atomic_dir(out, checksums=True) as tmp:  # checksums.json last: SHA-256 of every file (verified on load)
        model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
        if text_inputs is not None:
            text_inputs.save(tmp)
            if ckpt.meta.get("text_inputs"):  # an older checkpoint named its top-level file: point at the new one
                ckpt.meta["text_inputs"]["file"] = TEXT_INPUTS_FILE
        ckpt.tokenizer.save_pretrained(tmp)
        (tmp / META_FILE).write_text(json.dumps(ckpt.meta, indent=2) + "\n")
        if state is not None:
            torch.save(state, tmp / STATE_FILE)
    ckpt.path = out
    return out


def update_checkpoint_meta(path: str | Path, changes: dict[str, Any]) -> Path:
    """Merge `changes` into a checkpoint's radgr.json without rewriting its weights (a 1.7B model is GBs):
    the replacement folder hard-links every other file (copies them where links fail), then takes the old
    one's place atomically. The folder is verified first (a damaged one stays as it is), so its checksum list
    stays true for every linked file: only radgr.json is hashed again (a folder saved before checksums gets a
    list of all its files)."""
    path = resolve_checkpoint(path)
    listed = verify_checkpoint(path)
    meta = {**json.loads((path / META_FILE).read_text()), **changes}
    with atomic_dir(path, checksums=not listed) as tmp:
        for src in path.rglob("*"):
            rel = src.relative_to(path)
            if src.is_dir() or rel.as_posix() in (META_FILE, CHECKSUMS):
                continue
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, tmp / rel)
            except OSError:
                shutil.copy2(src, tmp / rel)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if listed:
            listing = json.loads((path / CHECKSUMS).read_text())
            listing["files"][META_FILE] = {"bytes": (tmp / META_FILE).stat().st_size,
                                           "sha256": sha256_file(tmp / META_FILE)}
            (tmp / CHECKSUMS).write_text(json.dumps(listing, indent=1) + "\n")
    return path


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, or a training output folder holding one under `model/`."""
    path = Path(path)
    if (path / META_FILE).is_file():
        return path
    if (path / "model" / META_FILE).is_file():
        return path / "model"
    for where in (path, path / "model"):
        left = complete_leftover(where) if not where.exists() else None
        if left is not None:
            raise RadgrError(f"{where}: missing, but an interrupted save left a complete checkpoint at {left} "
                             "(`radgr train ... --resume` recovers it; or rename it)")
    raise RadgrError(f"{path}: not a radgr checkpoint (no {META_FILE}; train one with `radgr train sft`)")


_VERIFIED: set[tuple] = set()  # folders verified in this process, keyed by every file's (name, size, mtime)


def verify_checkpoint(path: Path) -> bool:
    """Every file against the checkpoint's checksums.json; False for a checkpoint saved before checksums
    existed. One streaming SHA-256 pass over the weights, skipped when no file changed (size, mtime) since
    this process last verified the folder."""
    try:
        key = (str(path.resolve()),) + tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                                                    for p in path.rglob("*") if p.is_file()))
    except OSError:
        return verify_checksums(path)
    if key in _VERIFIED:
        return True
    verified = verify_checksums(path)
    if verified:
        _VERIFIED.add(key)
    return verified


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu", dtype: Any = "auto", with_model: bool = True
) -> Checkpoint:
    """Load a checkpoint written by `save_checkpoint`; fails clearly on a folder that is not one.

    `with_model=False` reads only the tokenizer and metadata (an engine that loads the weights itself).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_checkpoint(path)
    verify_checkpoint(path)  # flipped, truncated or missing files: one line, before anything is parsed
    try:
        meta = json.loads((path / META_FILE).read_text())
    except json.JSONDecodeError as exc:
        raise RadgrError(f"{path / META_FILE}: damaged checkpoint metadata ({exc})") from None
    if meta.get("format") != CHECKPOINT_FORMAT or meta.get("version") != CHECKPOINT_VERSION:
        raise RadgrError(f"{path}: checkpoint format {meta.get('format')} v{meta.get('version')} is not supported")
    for key in ("index_prior", "item_prior", "lexical_prior"):
        prior = meta.get(key, 0.0)
        if isinstance(prior, bool) or not isinstance(prior, int | float) or not math.isfinite(prior) or prior < 0:
            raise RadgrError(f"{path / META_FILE}: {key} must be a number >= 0, got {prior!r}")
    if meta.get("index_prior_form", "sid") not in ("sid", "item"):
        raise RadgrError(f"{path / META_FILE}: index_prior_form must be 'sid' or 'item', "
                         f"got {meta.get('index_prior_form')!r}")
    with HF_LOAD_LOCK:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device) if with_model else None
    vocab = SidVocab.from_tokenizer(tokenizer, meta["codebook_sizes"])
    if list(vocab.offsets) != meta["sid_offsets"]:
        raise RadgrError(f"{path}: tokenizer SID token ids {vocab.offsets} differ from {META_FILE}")
    text_inputs = None
    if meta.get("text_inputs"):
        name = str(meta["text_inputs"].get("file") or TEXT_INPUTS_FILE)  # older checkpoints: at the top level
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise RadgrError(f"{path / META_FILE}: text-input file '{name}' is outside the checkpoint")
        try:
            text_inputs = TextInputs.load(path / name).to(device)
        except (OSError, ValueError, RuntimeError) as exc:
            raise RadgrError(f"{path}: damaged text-input weights ({str(exc).splitlines()[0]})") from None
        if text_inputs.vector_token_id != tokenizer.convert_tokens_to_ids(TEXT_VECTOR_TOKEN):
            raise RadgrError(f"{path}: {TEXT_INPUTS_FILE} names another text-vector token than the tokenizer")
    return Checkpoint(path=path, model=model, tokenizer=tokenizer, vocab=vocab, meta=meta, text_inputs=text_inputs)


def load_state(path: str | Path) -> dict[str, Any] | None:
    """The training state saved beside a checkpoint, or None."""
    f = resolve_checkpoint(path) / STATE_FILE
    if not f.is_file():
        return None
    try:  # tensors and plain containers only: a crafted pickle in the folder cannot run code
        return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling errors have many types; each is one line here
        raise RadgrError(f"{f}: damaged or untrusted training state ({str(exc).splitlines()[0][:200]})") from None
