"""Fast predictors for the scikit-learn families and XGBoost, built once from a fitted model.

scikit-learn spends most of a single-row predict outside the model: input validation on
every call (and again in each step of a pipeline), the ColumnTransformer and one-hot
encoder building a sparse matrix for one row, HistGradientBoosting's OrdinalEncoder
preprocessor and an OpenMP parallel region per tree (which on a busy machine, or with several
server workers, waits for threads), RandomForest's joblib dispatch and per-tree validation.
XGBoost's `inplace_predict` spends ~0.2 ms setting up a call for one row. The model itself is
a few microseconds of arithmetic.

So at load time each estimator is turned into plain numpy arrays and evaluated with a handful
of vectorised numpy calls per request:

- linear (LogisticRegression / Ridge after one-hot + impute + scale): one weight table per
  categorical column indexed by the encoder's code (a lookup per category instead of a
  one-hot row), the numeric block imputed and scaled exactly as the pipeline does (in
  float32, like scikit-learn), one dot product, the same link (expit / softmax).
- tree ensembles (HistGradientBoosting, RandomForest): every tree's nodes in flat arrays
  (feature, threshold, [right, left] children; leaves point at themselves) and all trees
  stepped down together, one level per numpy step. Missing values and HistGradientBoosting's
  categorical splits are resolved before the walk: each numeric column appears twice (NaN
  kept, which goes right, and NaN as -inf, which goes left; a node reads the copy that
  sends missing values its way), and every categorical split becomes a 0/1 column read from
  a per-split table over category codes (left set, known-but-right, unknown/missing). Leaf
  values are summed in tree order (a cumulative sum), so the scores equal scikit-learn's.
- XGBoost: the booster's JSON trees on the same walk, in XGBoost's float32 arithmetic (see
  `_XGBoost`), so the scores equal the booster's bit for bit.

Every predictor is checked against its estimator on probe rows when it is built; any
estimator shape not recognised here, or a mismatch, leaves the estimator to do the work
(`build` returns None). Tree predictors only take batches up to `max_rows`: beyond that the
estimator's compiled loop over rows is faster than stepping (rows x trees) arrays.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ctloop.tasks import Task

log = logging.getLogger(__name__)

TREE_MAX_ROWS = 128  # up to here the numpy walk beats the estimator (flights models, 1 thread)
_PROBE_ROWS = 48
_RTOL = 1e-9  # linear scores differ from scikit-learn's sparse dot product by ~1e-16


class Predictor:
    """Encoded float matrix in, the task's scores out (as `TabularModel.scores_encoded`)."""

    max_rows: int | None = None  # larger batches go to the estimator

    def accepts(self, X: np.ndarray) -> bool:
        return self.max_rows is None or X.shape[0] <= self.max_rows

    def __call__(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def build(estimator: Any, family: str, task: Task) -> Predictor | None:
    """The fast predictor for this estimator, or None when the estimator must do the work."""
    if family == "lightgbm":
        return None  # LightGBM's own single-row predict is ~0.1 ms
    try:
        predictor = _XGBoost(estimator, task) if family == "xgboost" else _build(estimator, task)
    except Exception as exc:  # an unexpected estimator layout is not an error: fall back
        log.warning("no fast predictor for %s (%s: %s); using the estimator", family,
                    type(exc).__name__, exc)
        return None
    if predictor is None:
        log.debug("no fast predictor for %s (%s)", family, type(estimator).__name__)
        return None
    try:
        problem = _verify(predictor, estimator, task)
    except Exception as exc:  # e.g. an estimator that refuses NaN: the probes have some
        problem = f"{type(exc).__name__}: {exc}"
    if problem:
        log.warning("fast predictor for %s disagrees with the estimator (%s); using the "
                    "estimator", family, problem)
        return None
    return predictor


def estimator_scores(estimator: Any, task: Task, X: np.ndarray) -> np.ndarray:
    """The plain estimator's scores, the reference every fast path must equal."""
    if hasattr(estimator, "inplace_predict"):  # an xgboost.Booster
        return np.asarray(estimator.inplace_predict(X), dtype=np.float64)
    if task.kind == "regression":
        return np.asarray(estimator.predict(X), dtype=np.float64)
    probabilities = np.asarray(estimator.predict_proba(X), dtype=np.float64)
    return probabilities[:, 1] if task.kind == "binary" else probabilities


def _build(estimator: Any, task: Task) -> Predictor | None:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import (
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import Pipeline

    steps = [step for _, step in estimator.steps] if isinstance(estimator, Pipeline) \
        else [estimator]
    last = steps[-1]
    if isinstance(last, HistGradientBoostingClassifier | HistGradientBoostingRegressor):
        return _HGB(last, task) if len(steps) == 1 else None
    if isinstance(last, RandomForestClassifier | RandomForestRegressor):
        if len(steps) == 1:
            return _Forest(last, task, None)
        if len(steps) == 2 and isinstance(steps[0], SimpleImputer):
            return _Forest(last, task, _Imputation.of(steps[0]))
        return None
    if isinstance(last, LogisticRegression | Ridge) and len(steps) == 2 \
            and isinstance(steps[0], ColumnTransformer):
        return _Linear.of(steps[0], last, task)
    return None


def _verify(predictor: Predictor, estimator: Any, task: Task) -> str | None:
    """Compare with the estimator on probe rows: codes, odd numbers, NaN everywhere."""
    # a booster has no n_features_in_; a tree predictor knows its width
    n_features = int(getattr(estimator, "n_features_in_", 0) or getattr(predictor, "n_features", 0))
    if n_features <= 0:
        return "unknown number of features"
    rng = np.random.default_rng(0)
    values = np.array([np.nan, 0, 1, 2, 3, 5, 7, -1, 0.5, 10, 40, 100, 1e3, 1e5, -1e3],
                      dtype=np.float32)
    X = rng.choice(values, size=(_PROBE_ROWS, n_features)).astype(np.float32)
    X[0] = np.nan
    X[1] = 0
    X[2:8] += rng.normal(0, 50, size=(6, n_features)).astype(np.float32)
    expected = estimator_scores(estimator, task, X)
    got = predictor(X)
    if got.shape != expected.shape:
        return f"shape {got.shape} != {expected.shape}"
    if not np.allclose(got, expected, rtol=_RTOL, atol=1e-12, equal_nan=True):
        worst = float(np.nanmax(np.abs(got - expected)))
        return f"max abs difference {worst:.3g}"
    return None


# --- linear -------------------------------------------------------------------------------

class _Imputation:
    """SimpleImputer.transform with a fill value per column, in the input's float dtype."""

    def __init__(self, fill: np.ndarray) -> None:
        self.fill = {np.dtype(np.float32): fill.astype(np.float32),
                     np.dtype(np.float64): fill.astype(np.float64)}

    @classmethod
    def of(cls, imputer: Any) -> _Imputation:
        stats = np.asarray(imputer.statistics_, dtype=np.float64)
        if imputer.add_indicator or not np.isfinite(stats).all() or \
                not np.isnan(imputer.missing_values):
            raise ValueError("imputer drops columns or adds indicators")
        return cls(stats)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        missing = np.isnan(X)
        return np.where(missing, self.fill[X.dtype], X) if missing.any() else X


class _Linear(Predictor):
    """Weight lookups per categorical code, a dot product on the scaled numeric block."""

    def __init__(self, task: Task, link: str, intercept: np.ndarray, cat_cols: np.ndarray,
                 sizes: np.ndarray, offsets: np.ndarray, table: np.ndarray,
                 num_cols: np.ndarray, imputation: _Imputation | None,
                 mean: np.ndarray | None, scale: np.ndarray | None,
                 num_coef: np.ndarray, model_dtype: np.dtype) -> None:  # fmt: skip
        self.task, self.link, self.intercept = task, link, intercept
        self.cat_cols, self.sizes, self.offsets, self.table = cat_cols, sizes, offsets, table
        self.num_cols, self.imputation, self.num_coef = num_cols, imputation, num_coef
        # StandardScaler casts its statistics to the input's dtype before using them
        self.mean = None if mean is None else {np.dtype(t): mean.astype(t)
                                               for t in (np.float32, np.float64)}
        self.scale = None if scale is None else {np.dtype(t): scale.astype(t)
                                                 for t in (np.float32, np.float64)}
        # Without a one-hot block the pipeline hands the model a dense float32 matrix, and a
        # model fitted on one keeps float32 weights: scikit-learn's decision is then float32
        # arithmetic, which the fast path must repeat to give the same scores.
        self.float32_model = not cat_cols.size and model_dtype == np.float32
        self.num_coef32 = num_coef.astype(np.float32)
        self.intercept32 = intercept.astype(np.float32)

    @classmethod
    def of(cls, pre: Any, model: Any, task: Task) -> _Linear | None:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        coef = np.atleast_2d(np.asarray(model.coef_, dtype=np.float64))  # (m, p)
        intercept = np.atleast_1d(np.asarray(model.intercept_, dtype=np.float64))
        if isinstance(model, LogisticRegression):
            link = "expit" if coef.shape[0] == 1 else "softmax"
        else:
            link = "identity"
        if (link == "identity") != (task.kind == "regression"):
            return None
        cat_cols, sizes, tables, num_blocks = [], [], [], []
        start = 0
        for _, transformer, columns in pre.transformers_:
            columns = np.asarray(columns)
            if columns.dtype == bool:
                columns = np.flatnonzero(columns)
            if len(columns) == 0:  # scikit-learn leaves a transformer of no columns unfitted
                continue
            if isinstance(transformer, str):
                if transformer == "drop":
                    continue
                return None  # passthrough remainder: not used by ctloop
            if isinstance(transformer, OneHotEncoder):
                if transformer.drop_idx_ is not None or transformer._infrequent_enabled \
                        or transformer.handle_unknown not in ("ignore", "infrequent_if_exist"):
                    return None
                for col, cats in zip(columns, transformer.categories_, strict=True):
                    cats = np.asarray(cats, dtype=np.float64)
                    width = len(cats)
                    weights = coef[:, start:start + width].T  # (width, m)
                    start += width
                    known = _check_codes(cats)
                    size = int(known.max()) + 1 if known.size else 0
                    table = np.zeros((size + 2, coef.shape[0]))  # codes, NaN, unknown (0)
                    for j, value in enumerate(cats):
                        table[size if np.isnan(value) else int(value)] = weights[j]
                    cat_cols.append(int(col))
                    sizes.append(size)
                    tables.append(table)
                continue
            steps = [s for _, s in transformer.steps] if isinstance(transformer, Pipeline) \
                else [transformer]
            imputation, mean, scale = None, None, None
            for step in steps:
                if type(step).__name__ == "SimpleImputer" and imputation is None \
                        and mean is None and scale is None:
                    imputation = _Imputation.of(step)
                elif isinstance(step, StandardScaler) and mean is None and scale is None:
                    mean = None if step.mean_ is None else np.asarray(step.mean_)
                    scale = None if step.scale_ is None else np.asarray(step.scale_)
                else:
                    return None
            num_blocks.append((columns.astype(np.intp), imputation, mean, scale,
                               coef[:, start:start + len(columns)]))
            start += len(columns)
        if start != coef.shape[1] or len(num_blocks) > 1:
            return None
        if num_blocks:
            num_cols, imputation, mean, scale, num_coef = num_blocks[0]
        else:
            num_cols, imputation, mean, scale = np.empty(0, np.intp), None, None, None
            num_coef = np.zeros((coef.shape[0], 0))
        sizes_arr = np.asarray(sizes, dtype=np.intp)
        lengths = sizes_arr + 2
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.intp)
        table = np.concatenate(tables) if tables else np.zeros((0, coef.shape[0]))
        return cls(task, link, intercept, np.asarray(cat_cols, dtype=np.intp), sizes_arr,
                   offsets, table, num_cols, imputation, mean, scale,
                   np.ascontiguousarray(num_coef.T), np.asarray(model.coef_).dtype)  # fmt: skip

    def __call__(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X)
        decision = np.zeros((X.shape[0], self.intercept.shape[0]))
        if self.cat_cols.size:
            codes = X[:, self.cat_cols].astype(np.float64)
            index = _code_index(codes, self.sizes, unknown=self.sizes + 1)
            decision += self.table[index + self.offsets].sum(axis=1)
        if self.num_cols.size:
            # the pipeline imputes and scales in the input's dtype (float32 from the encoder)
            dtype = np.float64 if X.dtype == np.float64 else np.float32
            Xn = X[:, self.num_cols].astype(dtype)
            if self.imputation is not None:
                Xn = self.imputation(Xn)
            if self.mean is not None:
                Xn -= self.mean[Xn.dtype]
            if self.scale is not None:
                Xn /= self.scale[Xn.dtype]
            if self.float32_model and Xn.dtype == np.float32:
                return self._link((Xn @ self.num_coef32 + self.intercept32).astype(np.float64)
                                  if self.link == "identity" else
                                  Xn @ self.num_coef32 + self.intercept32)
            decision += Xn.astype(np.float64) @ self.num_coef
        decision += self.intercept
        return self._link(decision)

    def _link(self, decision: np.ndarray) -> np.ndarray:
        if self.link == "expit":
            from scipy.special import expit

            return expit(decision[:, 0]).astype(np.float64)
        if self.link == "softmax":
            from sklearn.utils.extmath import softmax

            return softmax(decision, copy=False).astype(np.float64)
        return decision[:, 0].astype(np.float64)


def _code_index(codes: np.ndarray, sizes: np.ndarray, unknown: np.ndarray) -> np.ndarray:
    """Category codes -> table rows: the code itself, `sizes` for NaN, `unknown` otherwise
    (negative, fractional or past the table)."""
    with np.errstate(invalid="ignore"):
        valid = (codes >= 0) & (codes < sizes) & (codes == np.floor(codes))
    index = np.where(valid, codes, 0).astype(np.intp)
    index = np.where(valid, index, np.where(np.isnan(codes), sizes, unknown))
    return index


# --- trees --------------------------------------------------------------------------------

class _Tree:
    """One tree in local node ids; `missing_left` per node says where NaN goes."""

    def __init__(self, feature: np.ndarray, threshold: np.ndarray, left: np.ndarray,
                 right: np.ndarray, is_leaf: np.ndarray, missing_left: np.ndarray,
                 value: np.ndarray, depth: int) -> None:  # fmt: skip
        self.feature, self.threshold, self.left, self.right = feature, threshold, left, right
        self.is_leaf, self.missing_left, self.value, self.depth = (is_leaf, missing_left,
                                                                   value, depth)


class _Trees(Predictor):
    """All trees stepped down together; leaves point at themselves.

    The walk reads a prepared float64 matrix [X | X with NaN as -inf | extra columns]:
    x <= threshold sends NaN right in the first copy and left in the second, so a node whose
    missing values go left reads the second. `child` holds [right, left] per node: the next
    node is child[2 * node + (x <= threshold)].
    """

    max_rows = TREE_MAX_ROWS

    def _set_trees(self, trees: list[_Tree], n_features: int) -> None:
        feature, threshold, child, leaf, roots, values = [], [], [], [], [], []
        base = 0
        for tree in trees:
            own = np.arange(len(tree.feature), dtype=np.intp) + base
            lft = np.where(tree.is_leaf, own, tree.left + base)
            rgt = np.where(tree.is_leaf, own, tree.right + base)
            shifted = tree.feature + np.where(
                tree.missing_left & (tree.feature < n_features), n_features, 0)
            feature.append(np.where(tree.is_leaf, 0, shifted))
            threshold.append(np.where(tree.is_leaf, 0.0, tree.threshold))
            child.append(np.stack([rgt, lft], axis=1).ravel())
            leaf.append(tree.is_leaf)
            values.append(tree.value)
            roots.append(base)
            base += len(tree.feature)
        self.n_features = n_features
        self.feature = np.concatenate(feature).astype(np.intp)
        self.threshold = np.concatenate(threshold).astype(np.float64)
        self.child = np.concatenate(child).astype(np.intp)
        self.is_leaf = np.concatenate(leaf).astype(bool)
        self.value = np.concatenate(values).astype(np.float64)  # (nodes, outputs)
        self.roots = np.asarray(roots, dtype=np.intp)
        self.depth = max((tree.depth for tree in trees), default=0)
        self.n_trees = len(trees)

    def _prepare(self, Xd: np.ndarray, extra: list[np.ndarray] | None = None) -> np.ndarray:
        missing = np.isnan(Xd)
        low = np.where(missing, -np.inf, Xd) if missing.any() else Xd
        return np.hstack([Xd, low, *(extra or ())])

    def leaf_values(self, Z: np.ndarray) -> np.ndarray:
        """(n, trees, outputs): each tree's leaf value for each row of the prepared Z."""
        n, width = Z.shape
        flat = np.ascontiguousarray(Z).ravel()
        node = np.repeat(self.roots[None, :], n, axis=0)
        rows = (np.arange(n, dtype=np.intp) * width)[:, None] if n > 1 else None
        feature, threshold, child = self.feature, self.threshold, self.child
        for step in range(self.depth):
            at = feature[node]
            if rows is not None:
                at += rows
            goes_left = flat[at] <= threshold[node]
            node = child[node + node + goes_left]
            if step % 8 == 7 and self.is_leaf[node].all():
                break
        return self.value[node]


class _HGB(_Trees):
    """HistGradientBoosting: raw predictions = baseline + leaf values in iteration order.

    Categorical splits become 0/1 columns (0 = left) looked up per split from the
    category code, resolving what HGB's OrdinalEncoder and bitsets do per call: a code in
    the split's left set goes left, another known one right, unknown or missing ones the
    split's missing side.
    """

    def __init__(self, model: Any, task: Task) -> None:
        self.task, self.loss = task, model._loss
        self.baseline = np.asarray(model._baseline_prediction, dtype=np.float64).reshape(1, -1)
        self.k = int(model.n_trees_per_iteration_)
        n_features = int(model.n_features_in_)
        remapped, categories = _hgb_columns(model, n_features)
        self.table_size = 0
        for cats in categories.values():
            known = _check_codes(cats)
            if known.size:
                self.table_size = max(self.table_size, int(known.max()) + 1)
        known_bitsets, f_idx_map = (model._bin_mapper.make_known_categories_bitsets()
                                    if categories else (None, None))
        split_col, split_table, trees = [], [], []
        for iteration in model._predictors:
            if len(iteration) != self.k:
                raise ValueError("unexpected number of trees per iteration")
            for predictor in iteration:
                nodes = predictor.nodes
                local = nodes["feature_idx"].astype(np.intp)
                is_leaf = nodes["is_leaf"].astype(bool)
                missing_left = nodes["missing_go_to_left"].astype(bool)
                feature = remapped[local]
                threshold = nodes["num_threshold"].astype(np.float64)
                for node in np.flatnonzero(nodes["is_categorical"].astype(bool) & ~is_leaf):
                    j = int(local[node])
                    if j not in categories:
                        raise ValueError("categorical split on a numeric column")
                    split_table.append(self._sides(
                        categories[j], predictor.raw_left_cat_bitsets[nodes["bitset_idx"][node]],
                        known_bitsets[f_idx_map[j]], bool(missing_left[node])))
                    feature[node] = 2 * n_features + len(split_col)
                    threshold[node] = 0.5
                    split_col.append(remapped[j])
                value = np.where(is_leaf, nodes["value"], 0.0)[:, None]
                trees.append(_Tree(feature, threshold, nodes["left"].astype(np.intp),
                                   nodes["right"].astype(np.intp), is_leaf, missing_left,
                                   value, int(nodes["depth"].max())))  # fmt: skip
        self._set_trees(trees, n_features)
        self.split_col = np.asarray(split_col, dtype=np.intp)
        width = self.table_size + 1
        self.split_table = np.concatenate(split_table) if split_table else np.zeros(0)
        self.split_offsets = np.arange(len(split_col), dtype=np.intp) * width

    def _sides(self, cats: np.ndarray, left_bitset: np.ndarray, known_bitset: np.ndarray,
               missing_left: bool) -> np.ndarray:
        """Per code 0..table_size-1, then one slot for missing/unknown: 0.0 left, 1.0 right."""
        sides = np.full(self.table_size + 1, 0.0 if missing_left else 1.0)
        for ordinal, code in enumerate(cats):
            if np.isnan(code) or ordinal >= 256:
                continue
            word, bit = divmod(ordinal, 32)
            if (int(left_bitset[word]) >> bit) & 1:
                sides[int(code)] = 0.0
            elif (int(known_bitset[word]) >> bit) & 1:
                sides[int(code)] = 1.0
        return sides

    def raw(self, X: np.ndarray) -> np.ndarray:
        Xd = np.asarray(X, dtype=np.float64)
        extra = None
        if self.split_col.size:
            codes = Xd[:, self.split_col]
            index = _code_index(codes, self.table_size, unknown=self.table_size)
            extra = [self.split_table[index + self.split_offsets]]
        values = self.leaf_values(self._prepare(Xd, extra))[:, :, 0]  # iteration-major
        n = values.shape[0]
        stacked = np.concatenate([np.broadcast_to(self.baseline, (n, self.k))[:, None, :],
                                  values.reshape(n, -1, self.k)], axis=1)
        return np.cumsum(stacked, axis=1)[:, -1, :]  # baseline, then trees in order

    def __call__(self, X: np.ndarray) -> np.ndarray:
        raw = self.raw(X)
        if self.task.kind == "regression":
            return np.asarray(self.loss.link.inverse(raw.ravel()), dtype=np.float64)
        probabilities = np.asarray(self.loss.predict_proba(raw), dtype=np.float64)
        return probabilities[:, 1] if self.task.kind == "binary" else probabilities


def _hgb_columns(model: Any, n_features: int) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Input column of each column the trees see, and the category values of the
    categorical ones (HGB's preprocessor puts them first)."""
    pre = model._preprocessor
    if pre is None:
        return np.arange(n_features, dtype=np.intp), {}
    remapped = np.full(n_features, -1, dtype=np.intp)
    categories: dict[int, np.ndarray] = {}
    for name, transformer, columns in pre.transformers_:
        columns = np.asarray(columns)
        if columns.dtype == bool:
            columns = np.flatnonzero(columns)
        if name == "remainder" or len(columns) == 0:
            continue
        out = pre.output_indices_[name]
        remapped[out.start:out.stop] = columns
        if name == "encoder":
            if transformer.handle_unknown != "use_encoded_value" or \
                    not np.isnan(transformer.unknown_value):
                raise ValueError("unexpected ordinal encoder")
            for j, cats in zip(range(out.start, out.stop), transformer.categories_,
                               strict=True):
                categories[j] = np.asarray(cats, dtype=np.float64)
    if (remapped < 0).any():
        raise ValueError("HGB preprocessor leaves columns out")
    return remapped, categories


def _check_codes(cats: np.ndarray) -> np.ndarray:
    known = cats[~np.isnan(cats)]
    if known.size and (known.min() < 0 or known.max() > 1e6 or np.any(known != np.floor(known))):
        raise ValueError("category values are not small non-negative integer codes")
    return known


class _Forest(_Trees):
    """RandomForest (after the pipeline's imputer): the mean of the trees' leaf values,
    summed in tree order like the forest does."""

    def __init__(self, model: Any, task: Task, imputation: _Imputation | None) -> None:
        self.task, self.imputation = task, imputation
        if getattr(model, "n_outputs_", 1) != 1:
            raise ValueError("multi-output forest")
        outputs = int(model.n_classes_) if task.kind != "regression" else 1
        trees = []
        for estimator in model.estimators_:
            t = estimator.tree_
            is_leaf = t.children_left == -1
            trees.append(_Tree(
                np.where(is_leaf, 0, t.feature).astype(np.intp), t.threshold,
                np.where(is_leaf, 0, t.children_left).astype(np.intp),
                np.where(is_leaf, 0, t.children_right).astype(np.intp), is_leaf,
                np.asarray(t.missing_go_to_left, dtype=bool),
                np.asarray(t.value[:, 0, :outputs], dtype=np.float64), int(t.max_depth)))
        self._set_trees(trees, int(model.n_features_in_))

    def __call__(self, X: np.ndarray) -> np.ndarray:
        X32 = np.asarray(X, dtype=np.float32)  # the forest compares float32 inputs
        if self.imputation is not None:
            X32 = self.imputation(X32)
        values = self.leaf_values(self._prepare(X32.astype(np.float64)))
        mean = np.cumsum(values, axis=1)[:, -1, :] / self.n_trees
        if self.task.kind == "regression":
            return mean[:, 0]
        return mean[:, 1] if self.task.kind == "binary" else mean


# --- xgboost ------------------------------------------------------------------------------

class _XGBoost(_Trees):
    """An XGBoost booster's trees, evaluated as XGBoost does in float32.

    `inplace_predict` spends ~0.2 ms of Python and C++ set-up on a single row; the trees
    themselves take microseconds. XGBoost casts inputs to float32, sends x < split left (so
    the threshold here is the next float32 below the split, for x <= threshold), NaN to the
    node's default side, adds the leaves to the base margin tree by tree in float32, and
    applies the objective's link in float32 (logistic: 1 / (1 + exp(-x)); softprob: softmax
    with a double sum). ctloop fits XGBoost on category codes as numbers, so every split is
    numeric; a booster with categorical splits or another objective is left to XGBoost.
    """

    OBJECTIVES = frozenset({"binary:logistic", "multi:softprob", "reg:squarederror"})

    def __init__(self, booster: Any, task: Task) -> None:
        import json

        model = json.loads(booster.save_raw("json"))
        learner = model["learner"]
        self.objective = learner["objective"]["name"]
        if self.objective not in self.OBJECTIVES:
            raise ValueError(f"objective {self.objective} has no fast path")
        params = learner["learner_model_param"]
        self.task = task
        self.k = max(int(params.get("num_class", "0")), 1)
        gbtree = learner["gradient_booster"]
        if gbtree.get("name", "gbtree") != "gbtree":
            raise ValueError(f"booster {gbtree.get('name')} has no fast path")
        forest = gbtree["model"]
        groups = forest["tree_info"]
        trees = [self._tree(tree, group) for tree, group in zip(forest["trees"], groups,
                                                                 strict=True)]
        self._set_trees(trees, int(params["num_feature"]))
        self.base_margin = self._base_margin(params["base_score"])
        self.max_rows = max(1, TREE_MAX_ROWS // self.k)  # expf is called per value

    def _tree(self, tree: dict[str, Any], group: int) -> _Tree:
        if any(tree["split_type"]) or tree["categories_nodes"]:
            raise ValueError("categorical splits have no fast path")
        left = np.asarray(tree["left_children"], dtype=np.intp)
        right = np.asarray(tree["right_children"], dtype=np.intp)
        is_leaf = left == -1
        split = np.asarray(tree["split_conditions"], dtype=np.float32)
        threshold = np.nextafter(split, np.float32(-np.inf))  # x < split <=> x <= threshold
        value = np.zeros((len(left), self.k), dtype=np.float64)
        value[is_leaf, group] = split[is_leaf]  # a leaf's split_condition is its value
        return _Tree(np.asarray(tree["split_indices"], dtype=np.intp), threshold,
                     np.where(is_leaf, 0, left), np.where(is_leaf, 0, right), is_leaf,
                     np.asarray(tree["default_left"], dtype=bool), value, _depth(left, right))

    def _base_margin(self, text: str) -> np.ndarray:
        """XGBoost stores the base score on the output scale and turns it into a margin."""
        base = np.asarray(_json_floats(text), dtype=np.float32)
        if base.size not in (1, self.k):
            raise ValueError("unexpected base_score")
        base = np.broadcast_to(base, (self.k,))
        if self.objective == "binary:logistic":  # -log(1 / p - 1), in float32
            ratio = np.float32(1) / base - np.float32(1)
            base = -_f32(np.log(ratio.astype(np.float64)))
        return base.reshape(1, self.k)

    def margin(self, X: np.ndarray) -> np.ndarray:
        X32 = np.asarray(X, dtype=np.float32)
        values = self.leaf_values(self._prepare(X32.astype(np.float64))).astype(np.float32)
        n = values.shape[0]
        stacked = np.concatenate([np.broadcast_to(self.base_margin, (n, self.k))[:, None, :],
                                  values], axis=1)
        return np.cumsum(stacked, axis=1, dtype=np.float32)[:, -1, :]

    def __call__(self, X: np.ndarray) -> np.ndarray:
        margin = self.margin(X)
        if self.objective == "reg:squarederror":
            return margin[:, 0].astype(np.float64)
        if self.objective == "binary:logistic":
            x = np.minimum(-margin[:, 0], np.float32(88.7))
            denom = _expf(x) + np.float32(1) + np.float32(1e-16)
            return (np.float32(1) / denom).astype(np.float64)
        top = margin.max(axis=1, keepdims=True)
        e = _expf(margin - top)
        total = np.zeros(len(e), dtype=np.float64)
        for j in range(self.k):  # XGBoost sums the exponentials one by one in double
            total += e[:, j]
        return (e / total.astype(np.float32)[:, None]).astype(np.float64)


def _f32(values: np.ndarray) -> np.ndarray:
    """Round float64 results to float32, as XGBoost's float math (logf) returns them."""
    return np.asarray(values, dtype=np.float32)


def _libm_expf() -> Any:
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("m")
    if name is None:
        return None
    expf = ctypes.CDLL(name).expf
    expf.restype, expf.argtypes = ctypes.c_float, [ctypes.c_float]
    return np.frompyfunc(expf, 1, 1)


_EXPF = _libm_expf()


def _expf(x: np.ndarray) -> np.ndarray:
    """The C library's expf, which XGBoost calls: numpy's float32 exp, or float64 exp
    rounded, differ from it in the last bit on about 1 value in 4,000. Element by element,
    which costs ~1 us a value: the tree path only takes small batches."""
    x = np.asarray(x, dtype=np.float32)
    if _EXPF is None:
        return _f32(np.exp(x.astype(np.float64)))
    return np.asarray(_EXPF(x), dtype=np.float32)


def _json_floats(text: str) -> list[float]:
    """XGBoost's base_score: '5E-1' or '[5E-1,2E-1]'."""
    return [float(v) for v in text.strip("[]").split(",") if v.strip()]


def _depth(left: np.ndarray, right: np.ndarray) -> int:
    deepest, stack = 0, [(0, 0)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if left[node] != -1:
            stack += [(int(left[node]), depth + 1), (int(right[node]), depth + 1)]
    return deepest

