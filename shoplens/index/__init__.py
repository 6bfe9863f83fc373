"""Indexes: syncing a catalog into a store, its text side, tuning, integrity, live syncs."""
