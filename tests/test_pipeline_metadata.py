"""Metadata streaming, validation, duplicate detection, plan creation/refusal and subtitles index."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.metadata import DigestSet, clip_key, is_safe_name, iter_clips, open_subtitles, parse_time
from pipeline.plan import ExtractOptions, PlanMismatchError, iter_shards, load_or_create_plan


def _line(video_id: object, clips: object) -> str:
    return json.dumps({"video_id": video_id, "url": "u", "clip": clips})


def _clip(cid: str, a: str = "00:00:01.000", b: str = "00:00:02.500") -> dict:
    return {"clip_id": cid, "span": [a, b]}


def test_parse_time() -> None:
    assert parse_time("00:00:12.345") == pytest.approx(12.345)
    assert parse_time("01:02:03") == 3723.0
    assert parse_time("1:00:00.5") == 3600.5
    for bad in ("12.3", "00:61:00.000", "aa:00:00", "", None, 5, "00:00:-1.0"):
        with pytest.raises(ValueError):
            parse_time(bad)


def test_keys_and_safety() -> None:
    assert clip_key("AbCdEfGhIjK.1.mp4") == "AbCdEfGhIjK_1"
    assert clip_key("AbCdEfGhIjK.7") == "AbCdEfGhIjK_7"  # Shot2Story style ids have no extension
    for bad in ("", ".", "..", "a/b", "a\\b", "x..y", ".hidden", "a\x00b", None, 3):
        assert not is_safe_name(bad)
    assert is_safe_name("AbC-_x.1.mp4")


def test_bad_lines_become_failed_rows(tmp_path: Path) -> None:
    lines = [
        _line(
            "vid00000001",
            [_clip("vid00000001.1.mp4"), _clip("vid00000001.2.mp4", "00:00:03.000", "00:00:04.000")],
        ),
        "{not json",
        _line("vid00000002", [_clip("vid00000002.1.mp4", "00:00:05.000", "00:00:05.000")]),  # end == start
        _line("vid00000003", [_clip("vid00000003.1.mp4", "00:00:x5.000", "00:00:06.000")]),  # bad time
        _line("vid00000004", [{"clip_id": "vid00000004.1.mp4"}]),  # missing span
        _line("vid00000005", [{"span": ["00:00:01.000", "00:00:02.000"]}]),  # missing clip_id
        _line("vid00000006", [_clip("../../etc/passwd"), _clip("a/b.mp4"), _clip("x..y.mp4")]),
        _line("../evil", [_clip("evil.1.mp4")]),  # unsafe video id
        json.dumps({"video_id": "vid00000007", "url": "u"}),  # missing clip list
        "",  # blank lines are skipped
        _line("vid00000001", [_clip("vid00000001.1.mp4")]),  # duplicate clip id
        _line("vid00000008", [_clip("vid00000001_1.mp4")]),  # different id, same WebDataset key
        "[1, 2]",
        _line("vid00000009", [_clip("vid00000009.1.mp4", "00:00:03.000", "00:00:02.000")]),  # end < start
        _line("vid00000009", [_clip("vid00000009.1.mp4")]),  # duplicate of a failed row: still a duplicate
    ]
    (tmp_path / "part0.jsonl").write_text("\n".join(lines) + "\n")
    rows = list(iter_clips([str(tmp_path / "*.jsonl")]))
    assert [r.index for r in rows] == list(range(len(rows)))
    ok = [r for r in rows if r.error is None]
    assert [r.clip_id for r in ok] == ["vid00000001.1.mp4", "vid00000001.2.mp4"]
    errors = [r.error for r in rows if r.error is not None]
    assert len(rows) == 2 + 1 + 1 + 1 + 1 + 1 + 3 + 1 + 1 + 1 + 1 + 1 + 1 + 1
    expect = [
        "bad JSON",
        "end 00:00:05.000 <= start",
        "bad time",
        "missing field 'span'",
        "missing or non-string field 'clip_id'",
        "unsafe clip_id '../../etc/passwd'",
        "unsafe clip_id 'a/b.mp4'",
        "unsafe clip_id 'x..y.mp4'",
        "unsafe video_id '../evil'",
        "missing or non-list field 'clip'",
        "duplicate clip id 'vid00000001.1.mp4'",
        "duplicate clip id 'vid00000001_1.mp4'",
        "line is not a JSON object",
        "end 00:00:02.000 <= start",
        "duplicate clip id 'vid00000009.1.mp4'",
    ]
    assert len(errors) == len(expect)
    for err, want in zip(errors, expect):
        assert err.startswith("metadata: ") and want in err, (err, want)
        assert "part0.jsonl:" in err
    # Unsafe ids never produce a key (nothing can be written under their name).
    assert all(r.key == "" for r in rows if r.error and "unsafe clip_id" in r.error)


def test_streams_several_files_in_order(tmp_path: Path) -> None:
    for p in range(3):
        (tmp_path / f"part{p}.jsonl").write_text(
            "\n".join(
                _line(f"v{p}{k:09d}", [_clip(f"v{p}{k:09d}.{j}.mp4") for j in (1, 2)]) for k in range(5)
            )
        )
    rows = list(iter_clips([str(tmp_path / "part*.jsonl")]))
    assert len(rows) == 30 and all(r.error is None for r in rows)
    assert rows[0].source == "part0.jsonl:1" and rows[-1].source == "part2.jsonl:5"
    with pytest.raises(FileNotFoundError):
        list(iter_clips([str(tmp_path / "nothing*.jsonl")]))


def test_digest_set_grows_and_finds_duplicates() -> None:
    s = DigestSet(capacity=4)
    assert all(s.add(f"k{i}") for i in range(5000))
    assert len(s) == 5000
    assert not any(s.add(f"k{i}") for i in range(0, 5000, 7))
    assert len(s) == 5000


def test_plan_shards_and_refusal(tmp_path: Path) -> None:
    meta = tmp_path / "m.jsonl"
    meta.write_text(
        "\n".join(_line(f"v{k:010d}", [_clip(f"v{k:010d}.{j}.mp4") for j in (1, 2, 3)]) for k in range(7))
    )
    out = tmp_path / "out"
    opts = ExtractOptions(shard_size=5)
    plan = load_or_create_plan(out, [str(meta)], tmp_path, opts)
    assert plan.total_clips == 21 and plan.num_shards == 5
    specs = list(iter_shards(plan))
    assert [s.index for s in specs] == [0, 1, 2, 3, 4]
    assert [len(s.rows) for s in specs] == [5, 5, 5, 5, 1]
    assert [r.index for s in specs for r in s.rows] == list(range(21))
    assert [s.index for s in iter_shards(plan, only={1, 4})] == [1, 4]
    recorded = json.loads((out / "plan.json").read_text())
    assert recorded["options"]["shard_size"] == 5 and "workers" not in recorded["options"]
    # Same options (workers is runtime only): accepted.
    again = load_or_create_plan(out, [str(meta)], tmp_path, ExtractOptions(shard_size=5, workers=3))
    assert again.num_shards == 5
    with pytest.raises(PlanMismatchError, match="frames"):
        load_or_create_plan(out, [str(meta)], tmp_path, ExtractOptions(shard_size=5, frames=8))
    # The same content in another place (metadata moved, videos root renamed) resumes; plan.json
    # then records the new locations.
    moved = tmp_path / "moved.jsonl"
    moved.write_bytes(meta.read_bytes())
    assert load_or_create_plan(out, [str(moved)], tmp_path / "other", opts).num_shards == 5
    recorded = json.loads((out / "plan.json").read_text())
    assert recorded["inputs"]["videos"] == str((tmp_path / "other").resolve())
    assert recorded["inputs"]["metadata_files"][0]["path"] == str(moved.resolve())
    meta.write_text(meta.read_text() + "\n" + _line("vZZZZZZZZZZ", [_clip("vZZZZZZZZZZ.1.mp4")]))
    with pytest.raises(PlanMismatchError, match="metadata_files"):
        load_or_create_plan(out, [str(meta)], tmp_path, opts)
    fresh = load_or_create_plan(out, [str(meta)], tmp_path, ExtractOptions(shard_size=4), overwrite=True)
    assert fresh.total_clips == 22 and fresh.num_shards == 6


def test_subtitles_index(tmp_path: Path) -> None:
    jl = tmp_path / "subs.jsonl"
    jl.write_text(
        "\n".join(
            [
                json.dumps({"clip_id": "a.1.mp4", "text": "hello"}),
                "garbage",
                json.dumps({"clip_id": "b.1.mp4"}),
                json.dumps({"clip_id": "a.1.mp4", "text": "second copy ignored"}),
                json.dumps({"clip_id": "c.1.mp4", "text": ""}),
            ]
        )
    )
    store, bad = open_subtitles(jl, tmp_path / "idx")
    assert bad == 2 and dict(store) == {"a.1.mp4": "hello", "c.1.mp4": ""}
    assert store.get("b.1.mp4") is None
    import pickle

    assert pickle.loads(pickle.dumps(store))["a.1.mp4"] == "hello"
    pqf = tmp_path / "subs.parquet"
    pq.write_table(pa.table({"clip_id": ["x.1.mp4", None], "text": ["t", "u"]}), pqf)
    store2, bad2 = open_subtitles(pqf, tmp_path / "idx")
    assert bad2 == 1 and dict(store2) == {"x.1.mp4": "t"}
