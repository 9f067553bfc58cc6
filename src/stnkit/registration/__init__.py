"""Registration by optimisation: ``stnkit register`` as a library (see docs/registration.md).

- :func:`register`: align MOVING to FIXED (rigid, affine, dense or velocity field) by optimising the
  transform through stnkit's warps, on a pyramid, with a similarity of :mod:`stnkit.nn.similarity`.
- :mod:`~stnkit.registration.frames`: world (millimetre) coordinates and stnkit's normalised ones.
- :mod:`~stnkit.registration.outputs`: the files ``stnkit register`` writes (the warped image, the
  transform as JSON and ITK text, the field as a NIfTI vector image, a figure).
"""

from .core import OPTIMIZERS, REGISTRATION_TRANSFORMS, RegistrationResult, as_volume, register
from .frames import LPS, fixed_to_moving_theta, ras_to_lps, voxel_centres_world

__all__ = [
    "LPS",
    "OPTIMIZERS",
    "REGISTRATION_TRANSFORMS",
    "RegistrationResult",
    "as_volume",
    "fixed_to_moving_theta",
    "ras_to_lps",
    "register",
    "voxel_centres_world",
]
