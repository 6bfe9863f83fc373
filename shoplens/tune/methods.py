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


@register("lda-posterior", "LDA class posteriors (softmax of the discriminant scores / temperature) as the vector")
def fit_lda_posterior(x: np.ndarray, y: np.ndarray, *, shrinkage: float = 0.1, temperature: float = 1.0,
                      seed: int = 0, **_):
    """A shrunk LDA classifier; the tuned vector is its class-probability vector (softened by `temperature`).

    Two products then look alike when the classifier thinks they are the same kind of thing, which
    is what precision by label measures. A label value never fitted on cannot be told apart, so this
    suits shops whose catalog labels cover their products.
    """
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    if int(y.max()) + 1 < 2:
        raise TuningError("a tuning needs at least two label values")
    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=shrinkage)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        lda.fit(x.astype(np.float64), y)
    w, b = lda.coef_.T / temperature, lda.intercept_ / temperature
    if w.shape[1] == 1:  # two classes: sklearn gives one score; make it two so softmax sees both
        w, b = np.concatenate([-w / 2, w / 2], axis=1), np.array([-b[0] / 2, b[0] / 2])
    return [[{"op": "affine", "weight": "w", "bias": "b"}, {"op": "softmax"}]], {"w": w, "b": b}


def _train_head(x: np.ndarray, y: np.ndarray, *, dim: int = 256, hidden: int = 0, epochs: int = 40,
                lr: float = 2e-3, weight_decay: float = 1e-4, scale: float = 24.0, margin: float = 0.0,
                dropout: float = 0.2, noise: float = 0.0, batch_size: int = 256, smoothing: float = 0.1,
                seed: int = 0, loss: str = "norm-softmax"):
    """Train a linear or one-hidden-layer head with a normalised-softmax (proxy) loss; returns numpy weights.

    Normalised softmax: each class has a learned unit proxy; the loss is cross-entropy over
    scale * cos(head(x), proxy) (minus `margin` on the true class, CosFace style). Augmented views
    are made in vector space (feature dropout, Gaussian noise): no photo is decoded again.
    """
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # two cores is what the product promises to run on; also keeps results repeatable
    try:
        gen = torch.Generator().manual_seed(seed)
        n_classes = int(y.max()) + 1
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        yt = torch.from_numpy(y.astype(np.int64))
        mean = xt.mean(0)
        layers = []
        d_in = x.shape[1]
        if hidden:
            layers += [torch.nn.Linear(d_in, hidden), torch.nn.ReLU()]
            d_in = hidden
        layers.append(torch.nn.Linear(d_in, dim))
        head = torch.nn.Sequential(*layers)
        proxies = torch.nn.Parameter(torch.randn(n_classes, dim, generator=gen) / dim ** 0.5)
        opt = torch.optim.AdamW([*head.parameters(), proxies], lr=lr, weight_decay=weight_decay)
        steps = epochs * max(1, -(-len(xt) // batch_size))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
        for _epoch in range(epochs):
            order = torch.randperm(len(xt), generator=gen)
            for start in range(0, len(xt), batch_size):
                idx = order[start:start + batch_size]
                xb = xt[idx] - mean
                if dropout:
                    keep = (torch.rand(xb.shape, generator=gen) >= dropout).float() / (1 - dropout)
                    xb = xb * keep
                if noise:
                    xb = xb + noise * torch.randn(xb.shape, generator=gen)
                z = F.normalize(head(xb), dim=1)
                cos = z @ F.normalize(proxies, dim=1).T
                if margin:
                    cos = cos - margin * F.one_hot(yt[idx], n_classes)
                loss_value = F.cross_entropy(scale * cos, yt[idx], label_smoothing=smoothing)
                opt.zero_grad()
                loss_value.backward()
                opt.step()
                sched.step()
        arrays, branch = {}, []
        linears = [m for m in head if isinstance(m, torch.nn.Linear)]
        for i, lin in enumerate(linears):
            w = lin.weight.detach().numpy().T.astype(np.float64)
            b = lin.bias.detach().numpy().astype(np.float64)
            if i == 0:  # fold the centring into the first bias
                b = b - mean.numpy().astype(np.float64) @ w
            arrays[f"w{i}"], arrays[f"b{i}"] = w, b
            branch.append({"op": "affine", "weight": f"w{i}", "bias": f"b{i}"})
            if i < len(linears) - 1:
                branch.append({"op": "relu"})
        return branch, arrays
    finally:
        torch.set_num_threads(threads)


@register("proxy-linear", "linear head trained with a normalised-softmax (proxy) loss in torch, 256-d")
def fit_proxy_linear(x: np.ndarray, y: np.ndarray, *, seed: int = 0, **options):
    branch, arrays = _train_head(x, y, seed=seed, **options)
    return [branch], arrays


@register("proxy-mlp", "one-hidden-layer head (1024 units) trained with a normalised-softmax loss in torch, 256-d")
def fit_proxy_mlp(x: np.ndarray, y: np.ndarray, *, seed: int = 0, hidden: int = 1024, **options):
    branch, arrays = _train_head(x, y, seed=seed, hidden=hidden, **options)
    return [branch], arrays
