"""Index a shop's catalog of product photos: python indexer.py CATALOG [--index DIR | --qdrant-url URL] ..."""

from shoplens.cli import index_main

if __name__ == "__main__":
    raise SystemExit(index_main())
