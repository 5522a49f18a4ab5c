"""Online retrieval: trie-constrained beam search on vLLM behind FastAPI (issue 4)."""
