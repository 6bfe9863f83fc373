"""Tuning search to a shop: learned projections of backbone vectors from the catalog's labels (issue 10).

`Tuning`, `load_tuning`, `check_tuning` and `TuningError` need numpy only, and importing them pulls in
nothing else of shoplens, so the store, search and the app can use them without an import circle;
`tune_catalog`, `TuneResult` and `DEFAULT_METHOD` (fitting, which uses shoplens.quality.evaluate) load on first use.
"""

from shoplens.vectors.tuning import FORMAT, Tuning, TuningError, check_tuning, load_tuning
from shoplens.tune.methods import get_method, list_methods, register

__all__ = ["DEFAULT_METHOD", "FORMAT", "TuneResult", "Tuning", "TuningError", "check_tuning", "fit_for_index", "get_method",
           "list_methods", "load_tuning", "register", "tune_catalog"]

_FIT = {"DEFAULT_METHOD", "TuneResult", "fit_for_index", "tune_catalog"}


def __getattr__(name):
    if name in _FIT:
        from shoplens.tune import fit

        return getattr(fit, name)
    raise AttributeError(f"module 'shoplens.tune' has no attribute {name!r}")
