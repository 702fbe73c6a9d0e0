"""`bench/ladder_photos.py`: the variants alternate call by call, and the table reports each variant's p50,
p95 and faces against the served models it names."""

from __future__ import annotations

from dataclasses import dataclass, field

from .quality_support import bench_module

ladder = bench_module("ladder_photos")


@dataclass
class _Answer:
    faces: list
    models: dict = field(default_factory=dict)


class _Client:
    """Answers with `faces` faces, and records the order of the calls it gets in a shared log."""

    def __init__(self, name: str, faces: int, log: list[str]) -> None:
        self.name, self.faces, self.log = name, faces, log

    def predict(self, jpeg: bytes) -> _Answer:
        self.log.append(self.name)
        return _Answer([object()] * self.faces, {"emotion": f"emotion_{self.name}"})


def test_variants_alternate_and_each_gets_its_own_row() -> None:
    log: list[str] = []
    clients = {"fast": _Client("fast", 4, log), "accurate": _Client("accurate", 3, log)}
    result = ladder.measure(clients, b"jpeg", n=5, warmup=2)
    assert log[:4] == ["fast", "fast", "accurate", "accurate"]  # the warm-up calls, then turn by turn
    assert log[4:] == ["fast", "accurate"] * 5
    assert result["fast"]["faces"] == 4 and result["accurate"]["faces"] == 3
    assert result["accurate"]["models"] == {"emotion": "emotion_accurate"}
    assert 0 <= result["fast"]["p50_ms"] <= result["fast"]["p95_ms"]

    doc = {"command": "python bench/ladder_photos.py", "machine": {"summary": "a CPU"}, "n": 5,
           "variants": {"fast": "keypoints, emotion", "accurate": "keypoints, emotion_accurate"},
           "photos": {"4 faces": result}}
    table = ladder.markdown(doc)
    assert "| photo | fast | accurate | faces found |" in table
    assert f"| 4 faces | {result['fast']['p50_ms']} ({result['fast']['p95_ms']}) |" in table
    assert table.rstrip().endswith("| 4 / 3 |")
