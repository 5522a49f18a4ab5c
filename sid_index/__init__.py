"""Catalog -> embeddings -> RQ-KMeans Semantic IDs, the SID<->SKU maps and the trie that constrains decoding."""

__version__ = "0.1.0"
