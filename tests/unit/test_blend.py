"""The blend weights ``eddy train`` chooses from the data (``rank_blend``): sessions keep
``RankConfig``'s, long-lived profiles get ``PROFILE_BLEND``; stored in the artefact's JSON
and applied by the worker's step unless ``RankConfig.artefact_blend`` is off."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from models.artefact import ArtefactError, ModelArtefact, load, save
from models.events import Event, EventType
from models.recommender import RankConfig, with_blend
from models.step import DEFAULT_VARIANT, Inbound, StepConfig, WorkerStep
from models.training import PROFILE_BLEND, PROFILE_HISTORY, TrainConfig, rank_blend, train
from tests.unit.test_artefact import small
from tests.unit.test_training import T0, two_group_dataset


def events(users: int, per_user: int) -> list[Event]:
    return [
        Event(type=EventType.CLICK, user_id=f"u{u}", item_id=f"i{i}", ts=T0 + u * 100 + i)
        for u in range(users)
        for i in range(per_user)
    ]


def test_sessions_keep_the_defaults_and_profiles_get_the_profile_blend() -> None:
    assert rank_blend([]) == {}
    assert rank_blend(events(5, 3)) == {}
    assert rank_blend(events(5, PROFILE_HISTORY - 1)) == {}
    assert rank_blend(events(5, PROFILE_HISTORY)) == dict(PROFILE_BLEND)
    # the median user decides: two long histories among three short sessions do not
    mixed = events(3, 2) + [
        e.model_copy(update={"user_id": f"v{e.user_id}"}) for e in events(2, 50)
    ]
    assert rank_blend(mixed) == {}


def test_repeated_items_count_once() -> None:
    repeats = [e.model_copy(update={"item_id": "same"}) for e in events(4, PROFILE_HISTORY + 5)]
    assert rank_blend(repeats) == {}


def test_with_blend_sets_only_blend_weights() -> None:
    cfg = RankConfig()
    got = with_blend(cfg, PROFILE_BLEND)
    assert (got.w_sequence, got.history_boost, got.w_similarity) == (1.0, 0.5, 0.3)
    assert (
        replace(
            got,
            w_sequence=cfg.w_sequence,
            history_boost=cfg.history_boost,
            w_similarity=cfg.w_similarity,
        )
        == cfg
    )
    fixed = RankConfig(artefact_blend=False)
    assert with_blend(fixed, PROFILE_BLEND) is fixed
    assert with_blend(cfg, {}) is cfg
    with pytest.raises(ValueError, match="rank blend keys"):
        with_blend(cfg, {"epsilon": 0.5})
    with pytest.raises(ValueError, match="w_sequence finite and >= 0"):
        with_blend(cfg, {"w_sequence": -1.0})


def test_blend_round_trips_and_is_validated(tmp_path: Path) -> None:
    art = small(rank_blend=dict(PROFILE_BLEND))
    save(art, tmp_path)
    assert load(tmp_path).rank_blend == dict(PROFILE_BLEND)
    assert load(tmp_path / f"{art.version}.json").rank_blend == PROFILE_BLEND
    assert small().rank_blend == {}
    with pytest.raises(ArtefactError, match="rank_blend"):
        small(rank_blend={"w_sequence": float("nan")})


def test_training_stores_the_choice() -> None:
    art = train(two_group_dataset(), TrainConfig(dim=8, iterations=5), created_at=T0)
    assert art.rank_blend == {}  # five items per user: sessions


def click(user: str, item: str, ts: float) -> Inbound:
    return Inbound(Event(type=EventType.CLICK, user_id=user, item_id=item, ts=ts))


def test_users_between_sessions_get_the_artefacts_blend() -> None:
    art: ModelArtefact = replace(
        train(two_group_dataset(), TrainConfig(dim=8, iterations=5), created_at=T0),
        rank_blend=dict(PROFILE_BLEND),
    )
    cfg = RankConfig()
    returning = with_blend(cfg, PROFILE_BLEND)
    assert returning.w_sequence == PROFILE_BLEND["w_sequence"]
    late = T0 + 86_400.0
    step = WorkerStep(StepConfig(), {}, art)
    fixed = WorkerStep(StepConfig(rank=returning), {}, art)
    for s in (step, fixed):  # "u" clicks at T0; another user's click a day later
        s.run([click("u", "A1", T0), click("u", "B2", T0 + 1), click("v", "A1", late)], rank=False)
    profile = step.profiles["u"]
    assert step._config(profile, DEFAULT_VARIANT, T0 + 1 + cfg.session_gap_s)[0] == cfg
    assert step._config(profile, DEFAULT_VARIANT, T0 + 2 + cfg.session_gap_s)[0] == returning
    # the list: ranked at the step's clock (a day on), as by a step with those weights
    got = step.rank(["u"], late, record=False).lists["u"].items
    want = fixed.rank(["u"], late, record=False).lists["u"].items
    assert [i.item_id for i in got] == [i.item_id for i in want]
    # artefact_blend off, or an artefact without a blend: one config for everyone
    off = WorkerStep(StepConfig(rank=RankConfig(artefact_blend=False)), {}, art)
    assert off._config(profile, DEFAULT_VARIANT, late)[0] == RankConfig(artefact_blend=False)
    plain = WorkerStep(StepConfig(), {}, replace(art, rank_blend={}))
    assert plain._config(profile, DEFAULT_VARIANT, late)[0] == cfg


def test_a_list_is_re_ranked_with_the_blend_when_the_session_ends() -> None:
    """The worker serves what the holdout protocols score: once a user's session ends,
    ``end_sessions`` re-ranks their list with the between-sessions blend, once."""
    art: ModelArtefact = replace(
        train(two_group_dataset(), TrainConfig(dim=8, iterations=5), created_at=T0),
        rank_blend=dict(PROFILE_BLEND),
    )
    gap = RankConfig().session_gap_s
    step = WorkerStep(StepConfig(), {}, art)
    fixed = WorkerStep(StepConfig(rank=with_blend(RankConfig(), PROFILE_BLEND)), {}, art)
    for s in (step, fixed):
        out = s.run([click("u", "A1", T0), click("u", "B2", T0 + 1), click("v", "A1", T0 + 600)])
    assert set(out.lists) == {"u", "v"}
    assert list(step.in_session) == ["u", "v"]
    assert not step.end_sessions(T0 + 1 + gap).lists  # not over yet for anyone
    ended = step.end_sessions(T0 + 2 + gap)
    assert set(ended.lists) == {"u"}
    want = fixed.rank(["u"], T0 + 2 + gap, record=False).lists["u"].items
    assert [i.item_id for i in ended.lists["u"].items] == [i.item_id for i in want]
    assert ended.lists["u"].event_ts == T0 + 1
    assert list(step.in_session) == ["v"]
    assert not step.end_sessions(T0 + 2 + gap).lists  # once
    step.run([click("v", "B2", T0 + 700)])  # v's session goes on: not due
    assert not step.end_sessions(T0 + 600 + gap + 50).lists
    assert set(step.end_sessions(T0 + 701 + gap).lists) == {"v"}
    plain = WorkerStep(StepConfig(), {}, replace(art, rank_blend={}))  # nothing to change
    plain.run([click("u", "A1", T0)])
    assert not plain.in_session
