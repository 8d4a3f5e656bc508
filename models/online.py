"""Per-event online learning maths: pure functions, state in, state out.

Workers call these for every event, after the model artefact (``models.artefact``) has
given every item a pre-trained vector:

* ``update_user_vector`` moves a user's vector toward the item just interacted with,
  the more the heavier the event (purchase > click) and the older the user's past.
* ``co_occurrence_step`` moves an item's vector toward the items the same user has just
  interacted with (and away from sampled negatives): item vectors keep learning online.
* ``cold_item_vector`` gives a brand-new item its content-model vector.

Every vector returned is float32 and L2-normalised (inner product = cosine), the
convention of ``models.retrieval``. Inputs are never modified.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from models.profile import decay_factor

Vector = npt.NDArray[np.float32]

_EPS = 1e-12


def _as_vector(name: str, value: npt.ArrayLike, dim: int | None = None) -> npt.NDArray[np.float64]:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D vector, got shape {arr.shape}")
    if dim is not None and arr.shape[0] != dim:
        raise ValueError(f"{name} has dimension {arr.shape[0]}, expected {dim}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _as_rows(name: str, value: npt.ArrayLike, dim: int) -> npt.NDArray[np.float64]:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 1 and arr.shape[0] == dim:
        arr = arr.reshape(1, dim)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"{name} must be a (n, {dim}) array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _unit(vec: npt.NDArray[np.float64], fallback: npt.NDArray[np.float64]) -> Vector:
    norm = float(np.linalg.norm(vec))
    if norm < _EPS:  # opposite vectors cancelled out: keep the fallback direction
        vec, norm = fallback, float(np.linalg.norm(fallback))
    return (vec / max(norm, _EPS)).astype(np.float32)


def _check_non_negative(name: str, value: float) -> float:
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return float(value)


def _check_half_life(half_life_s: float) -> float:
    if not (half_life_s > 0 and math.isfinite(half_life_s)):
        raise ValueError(f"half_life_s must be finite and > 0, got {half_life_s!r}")
    return float(half_life_s)


def update_user_vector(
    user_vec: npt.ArrayLike | None,
    item_vec: npt.ArrayLike,
    weight: float,
    dt_s: float,
    half_life_s: float,
    *,
    mass: float = 1.0,
) -> Vector:
    """The user's vector after an event of ``weight`` on the item with ``item_vec``.

    A time-decayed weighted running mean, renormalised::

        new = normalise(decay(dt_s) * mass * user_vec + weight * item_vec)

    ``dt_s`` is the event time minus the time of the user's previous event and
    ``decay(dt) = 0.5 ** (dt / half_life_s)``. ``mass`` is the decayed total weight
    already behind ``user_vec`` (track it with ``decayed_mass``); the default 1.0 makes
    the old vector count as one unit of weight. Renormalising after every step makes
    this a running mean on the sphere: when past items disagree, the old vector counts
    with its full mass (the batch mean of the same items would give it less), so a
    long history is moved conservatively. An out-of-order event (``dt_s < 0``)
    decays the new item's weight instead, so the result does not depend much on arrival
    order. ``user_vec=None`` (a new user) returns the item's direction.
    """
    item = _as_vector("item_vec", item_vec)
    weight = _check_non_negative("weight", weight)
    _check_non_negative("mass", mass)
    half_life_s = _check_half_life(half_life_s)
    if not math.isfinite(dt_s):
        raise ValueError(f"dt_s must be finite, got {dt_s!r}")
    if user_vec is None:
        return _unit(item, item)
    user = _as_vector("user_vec", user_vec, item.shape[0])
    old, new = mass * decay_factor(dt_s, half_life_s), weight * decay_factor(-dt_s, half_life_s)
    return _unit(old * user + new * item, user)


def decayed_mass(mass: float, weight: float, dt_s: float, half_life_s: float) -> float:
    """The ``mass`` to pass with the vector ``update_user_vector`` returned.

    ``decay(dt_s) * mass + weight`` (for ``dt_s < 0`` the weight is decayed instead),
    the same arithmetic as ``models.popularity.bump``.
    """
    _check_non_negative("mass", mass)
    _check_non_negative("weight", weight)
    half_life_s = _check_half_life(half_life_s)
    return mass * decay_factor(dt_s, half_life_s) + weight * decay_factor(-dt_s, half_life_s)


def _sigmoid(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    out: npt.NDArray[np.float64] = 0.5 * (1.0 + np.tanh(0.5 * x))  # stable for any x
    return out


def co_occurrence_step(
    item_vec: npt.ArrayLike,
    context_vecs: npt.ArrayLike,
    lr: float,
    reg: float,
    negatives: npt.ArrayLike | None = None,
    *,
    anchor: npt.ArrayLike | None = None,
) -> Vector:
    """One proximal SGD step of an item's vector ``v`` toward its co-occurring items.

    Objective (skip-gram with negative sampling, item2vec), for the item's vector ``v``
    with the context vectors ``c_j`` (items in the same user's recent history) and the
    optional sampled negatives ``n_k`` held fixed::

        L(v) = mean_j -log sigmoid(v . c_j) + mean_k -log sigmoid(-v . n_k)
               + reg/2 * |v - anchor|^2

    ``anchor`` defaults to ``v`` itself, so ``reg`` then only damps the step; pass the
    item's pre-trained vector to keep online drift bounded. The step linearises the
    log-loss at ``v`` and solves the quadratic part exactly (a proximal step)::

        g = -mean_j (1 - sigmoid(v . c_j)) c_j + mean_k sigmoid(v . n_k) n_k
        v' = normalise((v - lr * g + lr * reg * anchor) / (1 + lr * reg))

    A larger ``lr`` moves further, a larger ``reg`` less (toward ``anchor``). Empty
    context and no negatives return ``v`` normalised.
    """
    v = _as_vector("item_vec", item_vec)
    dim = v.shape[0]
    lr = _check_non_negative("lr", lr)
    reg = _check_non_negative("reg", reg)
    contexts = _as_rows("context_vecs", context_vecs, dim)
    grad = np.zeros(dim, dtype=np.float64)
    if len(contexts):
        pull = 1.0 - _sigmoid(contexts @ v)
        grad -= (pull[:, None] * contexts).mean(axis=0)
    if negatives is not None:
        negs = _as_rows("negatives", negatives, dim)
        if len(negs):
            push = _sigmoid(negs @ v)
            grad += (push[:, None] * negs).mean(axis=0)
    target = v if anchor is None else _as_vector("anchor", anchor, dim)
    stepped = (v - lr * grad + lr * reg * target) / (1.0 + lr * reg)
    return _unit(stepped, v)


def cold_item_vector(content_vec: npt.ArrayLike) -> Vector:
    """A new item's vector before its first interaction: its content vector, normalised.

    ``content_vec`` comes from ``ContentModel.embed`` (``models.content``), which maps
    title, categories and tags into the collaborative embedding space.
    """
    vec = _as_vector("content_vec", content_vec)
    if float(np.linalg.norm(vec)) < _EPS:
        raise ValueError("content_vec is the zero vector: it has no direction")
    return _unit(vec, vec)
