"""Optional photo -> OpenPose skeleton, for pose avatars uploaded as photos.

Uses `controlnet_aux.OpenposeDetector` only when that package is importable and its weights
(`body_pose_model.pth`, `hand_pose_model.pth`, `facenet.pth`, the lllyasviel/Annotators file names) are in the
given directory. pictale does not depend on controlnet_aux: it requires torchvision, which does not work with
the CPU torch build pictale is tested on. Those weights are pickles; torch >= 2.6 loads them with its
weights-only unpickler. Without the package or the weights this returns None and pose avatars must be
skeleton images already.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path

from PIL import Image

log = logging.getLogger(__name__)

OPENPOSE_FILES = ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth")


def load_pose_detector(openpose_dir: Path | None) -> Callable[[Image.Image], Image.Image] | None:
    """A photo -> skeleton function, or None when controlnet_aux or its weights are not available."""
    if openpose_dir is None:
        return None
    folder = Path(openpose_dir)
    if not all((folder / name).is_file() for name in OPENPOSE_FILES):
        return None
    if importlib.util.find_spec("controlnet_aux") is None:
        return None
    try:
        from controlnet_aux import OpenposeDetector

        detector = OpenposeDetector.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # an optional extra: a broken install must not stop the server
        log.warning("OpenPose detector unavailable (%s: %s)", type(exc).__name__, exc)
        return None

    def detect(image: Image.Image) -> Image.Image:
        rgb = image.convert("RGB")
        skeleton = detector(rgb, include_body=True, include_hand=True, include_face=True, output_type="pil")
        return skeleton.resize(rgb.size, Image.Resampling.BILINEAR)

    return detect
