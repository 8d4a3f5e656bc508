"""Online-learning maths: hand-computed cases and properties of the pure updates."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.online import (
    co_occurrence_step,
    cold_item_vector,
    decayed_mass,
    update_user_vector,
)

DAY = 86_400.0
HALF_LIFE = 30 * DAY
S = 1 / math.sqrt(2)


def unit(*xs: float) -> np.ndarray:
    v = np.array(xs, dtype=np.float64)
    return v / np.linalg.norm(v)


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


unit_vectors = (
    st.lists(st.floats(-1, 1), min_size=4, max_size=4)
    .filter(lambda xs: np.linalg.norm(xs) > 0.1)
    .map(lambda xs: unit(*xs))
)


# --------------------------------------------------------------------------- user vector


def test_first_event_gives_the_item_direction() -> None:
    out = update_user_vector(None, [3.0, 4.0], weight=8.0, dt_s=0.0, half_life_s=HALF_LIFE)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.6, 0.8], atol=1e-7)


def test_equal_weights_average_the_directions() -> None:
    out = update_user_vector([1.0, 0.0], [0.0, 1.0], weight=1.0, dt_s=0.0, half_life_s=HALF_LIFE)
    np.testing.assert_allclose(out, [S, S], atol=1e-7)


def test_one_half_life_halves_the_old_vector() -> None:
    # normalise(0.5 * [1, 0] + 1 * [0, 1]) = [1, 2] / sqrt(5)
    out = update_user_vector([1.0, 0.0], [0.0, 1.0], 1.0, dt_s=HALF_LIFE, half_life_s=HALF_LIFE)
    np.testing.assert_allclose(out, [1 / math.sqrt(5), 2 / math.sqrt(5)], atol=1e-7)


def test_mass_is_the_weight_behind_the_old_vector() -> None:
    # normalise(3 * [1, 0] + 1 * [0, 1]) = [3, 1] / sqrt(10)
    out = update_user_vector([1.0, 0.0], [0.0, 1.0], 1.0, 0.0, HALF_LIFE, mass=3.0)
    np.testing.assert_allclose(out, [3 / math.sqrt(10), 1 / math.sqrt(10)], atol=1e-7)


def test_out_of_order_event_decays_the_new_weight() -> None:
    # an event one half-life older than the user's newest: normalise([1, 0] + 0.5 [0, 1])
    out = update_user_vector([1.0, 0.0], [0.0, 1.0], 1.0, dt_s=-HALF_LIFE, half_life_s=HALF_LIFE)
    np.testing.assert_allclose(out, [2 / math.sqrt(5), 1 / math.sqrt(5)], atol=1e-7)


def test_purchase_moves_further_than_view() -> None:
    user, item = unit(1, 0, 0), unit(0, 1, 0)
    view = update_user_vector(user, item, 1.0, 0.0, HALF_LIFE, mass=10.0)
    purchase = update_user_vector(user, item, 8.0, 0.0, HALF_LIFE, mass=10.0)
    assert cos(view, item) < cos(purchase, item)


def test_running_mean_with_tracked_mass_by_hand() -> None:
    """[1,0] (w 1), [0,1] (w 1), [1,0] (w 2), all at once: the state after two events is
    the 45-degree bisector with mass 2; the third, of equal weight, bisects again (22.5)."""
    vec, mass = None, 0.0
    for item, weight in (([1.0, 0.0], 1.0), ([0.0, 1.0], 1.0), ([1.0, 0.0], 2.0)):
        vec = update_user_vector(vec, item, weight, 0.0, HALF_LIFE, mass=mass)
        mass = decayed_mass(mass, weight, 0.0, HALF_LIFE)
    angle = math.radians(22.5)
    assert vec is not None
    np.testing.assert_allclose(vec, [math.cos(angle), math.sin(angle)], atol=1e-6)
    assert mass == 4.0


def test_repeated_item_stays_put() -> None:
    item = unit(1, 2, 3)
    out = update_user_vector(item, item, 8.0, 7 * DAY, HALF_LIFE, mass=5.0)
    np.testing.assert_allclose(out, item, atol=1e-6)


def test_decayed_mass_by_hand() -> None:
    assert decayed_mass(4.0, 1.0, HALF_LIFE, HALF_LIFE) == pytest.approx(3.0)
    assert decayed_mass(4.0, 2.0, -HALF_LIFE, HALF_LIFE) == pytest.approx(5.0)


@settings(max_examples=60, deadline=None)
@given(
    user=unit_vectors,
    item=unit_vectors,
    weight=st.floats(0.1, 10),
    dt=st.floats(0, 365 * DAY),
    mass=st.floats(0.1, 100),
)
def test_user_update_properties(
    user: np.ndarray, item: np.ndarray, weight: float, dt: float, mass: float
) -> None:
    out = update_user_vector(user, item, weight, dt, HALF_LIFE, mass=mass)
    assert np.linalg.norm(out) == pytest.approx(1.0, abs=1e-5)
    if cos(user, item) < 0.999 and cos(user, item) > -0.999:
        assert cos(out, item) > cos(user, item)  # moves toward what was just seen
        heavier = update_user_vector(user, item, weight * 2, dt, HALF_LIFE, mass=mass)
        assert cos(heavier, item) >= cos(out, item) - 1e-6
        later = update_user_vector(user, item, weight, dt + 10 * DAY, HALF_LIFE, mass=mass)
        assert cos(later, item) >= cos(out, item) - 1e-6  # an older past counts less


def test_user_update_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="dimension"):
        update_user_vector([1.0, 0.0], [1.0, 0.0, 0.0], 1.0, 0.0, HALF_LIFE)
    with pytest.raises(ValueError, match="NaN"):
        update_user_vector([1.0, 0.0], [math.nan, 0.0], 1.0, 0.0, HALF_LIFE)
    with pytest.raises(ValueError, match="weight"):
        update_user_vector([1.0, 0.0], [0.0, 1.0], -1.0, 0.0, HALF_LIFE)
    with pytest.raises(ValueError, match="half_life_s"):
        update_user_vector([1.0, 0.0], [0.0, 1.0], 1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="dt_s"):
        update_user_vector([1.0, 0.0], [0.0, 1.0], 1.0, math.inf, HALF_LIFE)


def test_user_update_keeps_its_direction_when_vectors_cancel() -> None:
    out = update_user_vector([1.0, 0.0], [-1.0, 0.0], 1.0, 0.0, HALF_LIFE)
    np.testing.assert_allclose(out, [1.0, 0.0])


def test_inputs_are_not_modified() -> None:
    user, item = np.array([1.0, 0.0], np.float32), np.array([0.0, 1.0], np.float32)
    update_user_vector(user, item, 1.0, 0.0, HALF_LIFE)
    co_occurrence_step(item, user[None, :], 0.5, 0.1)
    assert user.tolist() == [1.0, 0.0]
    assert item.tolist() == [0.0, 1.0]


# --------------------------------------------------------------------------- co-occurrence


def test_co_occurrence_step_by_hand() -> None:
    # v . c = 0, sigmoid = 0.5: g = -0.5 [0, 1]; v' = normalise([1, 0.5])
    out = co_occurrence_step([1.0, 0.0], [[0.0, 1.0]], lr=1.0, reg=0.0)
    np.testing.assert_allclose(out, [2 / math.sqrt(5), 1 / math.sqrt(5)], atol=1e-7)
    # reg damps the step (anchor = v): (v - lr g + lr reg v) / (1 + lr reg) = [1, 0.25]
    damped = co_occurrence_step([1.0, 0.0], [[0.0, 1.0]], lr=1.0, reg=1.0)
    np.testing.assert_allclose(damped, unit(1, 0.25), atol=1e-7)


def test_co_occurrence_negative_by_hand() -> None:
    # negative n = [0, 1] with v . n = 0: g = +0.5 [0, 1]; v' = normalise([1, -0.5])
    out = co_occurrence_step([1.0, 0.0], np.empty((0, 2)), 1.0, 0.0, negatives=[[0.0, 1.0]])
    np.testing.assert_allclose(out, unit(1, -0.5), atol=1e-7)


def test_anchor_pulls_back_toward_the_pretrained_vector() -> None:
    v, context, anchor = unit(1, 1, 0), unit(0, 1, 0), unit(1, 0, 0)
    free = co_occurrence_step(v, [context], lr=0.5, reg=1.0)
    anchored = co_occurrence_step(v, [context], lr=0.5, reg=1.0, anchor=anchor)
    assert cos(anchored, anchor) > cos(free, anchor)


def test_empty_context_leaves_the_vector() -> None:
    out = co_occurrence_step([0.0, 2.0], np.empty((0, 2)), lr=1.0, reg=0.5)
    np.testing.assert_allclose(out, [0.0, 1.0])


def sgns_loss(v: np.ndarray, contexts: np.ndarray, negatives: np.ndarray) -> float:
    def log_sigmoid(x: np.ndarray) -> np.ndarray:
        out: np.ndarray = -np.logaddexp(0.0, -x)
        return out

    pos = -log_sigmoid(contexts @ v).mean() if len(contexts) else 0.0
    neg = -log_sigmoid(-(negatives @ v)).mean() if len(negatives) else 0.0
    return float(pos + neg)


@settings(max_examples=60, deadline=None)
@given(v=unit_vectors, target=unit_vectors, lr=st.floats(0.01, 1.0), reg=st.floats(0.0, 2.0))
def test_co_occurrence_moves_toward_a_context_and_away_from_a_negative(
    v: np.ndarray, target: np.ndarray, lr: float, reg: float
) -> None:
    out = co_occurrence_step(v, [target], lr, reg)
    assert np.linalg.norm(out) == pytest.approx(1.0, abs=1e-5)
    if abs(cos(v, target)) < 0.999:
        assert cos(out, target) > cos(v, target)
        assert cos(co_occurrence_step(v, [target], lr * 2, reg), target) > cos(out, target)
        assert cos(co_occurrence_step(v, [target], lr, reg + 1), target) < cos(out, target)
        away = co_occurrence_step(v, np.empty((0, 4)), lr, reg, negatives=[target])
        assert cos(away, target) < cos(v, target)


@settings(max_examples=60, deadline=None)
@given(
    v=unit_vectors,
    contexts=st.lists(unit_vectors, min_size=1, max_size=5),
    negatives=st.lists(unit_vectors, max_size=5),
)
def test_small_co_occurrence_steps_lower_the_objective(
    v: np.ndarray, contexts: list[np.ndarray], negatives: list[np.ndarray]
) -> None:
    ctx, negs = np.array(contexts), np.array(negatives).reshape(-1, 4)
    out = co_occurrence_step(v, ctx, lr=1e-3, reg=0.0, negatives=negs)
    assert sgns_loss(out.astype(np.float64), ctx, negs) <= sgns_loss(v, ctx, negs) + 1e-6


def test_co_occurrence_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="context_vecs"):
        co_occurrence_step([1.0, 0.0], [[1.0, 0.0, 0.0]], 0.1, 0.0)
    with pytest.raises(ValueError, match="negatives"):
        co_occurrence_step([1.0, 0.0], [[1.0, 0.0]], 0.1, 0.0, negatives=[[1.0]])
    with pytest.raises(ValueError, match="lr"):
        co_occurrence_step([1.0, 0.0], [[1.0, 0.0]], -0.1, 0.0)


# --------------------------------------------------------------------------- cold items


def test_cold_item_vector_is_the_normalised_content_vector() -> None:
    out = cold_item_vector([0.0, 3.0, 4.0])
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.0, 0.6, 0.8], atol=1e-7)
    with pytest.raises(ValueError, match="zero vector"):
        cold_item_vector([0.0, 0.0])
