"""Measuring result quality: protocols, metrics, shoppers' phrasings."""
