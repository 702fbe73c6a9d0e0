"""Pydantic models of the gateway's JSON answers, for the OpenAPI schema only (answers are written by
`Prediction.to_dict()`, not validated again)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class FaceOut(BaseModel):
    """One face (`Face.to_dict()`)."""

    box: list[float | None] = Field(description="x, y, width, height in image pixels")
    detection_score: float | None
    keypoints: dict[str, list[float | None]] = Field(description="15 Kaggle keypoints -> [x, y] in image pixels")
    emotion: str = Field(description="the label with the highest score")
    scores: dict[str, float | None] = Field(description="label -> probability (7 labels)")
    track_id: int | None = Field(None, description="stream only: the face's identity across frames")
    smoothed_emotion: str | None = Field(None, description="stream only")
    smoothed_scores: dict[str, float | None] | None = Field(None, description="stream only: moving average")


class PredictionOut(BaseModel):
    """One image's prediction (`Prediction.to_json()`)."""

    image: str | None = Field(None, description="the image's name, if any")
    image_size: list[int] = Field(description="width, height")
    faces: list[FaceOut]
    models: dict[str, str] = Field(description='the served model each task used, e.g. {"emotion": "emotion"}')
    timings_ms: dict[str, float | None] = Field(description="decode, detect, preprocess, keypoints, emotion, total")


class ProblemOut(BaseModel):
    """RFC 9457 problem details (`application/problem+json`)."""

    type: str = Field(description='"urn:emotion-ai:problem:<kind>", e.g. invalid-image')
    title: str
    status: int
    detail: str
    instance: str | None = None


class BatchEntryOut(BaseModel):
    """One image of a batch: its prediction or its error."""

    index: int
    name: str
    prediction: PredictionOut | None = None
    error: ProblemOut | None = None


class BatchOut(BaseModel):
    """A batch's answer, one entry per image in order."""

    results: list[BatchEntryOut]


class ReadyOut(BaseModel):
    """`/readyz`: each task's model versions and their states."""

    status: str
    models: dict[str, list[dict[str, int | str]]]
