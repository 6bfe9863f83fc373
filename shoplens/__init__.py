"""shoplens: reverse image search for online shops, on Qdrant."""

__version__ = "0.1.0"
