"""Querying an index: by photo, by words, by both; fusion and re-ranking."""
