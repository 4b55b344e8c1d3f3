"""Encoders, the FAISS and BM25 indexes, and search over a collection."""
