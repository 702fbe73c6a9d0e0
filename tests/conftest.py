"""Suite-wide settings, applied before any test module imports TensorFlow."""

import os

# TensorFlow 2.21's oneDNN kernels abort the process (glibc heap corruption) in the float32 training
# step of the tiny keypoints smoke model on AVX-512-BF16 CPUs; the Eigen kernels are exact and fast
# enough for seconds-long test models. Training and serving outside the tests keep oneDNN.
#
# Only this process: TensorFlow reads the switch once, when it is imported, so it is set for the import and
# taken away again. The servers, scripts and CLIs the tests start see the environment they would see
# outside the tests (the served int8 models need oneDNN on: emotion_ai.spec.ONEDNN_ENV).
if "TF_ENABLE_ONEDNN_OPTS" not in os.environ:
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
    try:
        import tensorflow  # noqa: F401
    except ImportError:  # a client-only environment: nothing to switch
        pass
    finally:
        del os.environ["TF_ENABLE_ONEDNN_OPTS"]
