"""ORB + RANSAC on the homography test pairs, twice with OpenCV's default threads and twice with one thread, in one
process: the mean corner error (px) and the failures of the setting the page uses (patch 15, threshold 5 px).
Run from the repository root: .venv/bin/python docs/experiments/homography/orb_determinism.py"""

import cv2

from stnkit.train.config import TrainConfig
from stnkit_experiments.homography import _error, draws, orb_ransac

c = TrainConfig.for_model("homography-net", TrainConfig())
t = draws("test", 1000, c.test_seed)
for threads in (None, None, 1, 1):
    if threads:
        cv2.setNumThreads(threads)
    off, f = orb_ransac(t["x"], 15, 5.0)
    print(threads, _error(off, t["y"]), f, flush=True)
print("OpenCV", cv2.__version__)
