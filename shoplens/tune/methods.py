"""Tuning methods, registered by name: each fits (branches, arrays) from labelled backbone vectors.

A method gets `x` (n, dim) L2-normalised backbone vectors and `y` (n,) class numbers 0..c-1,
and returns the operations of a Tuning (see base.py): whatever it trains with, what it ships
is numpy arrays applied by numpy.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from shoplens.registry import Registry
from shoplens.vectors.tuning import TuningError

Fit = Callable[..., tuple[list[list[dict]], dict[str, np.ndarray]]]
# A shoplens.registry.Registry: plugins register from a $SHOPLENS_PLUGINS module or an entry point in the group
# `shoplens.tuning_methods`.
REGISTRY: Registry = Registry("tuning method", "shoplens.tuning_methods", error=TuningError, known="known")
METHODS: dict[str, Fit] = REGISTRY.factories  # the registry's own tables, by their old names
DESCRIPTIONS: dict[str, str] = REGISTRY.descriptions


def register(name: str, description: str):
    """Decorator: make a fit function available as `--method name`."""
    return REGISTRY.register(name, description)


def get_method(name: str) -> Fit:
    """The fit function called `name`; a clear error listing the known ones otherwise."""
    return REGISTRY.get(name)


def list_methods() -> dict[str, str]:
    """name -> one-line description."""
    return REGISTRY.describe()


def lda_directions(x: np.ndarray, y: np.ndarray, shrinkage: float = 0.1, power: float = 0.0) -> np.ndarray:
    """Fisher discriminant directions (d, c-1) with a shrunk within-class covariance, in plain numpy.

    Sw = sum_k p_k cov_k (biased), shrunk towards (trace/d) * I as scikit-learn's LDA does;
    Sb = sum_k p_k (m_k - m)(m_k - m)^T. The directions solve Sb w = lambda Sw w: whiten with
    Sw^-1/2 (one symmetric eigendecomposition), then the SVD of the c x d whitened class means.
    This is what LinearDiscriminantAnalysis(solver="eigen") computes, minus its generalised
    eigensolver, which is ten times slower on 1280-d and badly conditioned on small classes.
    """
    x = x.astype(np.float64)
    n, d = x.shape
    classes, y = np.unique(y, return_inverse=True)
    counts = np.bincount(y).astype(np.float64)
    priors = counts / n
    means = np.zeros((len(classes), d))
    np.add.at(means, y, x)
    means /= counts[:, None]
    centred = x - means[y]
    # sum_k p_k * (1/n_k) * sum_{i in k} c_i c_i^T: each row weighted by p_k / n_k = 1 / n.
    grand = priors @ means
    n_out = min(len(classes) - 1, d)
    if n < d:
        # Fewer vectors than dimensions (an ensemble's 3840-d on a few thousand photos): Sw has rank < n, so its
        # inverse square root is known from the thin SVD of the centred rows (n^2 d instead of d^3, 10x faster
        # here): on their span 1/sqrt((1-s) S^2/n + s t), on the rest 1/sqrt(s t). The directions are the same.
        _u, sing, basis = np.linalg.svd(centred / np.sqrt(n), full_matrices=False)
        floor = shrinkage * float((sing ** 2).sum()) / d
        scale = 1 / np.sqrt(np.maximum((1 - shrinkage) * sing ** 2 + floor, 1e-12)) - 1 / np.sqrt(max(floor, 1e-12))

        def inv_sqrt_right(a):  # a @ Sw^-1/2 (Sw^-1/2 is symmetric)
            return (a @ basis.T) * scale @ basis + a / np.sqrt(max(floor, 1e-12))

        between = inv_sqrt_right(np.sqrt(priors)[:, None] * (means - grand))
        _u, sv, vt = np.linalg.svd(between, full_matrices=False)
        return inv_sqrt_right(vt[:n_out]).T * (sv[:n_out] / sv[0]) ** power
    sw = centred.T @ centred / n
    sw = (1 - shrinkage) * sw + shrinkage * (np.trace(sw) / d) * np.eye(d)
    evals, evecs = np.linalg.eigh(sw)
    whiten = evecs / np.sqrt(np.maximum(evals, 1e-12))
    between = np.sqrt(priors)[:, None] * (means - grand) @ whiten
    _u, sv, vt = np.linalg.svd(between, full_matrices=False)
    # power > 0 stretches the most discriminative directions (their between-class spread ** power).
    return whiten @ vt[:n_out].T * (sv[:n_out] / sv[0]) ** power


@register("lda", "linear discriminant projection (shrinkage 0.1; the floor of issue 10), c-1 dimensions")
def fit_lda(x: np.ndarray, y: np.ndarray, *, shrinkage: float = 0.1, power: float = 0.0, seed: int = 0, **_):
    """Fisher's discriminant directions with a shrunk within-class covariance."""
    if len(np.unique(y)) < 2:
        raise TuningError("a tuning needs at least two label values")
    w = lda_directions(x, y, shrinkage, power)
    # Centre on the fitted vectors' mean (cosine ranking needs a centred space), folded into a bias
    # so apply() is one matrix product.
    return [[{"op": "affine", "weight": "w", "bias": "b"}]], {"w": w, "b": -x.mean(axis=0) @ w}


