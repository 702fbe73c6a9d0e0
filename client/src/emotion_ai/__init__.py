"""Emotion AI client SDK: faces, 15 keypoints and expressions from TF Serving, without TensorFlow.

from emotion_ai import EmotionClient
with EmotionClient(host="localhost", protocol="grpc") as client:
    prediction = client.predict("photo.jpg")
"""

from .client import EmotionClient
from .detect import Detection, FaceDetector, HaarFaceDetector, YuNetFaceDetector
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
from .transport import ModelRef, SignatureInfo, TensorSpec, VersionStatus

__all__ = [
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
    "Prediction",
    "RequestTimeoutError",
    "ServerError",
    "ServerUnavailableError",
    "SignatureInfo",
    "TensorSpec",
    "VersionStatus",
    "YuNetFaceDetector",
]
__version__ = "0.1.0"
