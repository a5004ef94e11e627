"""Vector search over the gallery: FAISS index kinds, filtered search, batching, re-ranking, grouping."""
