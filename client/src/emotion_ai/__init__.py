"""Emotion AI client SDK: faces, 15 keypoints and expressions from TF Serving, without TensorFlow.

from emotion_ai import EmotionClient
with EmotionClient(host="localhost", protocol="grpc") as client:
    prediction = client.predict("photo.jpg")
"""

from .aio import AsyncEmotionClient
from .client import EmotionClient
from .detect import HaarFaceDetector, MtcnnFaceDetector, make_detector
from .detection import Detection, FaceDetector
from .errors import (
    EmotionAIError,
    InvalidImageError,
    ModelNotFoundError,
    RequestTimeoutError,
    ServerError,
    ServerUnavailableError,
)
from .options import ClientOptions
from .result import Face, Prediction
from .streaming import StreamOptions, TrackSummary
from .transport import ModelRef, SignatureInfo, TensorSpec, VersionStatus
from .yunet import YuNetFaceDetector

__all__ = [
    "AsyncEmotionClient",
    "ClientOptions",
    "Detection",
    "EmotionAIError",
    "EmotionClient",
    "Face",
    "FaceDetector",
    "HaarFaceDetector",
    "InvalidImageError",
    "ModelNotFoundError",
    "ModelRef",
    "MtcnnFaceDetector",
    "Prediction",
    "RequestTimeoutError",
    "ServerError",
    "ServerUnavailableError",
    "SignatureInfo",
    "StreamOptions",
    "TensorSpec",
    "TrackSummary",
    "VersionStatus",
    "YuNetFaceDetector",
    "make_detector",
]
__version__ = "0.1.0"
