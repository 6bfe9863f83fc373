"""Localisers: find the products in a shopper's photo so that search can use each one's crop."""

from shoplens.localise.base import Box, Localiser, LocaliserError
from shoplens.localise.crop import CROP_MODES, DEFAULT_CROP, CropEncoder, best_crop, check_crop
from shoplens.localise.registry import DEFAULT_LOCALISER, create_localiser, list_localisers

__all__ = ["CROP_MODES", "DEFAULT_CROP", "DEFAULT_LOCALISER", "Box", "CropEncoder", "Localiser", "LocaliserError",
           "best_crop", "check_crop", "create_localiser", "list_localisers"]
