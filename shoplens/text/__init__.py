"""Search by words: product text, BM25 keywords, MiniLM sentence vectors, a text-to-image bridge, query expansion.

Fusing their ranked lists is shoplens.query's (fusion, hybrid).

Submodules import their heavy dependencies (onnxruntime, tokenizers, qdrant_edge) only when used.
"""