@register("lda-sqrt", "LDA (shrinkage 0.1) on power-normalised vectors (signed square root, then L2)")
def fit_lda_sqrt(x: np.ndarray, y: np.ndarray, *, exponent: float = 0.5, seed: int = 0, **options):
    """Signed square root of each feature before the LDA: pooled CNN features are bursty (a few large
    activations dominate the cosine); the root evens them out, as in Fisher-vector / VLAD retrieval."""
    z = np.sign(x) * np.abs(x) ** exponent
    z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    branches, arrays = fit_lda(z, y, seed=seed, **options)
    return [[{"op": "signed_power", "value": exponent}, {"op": "l2"}, *branches[0]]], arrays


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


def with_untuned(branches: list[list[dict]], arrays: dict, x: np.ndarray, *, weight: float = 0.7,
                 pca_dim: int = 256):
    """Add the untuned vector (centred, PCA-reduced to `pca_dim`) as a second branch.

    Each branch is L2-normalised and scaled so that the final cosine is
    weight * cos(tuned) + (1 - weight) * cos(untuned): the tuned part groups by label, the untuned
    part keeps look-alikes (same product, same print) first within the label.
    """
    last = [op for op in branches[0] if op["op"] == "affine"][-1]
    tuned_dim = arrays[last["weight"]].shape[1]
    pca_dim = int(min(pca_dim, x.shape[1] - tuned_dim, x.shape[0] - 1))
    mean = x.mean(axis=0).astype(np.float64)
    _u, _s, vt = np.linalg.svd(x.astype(np.float64) - mean, full_matrices=False)
    comps = vt[:pca_dim].T
    arrays = {**arrays, "pca_w": comps, "pca_b": -mean @ comps}
    tuned = [*branches[0], {"op": "l2"}, {"op": "scale", "value": float(np.sqrt(weight))}]
    untuned = [{"op": "affine", "weight": "pca_w", "bias": "pca_b"}, {"op": "l2"},
               {"op": "scale", "value": float(np.sqrt(1 - weight))}]
    return [tuned, untuned], arrays


@register("lda+untuned", "LDA (shrinkage 0.1) beside the untuned vector (PCA 256-d), cosine weighted 0.7 / 0.3")
def fit_lda_untuned(x: np.ndarray, y: np.ndarray, *, seed: int = 0, weight: float = 0.7, pca_dim: int = 256,
                    **options):
    branches, arrays = fit_lda(x, y, seed=seed, **options)
    return with_untuned(branches, arrays, x, weight=weight, pca_dim=pca_dim)


@register("proxy-mlp+untuned", "the proxy-mlp head beside the untuned vector (PCA 256-d), cosine weighted 0.7 / 0.3")
def fit_proxy_mlp_untuned(x: np.ndarray, y: np.ndarray, *, seed: int = 0, weight: float = 0.7, pca_dim: int = 256,
                          **options):
    branches, arrays = fit_proxy_mlp(x, y, seed=seed, **options)
    return with_untuned(branches, arrays, x, weight=weight, pca_dim=pca_dim)
