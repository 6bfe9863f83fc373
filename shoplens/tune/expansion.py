"""Choosing a tuning's query expansion (shoplens.query.expansion) on photos held out from its fit.

The setting (k neighbours, exponent alpha, or none) is never chosen on the photos it is reported on: within the
rows a tuning is fitted on, a seeded share of the groups (shoplens.tune.fit.holdout_groups: near-duplicate groups,
or for shoppers' photos of known products the photos by hash) is held out, a tuning is fitted on the rest, and
each setting of GRID ranks the held-out rows; the best (ties: the earlier, i.e. less expansion) is recorded in
the tuning fitted on all of the rows.
"""

from __future__ import annotations

import numpy as np

# (k, alpha); (0, 0) = no expansion. Small k: beyond the first few neighbours a query drifts to other products.
GRID = ((0, 0.0), (3, 1.0), (3, 3.0), (5, 1.0), (5, 3.0), (10, 3.0))
INNER_HOLDOUT = 0.2


def choose_expansion(data, fit_rows: np.ndarray, fields: list[str], encoder_meta: dict, method: str, seed: int = 0,
                     options: dict | None = None, grid=GRID) -> dict:
    """The best expansion setting ({} for none) for a tuning fitted on `fit_rows` (indices into data), chosen on
    an inner held-out share of their groups with a tuning fitted on the rest. `{}` when too few rows to split."""
    from shoplens.tune.fit import choose_metric, fit_tuning, holdout_groups, score, split_groups

    fit_rows = np.asarray(fit_rows, dtype=np.int64)
    groups = holdout_groups(data)
    sub = groups[fit_rows]
    if len(np.unique(sub[sub >= 0])) < 5:
        return {}
    inner = np.zeros(len(data.products), dtype=bool)
    inner[fit_rows] = split_groups(sub, INNER_HOLDOUT, seed + 1000)
    train = np.setdiff1d(fit_rows, np.flatnonzero(inner))
    queries = np.flatnonzero(inner & data.labelled)
    if not len(queries) or not len(train):
        return {}
    tuning = fit_tuning(data.vectors[train], [data.labels[i] for i in train], fields, encoder_meta, method, seed,
                        options)
    metric = choose_metric(data)
    best, best_value = {}, None
    for k, alpha in grid:
        tuning.expansion = {"k": k, "alpha": alpha} if k else {}
        value = score(data, queries, fields, encoder_meta, tuning).summary.get(metric)
        if value is not None and (best_value is None or value > best_value + 1e-9):
            best, best_value = dict(tuning.expansion), value
    return best
