"""Tuning methods, registered by name: each fits (branches, arrays) from labelled backbone vectors.

A method gets `x` (n, dim) L2-normalised backbone vectors and `y` (n,) class numbers 0..c-1,
and returns the operations of a Tuning (see base.py): whatever it trains with, what it ships
is numpy arrays applied by numpy.
"""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np

from shoplens.tune.base import TuningError

Fit = Callable[..., tuple[list[list[dict]], dict[str, np.ndarray]]]
METHODS: dict[str, Fit] = {}
DESCRIPTIONS: dict[str, str] = {}


def register(name: str, description: str):
    """Decorator: make a fit function available as `--method name`."""
    def wrap(fn: Fit) -> Fit:
        METHODS[name] = fn
        DESCRIPTIONS[name] = description
        return fn
    return wrap


def get_method(name: str) -> Fit:
    """The fit function called `name`; a clear error listing the known ones otherwise."""
    if name not in METHODS:
        raise TuningError(f"unknown tuning method {name!r}; known: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def list_methods() -> dict[str, str]:
    """name -> one-line description."""
    return dict(sorted(DESCRIPTIONS.items()))


@register("lda", "linear discriminant projection (scikit-learn LDA, shrinkage 0.1), c-1 dimensions")
def fit_lda(x: np.ndarray, y: np.ndarray, *, shrinkage: float = 0.1, seed: int = 0, **_):
    """Fisher's discriminant directions with a shrunk within-class covariance."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    n_classes = int(y.max()) + 1
    if n_classes < 2:
        raise TuningError("a tuning needs at least two label values")
    lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage=shrinkage)
    with warnings.catch_warnings():  # classes with one sample are fine: the shrunk pooled covariance covers them
        warnings.simplefilter("ignore", UserWarning)
        lda.fit(x.astype(np.float64), y)
    n_out = min(n_classes - 1, x.shape[1])
    w = lda.scalings_[:, :n_out]
    # Centre on the fitted vectors' mean (cosine ranking needs a centred space), folded into a bias
    # so apply() is one matrix product.
    return [[{"op": "affine", "weight": "w", "bias": "b"}]], {"w": w, "b": -x.mean(axis=0) @ w}
