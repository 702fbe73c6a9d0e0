"""Suite-wide settings, applied before any test module imports TensorFlow."""

import os

# TensorFlow 2.21's oneDNN kernels abort the process (glibc heap corruption) in the float32 training
# step of the tiny keypoints smoke model on AVX-512-BF16 CPUs; the Eigen kernels are exact and fast
# enough for seconds-long test models. Training and serving outside the tests keep oneDNN.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
