"""Loaders: every supported layout, malformed rows with line numbers, strict mode, clear file errors."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import pytest
from emotion_ai.spec import EMOTION_LABELS
from emotion_ai_training.data import DatasetError, load_emotion, load_keypoints
from emotion_ai_training.dataset_files import parse_pixel_rows

from .training_datagen import fer_rows, write_fer_csv, write_keypoints_csv


@pytest.mark.parametrize(("name", "layout"), [("fer2013.csv", "kaggle"), ("fer2013.csv.gz", "kaggle"),
                                              ("icml_face_data.csv", "icml")])
def test_fer_csv_layouts_load_identically(tmp_path: Path, name: str, layout: str) -> None:
    rows = fer_rows(12)
    data = load_emotion(write_fer_csv(tmp_path / name, rows, layout))
    assert data.images.shape == (12, 48, 48) and data.images.dtype == np.uint8
    np.testing.assert_array_equal(data.images[5], rows[5][1])
    assert data.labels.tolist() == [r[0] for r in rows]
    assert data.split.tolist() == ["train", "validation", "test"] * 4
    assert data.label_names == EMOTION_LABELS


def test_fer_bad_rows_are_skipped_and_reported_with_line_numbers(tmp_path: Path, caplog) -> None:
    good = fer_rows(4)
    bad_lines = ("9," + " ".join(["1"] * 2304) + ",Training",       # label out of range -> line 6
                 "3," + " ".join(["1"] * 2000) + ",Training",       # wrong pixel count  -> line 7
                 "2," + " ".join(["x"] * 2304) + ",Training",       # non-numeric        -> line 8
                 "1," + " ".join(["300"] * 2304) + ",Training")     # out of 0..255      -> line 9
    path = write_fer_csv(tmp_path / "fer2013.csv", good, extra_lines=bad_lines)
    with caplog.at_level(logging.WARNING):
        data = load_emotion(path)
    assert len(data.images) == 4
    assert [b.line for b in data.bad_rows] == [6, 7, 8, 9]
    assert "skipped 4 bad row(s)" in caplog.text and "line 6" in caplog.text
    with pytest.raises(DatasetError, match=r"4 bad row\(s\): line 6: label '9'"):
        load_emotion(path, strict=True)


def test_missing_and_empty_files_give_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file"):
        load_emotion(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DatasetError, match="file is empty"):
        load_emotion(tmp_path / "empty.csv")
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DatasetError, match="missing column"):
        load_emotion(tmp_path / "other.csv")
    (tmp_path / "broken.csv.gz").write_bytes(gzip.compress(b"emotion,pixels,Usage\n")[:15])
    with pytest.raises(DatasetError):
        load_emotion(tmp_path / "broken.csv.gz")


def test_cache_round_trips(tmp_path: Path) -> None:
    path = write_fer_csv(tmp_path / "fer2013.csv", fer_rows(6))
    first = load_emotion(path, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    second = load_emotion(path, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.split, second.split)


def test_cache_hit_reports_the_skipped_rows_and_strict_still_fails(tmp_path: Path) -> None:
    path = write_keypoints_csv(tmp_path / "training.csv", 8, extra_lines=("1,2,3",))
    first = load_keypoints(path, cache_dir=tmp_path / "cache")
    second = load_keypoints(path, cache_dir=tmp_path / "cache")
    assert second.bad_rows == first.bad_rows and len(first.bad_rows) == 1
    np.testing.assert_array_equal(first.points, second.points)
    with pytest.raises(DatasetError, match="1 bad row"):
        load_keypoints(path, cache_dir=tmp_path / "cache", strict=True)


def test_image_folder_subset_of_classes_and_validation_split(fer_folder: Path) -> None:
    data = load_emotion(fer_folder)
    assert data.label_names == ("happy", "sad", "surprise", "neutral")  # canonical order, only what is present
    assert sorted(set(data.split)) == ["test", "train", "validation"]
    assert (data.split == "train").sum() == 12 and (data.split == "validation").sum() == 8
    assert data.images.shape[1:] == (48, 48)


def test_image_folder_rejects_unknown_class(fer_folder: Path) -> None:
    (fer_folder / "train" / "bored").mkdir()
    with pytest.raises(DatasetError, match="unknown class folder 'bored'"):
        load_emotion(fer_folder)


def test_parse_pixel_rows_flags_exactly_the_bad_rows() -> None:
    pixels, ok = parse_pixel_rows(["1 2 3", "4 5", "7  8 9", "1 x 3", "1 2 256", " 3 4 5 "], 3)
    assert ok.tolist() == [True, False, True, False, False, True]
    assert pixels.tolist() == [[1, 2, 3], [7, 8, 9], [3, 4, 5]]


@pytest.mark.parametrize("name", ["training.csv", "training.csv.gz"])
def test_keypoints_csv_keeps_missing_points_and_metadata(tmp_path: Path, name: str) -> None:
    data = load_keypoints(write_keypoints_csv(tmp_path / name, 20))
    assert data.images.shape == (20, 96, 96) and data.points.shape == (20, 15, 2)
    missing_rows = np.isnan(data.points).any(axis=(1, 2))
    assert missing_rows.sum() == 7  # every 3rd row from row 1 keeps only the eye centres
    assert not np.isnan(data.points[1, :2]).any() and np.isnan(data.points[1, 2:]).all()
    assert set(data.metadata) == {"subject", "source"}


def test_keypoints_split_by_subject_never_shares_a_person(tmp_path: Path) -> None:
    data = load_keypoints(write_keypoints_csv(tmp_path / "kp.csv", 80), val_fraction=0.25, seed=3)
    subj = data.metadata["subject"]
    train, val = set(subj[data.split == "train"]), set(subj[data.split == "validation"])
    assert train and val and not train & val
    assert 0.15 <= (data.split == "validation").mean() <= 0.35


def test_keypoints_without_subject_use_a_seeded_random_split(tmp_path: Path) -> None:
    path = write_keypoints_csv(tmp_path / "kp.csv", 40, subjects=False)
    a, b = load_keypoints(path, seed=1), load_keypoints(path, seed=1)
    np.testing.assert_array_equal(a.split, b.split)
    assert (a.split == "validation").sum() == 6


def test_keypoints_bad_rows(tmp_path: Path) -> None:
    path = write_keypoints_csv(tmp_path / "kp.csv", 5, subjects=False,
                               extra_lines=(",".join(["1.0"] * 30) + ",1 2 3",
                                            ",".join(["abc"] * 30) + "," + " ".join(["0"] * 9216)))
    data = load_keypoints(path)
    assert len(data.images) == 5
    assert sorted(b.line for b in data.bad_rows) == [7, 8]
    with pytest.raises(DatasetError, match="2 bad row"):
        load_keypoints(path, strict=True)


def test_the_data_folder_is_emotion_ai_data_or_the_shared_sibling(monkeypatch, tmp_path):
    from emotion_ai_training.dataset_files import DATA_ENV, data_dir, default_data, default_votes

    monkeypatch.delenv(DATA_ENV, raising=False)
    assert data_dir() == Path("..") / "shared" / "data"
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert default_data("emotion") == tmp_path / "fer2013.csv.gz"
    assert default_data("keypoints") == tmp_path / "facial_keypoints.csv.gz"
    assert default_votes() == tmp_path / "ferplus_votes.csv.gz"
