"""Tuning search to a shop: learned projections of backbone vectors from the catalog's labels (issue 10)."""

from shoplens.tune.base import FORMAT, Tuning, TuningError, check_tuning, load_tuning
from shoplens.tune.fit import DEFAULT_METHOD, TuneResult, tune_catalog
from shoplens.tune.methods import get_method, list_methods, register

__all__ = ["DEFAULT_METHOD", "FORMAT", "TuneResult", "Tuning", "TuningError", "check_tuning", "get_method",
           "list_methods", "load_tuning", "register", "tune_catalog"]
