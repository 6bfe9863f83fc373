"""Search by words: product text, BM25 keywords, MiniLM sentence vectors, a text-to-image bridge, and fusion.

Submodules import their heavy dependencies (onnxruntime, tokenizers, qdrant_edge) only when used.
"""
