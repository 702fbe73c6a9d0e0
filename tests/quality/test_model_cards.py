"""The committed model versions: each carries a card naming its data's licence, and only what is served plus one
rollback version per model is committed (every clone pays for every byte)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from emotion_ai.versions import version_dirs
from emotion_ai_serving.config import read_model_server_config

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models_export"
CONFIG = REPO / "serving" / "models.config"


def _served_models() -> list[str]:
    return [c.name for c in read_model_server_config(CONFIG).model_config_list.config]


def _cards() -> list[Path]:
    return sorted(MODELS.glob("*/*/model_card.json"))


def test_every_served_model_has_its_version_and_at_most_one_rollback():
    served = _served_models()
    assert {"emotion", "keypoints"} <= set(served)
    for model in served:
        versions = version_dirs(MODELS / model)
        assert 1 <= len(versions) <= 2, (model, versions)


@pytest.mark.parametrize("card", _cards(), ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}")
def test_each_card_names_the_research_only_terms_of_its_data(card: Path):
    doc = json.loads(card.read_text())
    assert doc["model"] == card.parent.parent.name.split("_")[0]  # emotion_accurate serves an emotion model
    assert int(card.parent.name) == doc["version"]
    assert "research" in doc["license"] and "non-commercial" in doc["license"]
    if doc["training"]["config"].get("labels", "fer2013").startswith("ferplus"):
        assert "MIT" in doc["license"] and "FER+" in doc["label_source"]
