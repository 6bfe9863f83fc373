"""Moved to shoplens.vectors.embedcache (below both index/ and tune/); this name is kept for old imports."""

from shoplens.vectors.embedcache import (Embedded, EmbeddingCache, cache_file, content_hash,  # noqa: F401
                                         embed_products)
