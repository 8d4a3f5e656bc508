"""Dataset loaders: exact results on tiny files, plus the real bundled MovieLens counts."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from models.datasets import (
    BUNDLED_MOVIELENS,
    Dataset,
    RatingMapping,
    detect_format,
    load_dataset,
    load_movielens,
    load_table,
    load_yoochoose,
    split_by_time,
)
from models.events import Event, EventType, decode_event, decode_item, encode

T0 = 1_500_000_000  # 2017-07-14, a sane event time


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def make_movielens(directory: Path, ratings: str, tags: str | None = None) -> Path:
    write(
        directory / "movies.csv",
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation|Children\n"
        '2,"American President, The (1995)",Comedy|Drama|Romance\n'
        "3,La cravate (1957),(no genres listed)\n",
    )
    write(directory / "ratings.csv", "userId,movieId,rating,timestamp\n" + ratings)
    if tags is not None:
        write(directory / "tags.csv", "userId,movieId,tag,timestamp\n" + tags)
    return directory


def ev(type_: EventType, user: str, item: str, ts: float, event_id: str | None = None) -> Event:
    return Event(type=type_, user_id=user, item_id=item, ts=ts, event_id=event_id)


# --- RatingMapping ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rating", "expected"),
    [
        (5.0, EventType.PURCHASE),
        (4.0, EventType.PURCHASE),
        (3.5, EventType.CLICK),
        (3.0, EventType.CLICK),
        (2.5, EventType.VIEW),
        (0.5, EventType.VIEW),
    ],
)
def test_default_mapping_relabels_ratings(rating: float, expected: EventType) -> None:
    assert RatingMapping().event_type(rating) is expected


def test_custom_mapping_thresholds() -> None:
    mapping = RatingMapping(purchase_at=5.0, click_at=1.0)
    assert mapping.event_type(4.5) is EventType.CLICK
    assert mapping.event_type(5.0) is EventType.PURCHASE
    assert mapping.event_type(0.5) is EventType.VIEW


def test_mapping_rejects_click_above_purchase() -> None:
    with pytest.raises(ValueError, match="click_at"):
        RatingMapping(purchase_at=3.0, click_at=4.0)


# --- MovieLens ----------------------------------------------------------------------------


def test_movielens_items_genres_and_mapping(tmp_path: Path) -> None:
    directory = make_movielens(
        tmp_path / "ml",
        f"7,1,4.0,{T0 + 20}\n7,2,3.0,{T0 + 10}\n8,3,2.5,{T0 + 10}\n",
    )
    data = load_movielens(directory)

    assert data.name == "ml"
    assert [(i.item_id, i.title, i.categories, i.tags) for i in data.items] == [
        ("1", "Toy Story (1995)", ("Adventure", "Animation", "Children"), ()),
        ("2", "American President, The (1995)", ("Comedy", "Drama", "Romance"), ()),
        ("3", "La cravate (1957)", (), ()),
    ]
    assert data.events == [
        ev(EventType.CLICK, "7", "2", T0 + 10, event_id=f"ml-7-2-{T0 + 10}"),
        ev(EventType.VIEW, "8", "3", T0 + 10, event_id=f"ml-8-3-{T0 + 10}"),
        ev(EventType.PURCHASE, "7", "1", T0 + 20, event_id=f"ml-7-1-{T0 + 20}"),
    ]
    assert (data.skipped, data.skip_reasons) == (0, {})
    for event in data.events:  # what the loader builds is what the worker accepts
        assert decode_event(encode(event)) == event
    for item in data.items:
        assert decode_item(encode(item)) == item


def test_movielens_custom_mapping(tmp_path: Path) -> None:
    directory = make_movielens(tmp_path / "ml", f"7,1,4.5,{T0}\n7,2,2.0,{T0}\n")
    data = load_movielens(directory, RatingMapping(purchase_at=5.0, click_at=2.0))
    assert [e.type for e in data.events] == [EventType.CLICK, EventType.CLICK]


def test_movielens_tags_aggregated_most_frequent_first(tmp_path: Path) -> None:
    tags = (
        "1,1,Pixar,1\n"
        "2,1,  pixar ,1\n"
        "3,1,PIXAR,1\n"
        "1,1,funny,1\n"
        "2,1,Funny,1\n"
        "1,1,witty,1\n"
        "1,1,clever,1\n"
        "1,1,   ,1\n"
        f"1,1,{'x' * 65},1\n"
        '1,1,"bad\x01tag",1\n'
        "1,99,orphan,1\n"
        "1,2,Drama Queen,1\n"
    )
    directory = make_movielens(tmp_path / "ml", f"7,1,4.0,{T0}\n", tags)
    data = load_movielens(directory)

    by_id = {item.item_id: item for item in data.items}
    assert by_id["1"].tags == ("pixar", "funny", "clever", "witty")  # ties alphabetical
    assert by_id["2"].tags == ("drama queen",)
    assert by_id["3"].tags == ()
    assert data.skip_reasons == {"tag: invalid": 3, "tag: unknown item": 1}
    assert data.skipped == 4


def test_movielens_tags_capped_at_64(tmp_path: Path) -> None:
    rows = [f"1,1,common,{n}\n" for n in range(3)]  # the most frequent tag
    rows += [f"1,1,tag{n:03d},1\n" for n in range(70)]
    directory = make_movielens(tmp_path / "ml", f"7,1,4.0,{T0}\n", "".join(rows))
    data = load_movielens(directory)

    tags = data.items[0].tags
    assert len(tags) == 64
    assert tags[0] == "common"
    assert tags[1:] == tuple(f"tag{n:03d}" for n in range(63))
    assert data.skip_reasons == {"tag: beyond 64 per item": 7}


def test_movielens_bad_rows_skipped_with_reasons(tmp_path: Path) -> None:
    future = int(time.time()) + 10 * 86_400
    ratings = (
        f"7,1,4.0,{T0}\n"
        f"bad user,1,4.0,{T0}\n"
        f"7,1/2,4.0,{T0}\n"
        f"7,2,five,{T0}\n"
        "7,2,4.0,yesterday\n"
        "7,2,4.0,600000000\n"
        f"7,2,4.0,{future}\n"
        f"7,2,nan,{T0}\n"
        "7,2\n"
        "\n"
        f"8,3,1.0,{T0 - 5}\n"
    )
    data = load_movielens(make_movielens(tmp_path / "ml", ratings))

    assert [(e.user_id, e.item_id) for e in data.events] == [("8", "3"), ("7", "1")]
    assert data.skip_reasons == {
        "event: bad item_id": 1,
        "event: bad rating": 2,
        "event: bad ts": 1,
        "event: bad user_id": 1,
        "event: short row": 1,
        "event: ts before 1990": 1,
        "event: ts in the future": 1,
    }
    assert data.skipped == 8


def test_movielens_missing_column_and_file(tmp_path: Path) -> None:
    directory = make_movielens(tmp_path / "ml", "")
    write(directory / "ratings.csv", "userId,movieId,stars,timestamp\n7,1,4.0,1\n")
    with pytest.raises(ValueError, match="'rating'"):
        load_movielens(directory)
    with pytest.raises(FileNotFoundError, match=r"movies\.csv"):
        load_movielens(tmp_path / "nowhere")


def test_dataset_repr_is_short(tmp_path: Path) -> None:
    data = load_movielens(make_movielens(tmp_path / "ml", f"7,1,4.0,{T0}\n"))
    assert repr(data) == "Dataset(name='ml', skipped=0, skip_reasons={})"
    assert data.summary() == "ml: 3 items, 1 events, 1 users, 0 skipped"


# --- YOOCHOOSE ----------------------------------------------------------------------------

YC = "SessionId\tItemId\tTime\n"


def test_yoochoose_rows_are_session_clicks(tmp_path: Path) -> None:
    path = write(
        tmp_path / "yc.txt",
        YC
        + "2\t214536502\t1396860669.277\n"
        + "1\t214536506\t1396860600.5\n"
        + "2\t214536500\t1396860669.277\n",
    )
    data = load_yoochoose(path)

    assert data.name == "yc"
    assert data.items == []
    assert [(e.type, e.user_id, e.session_id, e.item_id, e.ts) for e in data.events] == [
        (EventType.CLICK, "1", "1", "214536506", 1396860600.5),
        (EventType.CLICK, "2", "2", "214536500", 1396860669.277),
        (EventType.CLICK, "2", "2", "214536502", 1396860669.277),
    ]
    ids = [e.event_id for e in data.events]
    assert all(i is not None and i.startswith("yc-") for i in ids)
    assert len(set(ids)) == 3
    assert [e.event_id for e in load_yoochoose(path).events] == ids  # deterministic


def test_yoochoose_event_id_depends_on_row_index(tmp_path: Path) -> None:
    row = "1\t5\t1396860600\n"
    data = load_yoochoose(write(tmp_path / "dup.txt", YC + row + row))
    assert len(data.events) == 2
    assert data.events[0].event_id != data.events[1].event_id


def test_yoochoose_bad_rows_and_wrong_header(tmp_path: Path) -> None:
    huge = "1\t" + "x" * 200_000 + "\t1396860600\n"  # over csv's field size limit
    rows = "1\t5\tnoon\n1\t5\n" + huge + "1\t5\t1396860600\n"
    data = load_yoochoose(write(tmp_path / "yc.txt", YC + rows))
    assert [(e.user_id, e.item_id) for e in data.events] == [("1", "5")]
    assert data.skip_reasons == {
        "event: bad ts": 1,
        "event: malformed row": 1,
        "event: short row": 1,
    }
    with pytest.raises(ValueError, match="'SessionId'"):
        load_yoochoose(write(tmp_path / "other.txt", "Session\tItemId\tTime\n1\t5\t1\n"))


# --- generic tables -----------------------------------------------------------------------


def test_table_type_column(tmp_path: Path) -> None:
    path = write(
        tmp_path / "events.csv",
        f"who,what,when,kind\nu1,i1,{T0},Purchase\nu1,i2,{T0 + 1},add_to_cart\n"
        f"u2,i1,{T0},dance\nu2,i3,{T0 - 1},view\n",
    )
    data = load_table(path, user_col="who", item_col="what", time_col="when", type_col="kind")

    assert data.name == "events"
    assert [(e.type, e.user_id, e.item_id, e.ts) for e in data.events] == [
        (EventType.VIEW, "u2", "i3", T0 - 1),
        (EventType.PURCHASE, "u1", "i1", T0),
        (EventType.ADD_TO_CART, "u1", "i2", T0 + 1),
    ]
    assert data.skip_reasons == {"event: unknown event type": 1}
    assert all(e.event_id is not None and e.event_id.startswith("ev-") for e in data.events)


def test_table_rating_column_tab_separated_iso_time(tmp_path: Path) -> None:
    path = write(
        tmp_path / "ratings.tsv",
        "user\titem\tat\tstars\n"
        "u1\ti1\t2017-07-14T02:40:00Z\t4\n"
        "u1\ti2\t2017-07-14T02:40:01\t3.5\n"
        "u1\ti3\t2017-07-14T04:40:02+02:00\t1\n"
        "u1\ti4\tnot-a-date\t5\n"
        "u1\ti5\t2017-07-14T02:40:03Z\t?\n",
    )
    data = load_table(
        path, user_col="user", item_col="item", time_col="at", rating_col="stars", time_format="iso"
    )

    assert [(e.item_id, e.type, e.ts) for e in data.events] == [
        ("i1", EventType.PURCHASE, 1_500_000_000.0),
        ("i2", EventType.CLICK, 1_500_000_001.0),  # naive times are UTC
        ("i3", EventType.VIEW, 1_500_000_002.0),
    ]
    assert data.skip_reasons == {"event: bad rating": 1, "event: bad ts": 1}


def test_table_without_type_is_clicks_and_unix_ms(tmp_path: Path) -> None:
    path = write(tmp_path / "clicks.csv", f"u,i,t\na,b,{T0 * 1000 + 250}\n")
    data = load_table(path, user_col="u", item_col="i", time_col="t", time_format="unix_ms")
    assert [(e.type, e.ts) for e in data.events] == [(EventType.CLICK, T0 + 0.25)]


def test_table_missing_column_is_named(tmp_path: Path) -> None:
    path = write(tmp_path / "clicks.csv", f"u,i,t\na,b,{T0}\n")
    with pytest.raises(ValueError, match=r"column 'time' \(time_col\) not found"):
        load_table(path, user_col="u", item_col="i", time_col="time")
    with pytest.raises(ValueError, match="'kind'"):
        load_table(path, user_col="u", item_col="i", time_col="t", type_col="kind")
    with pytest.raises(ValueError, match="not both"):
        load_table(path, user_col="u", item_col="i", time_col="t", type_col="t", rating_col="t")


def test_table_with_items_file(tmp_path: Path) -> None:
    events = write(tmp_path / "clicks.csv", f"u,i,t\na,sku-1,{T0}\n")
    items = write(
        tmp_path / "items.csv",
        "sku,name,cats,labels\n"
        "sku-2,Kettle,kitchen|electric,Steel| steel |\n"
        "sku-1,Mug,kitchen,\n"
        "bad id,Nope,,\n"
        f"sku-3,Big,{'c' * 65},\n"
        "sku-1,Mug v2,kitchen|gift,\n",
    )
    data = load_table(
        events,
        user_col="u",
        item_col="i",
        time_col="t",
        items_path=items,
        item_id_col="sku",
        title_col="name",
        categories_col="cats",
        tags_col="labels",
    )
    assert [(i.item_id, i.title, i.categories, i.tags) for i in data.items] == [
        ("sku-1", "Mug v2", ("kitchen", "gift"), ()),
        ("sku-2", "Kettle", ("kitchen", "electric"), ("steel",)),
    ]
    assert data.skip_reasons == {
        "item: bad categories": 1,
        "item: bad item_id": 1,
        "item: duplicate item_id (last kept)": 1,
    }
    with pytest.raises(ValueError, match="'title'"):
        load_table(
            events, user_col="u", item_col="i", time_col="t", items_path=items, item_id_col="sku"
        )
    only_ids = load_table(
        events,
        user_col="u",
        item_col="i",
        time_col="t",
        items_path=items,
        item_id_col="sku",
        title_col=None,
        categories_col=None,
    )
    assert [(i.item_id, i.title, i.categories) for i in only_ids.items] == [
        ("sku-1", "", ()),
        ("sku-2", "", ()),
        ("sku-3", "", ()),  # its bad category is not read
    ]


# --- load_dataset -------------------------------------------------------------------------


def test_load_dataset_auto_detects_each_format(tmp_path: Path) -> None:
    ml = make_movielens(tmp_path / "ml", f"7,1,4.0,{T0}\n")
    yc = write(tmp_path / "yc.txt", YC + "1\t5\t1396860600\n")
    table = write(tmp_path / "t.csv", f"user_id,item_id,ts\na,b,{T0}\n")

    assert (detect_format(ml), detect_format(yc), detect_format(table)) == (
        "movielens",
        "yoochoose",
        "table",
    )
    assert load_dataset(ml) == load_movielens(ml)
    assert load_dataset(yc) == load_yoochoose(yc)
    assert load_dataset(table, user_col="user_id", item_col="item_id", time_col="ts") == (
        load_table(table, user_col="user_id", item_col="item_id", time_col="ts")
    )
    mapped = load_dataset(ml, mapping=RatingMapping(purchase_at=4.5))
    assert [e.type for e in mapped.events] == [EventType.CLICK]
    forced = load_dataset(yc, "table", user_col="SessionId", item_col="ItemId", time_col="Time")
    assert [(e.session_id, e.event_id[:3]) for e in forced.events if e.event_id] == [(None, "ev-")]


def test_load_dataset_rejects_misfits(tmp_path: Path) -> None:
    ml = make_movielens(tmp_path / "ml", "")
    with pytest.raises(ValueError, match="do not apply to MovieLens"):
        load_dataset(ml, user_col="x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"ratings\.csv and movies\.csv"):
        load_dataset(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        load_dataset(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="is empty"):
        load_dataset(write(tmp_path / "blank.csv", ""), user_col="u", item_col="i", time_col="t")


# --- split_by_time ------------------------------------------------------------------------


def test_split_by_time_is_global_and_temporal() -> None:
    events = [ev(EventType.CLICK, f"u{n % 3}", f"i{n}", T0 + (n * 7) % 10) for n in range(10)]
    train, test = split_by_time(events, 0.3)

    assert (len(train), len(test)) == (7, 3)
    assert [e.ts for e in train + test] == sorted(e.ts for e in events)
    assert max(e.ts for e in train) <= min(e.ts for e in test)
    assert split_by_time(events, 0.0)[1] == []
    assert split_by_time(events, 1.0)[0] == []
    with pytest.raises(ValueError, match="fraction"):
        split_by_time(events, 1.5)


# --- the bundled MovieLens ----------------------------------------------------------------


@pytest.fixture(scope="module")
def bundled() -> Dataset:
    return load_movielens(BUNDLED_MOVIELENS)


def test_bundled_movielens_counts(bundled: Dataset) -> None:
    event_skips = sum(n for reason, n in bundled.skip_reasons.items() if reason.startswith("event"))
    assert len(bundled.items) == 9_742
    assert len(bundled.events) == 100_836 - event_skips
    assert event_skips == 0
    assert len(bundled.user_ids) == 610
    assert bundled.skip_reasons == {"tag: beyond 64 per item": 109, "tag: invalid": 1}
    assert Counter(e.type for e in bundled.events) == {
        EventType.PURCHASE: 48_580,
        EventType.CLICK: 33_183,
        EventType.VIEW: 19_073,
    }
    keys = [(e.ts, e.user_id, e.item_id) for e in bundled.events]
    assert keys == sorted(keys)
    assert [i.item_id for i in bundled.items] == sorted(i.item_id for i in bundled.items)
    assert bundled.events[0].ts == 828_124_615.0  # 1996-03-29
    assert bundled.events[-1].ts == 1_537_799_250.0  # 2018-09-24


def test_bundled_movielens_ships_its_licence() -> None:
    licence = (BUNDLED_MOVIELENS / "README.txt").read_text(encoding="utf-8")
    assert "Usage License" in licence
    assert "Harper and Joseph A. Konstan" in licence
