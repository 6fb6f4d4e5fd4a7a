"""Face likeness with dlib (the `faces` extra, in `dev`) on real faces that ship in wheels: skimage's astronaut and
her altered copies are the same person, a face from skimage's LFW subset (and matplotlib's Grace Hopper, where
matplotlib is installed) is another; a cat or a cup has no face. And the runner's scores for face trainings."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from pictale.training import face_likeness, runner

skdata = pytest.importorskip("skimage.data", reason="scikit-image (a dev dependency) ships the test faces")
needs_dlib = pytest.mark.skipif(not face_likeness.available(), reason="the faces extra (dlib) is not installed")


def astronaut() -> Image.Image:
    return Image.fromarray(skdata.astronaut())


def lfw_face() -> Image.Image:
    """Another person: the first face of skimage's LFW subset (25 px grey), enlarged so HOG finds it."""
    pixels = (skdata.lfw_subset()[0] * 255).astype(np.uint8)
    return Image.fromarray(pixels).convert("RGB").resize((200, 200), Image.Resampling.LANCZOS)


def no_face() -> Image.Image:
    return Image.fromarray(skdata.coffee())


def distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b))


@pytest.fixture(scope="module")
def faces():
    """Descriptors computed once (about 0.4 s each)."""
    a = astronaut()
    images = {
        "astronaut": a,
        "mirror": ImageOps.mirror(a),
        "brighter": ImageEnhance.Brightness(a).enhance(1.3),
        "other": lfw_face(),
        "coffee": no_face(),
        "cat": Image.fromarray(skdata.chelsea()),
    }
    return dict(zip(images, face_likeness.descriptors(list(images.values())), strict=True))


def test_available_in_the_dev_environment():
    # the dev extra installs dlib-bin and face_recognition_models; the 5-point model and the ResNet ship in the latter
    assert face_likeness.available()


@needs_dlib
def test_the_same_face_is_near_and_another_is_far(faces):
    ref = faces["astronaut"]
    assert ref is not None and ref.shape == (128,)
    for copy in ("mirror", "brighter"):
        assert distance(faces[copy], ref) < 0.4, copy  # measured 0.19 and 0.15 (training.md §4)
    assert distance(faces["other"], ref) > face_likeness.SAME_PERSON  # measured 0.90
    same = face_likeness.compare([faces["mirror"], faces["brighter"]], [ref]).similarity
    other = face_likeness.compare([faces["other"]], [ref]).similarity
    assert same > 0.6 and other < 1 - face_likeness.SAME_PERSON and other < same


@needs_dlib
def test_grace_hopper_is_another_person(faces):
    mpl = pytest.importorskip("matplotlib", reason="matplotlib ships Grace Hopper's photo")
    hopper = Path(mpl.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    assert face_likeness.face_similarity([hopper], [astronaut()]) < 1 - face_likeness.SAME_PERSON  # distance 0.70


@needs_dlib
def test_no_face_gives_none_and_counts_in_the_share(faces):
    assert faces["coffee"] is None and faces["cat"] is None
    ref = [faces["astronaut"]]
    assert face_likeness.compare([faces["coffee"], faces["cat"]], ref) == face_likeness.FaceSimilarity(None, 0.0)
    assert face_likeness.compare([faces["mirror"]], [faces["coffee"]]).similarity is None  # no reference face
    mixed = face_likeness.compare([faces["mirror"], faces["coffee"]], ref)
    assert mixed.found == 0.5
    assert mixed.similarity == pytest.approx(1 - distance(faces["mirror"], faces["astronaut"]), abs=1e-6)
    # the same through images and paths (PreparedPhoto-like objects with a .path work too)
    assert face_likeness.face_similarity([no_face()], [astronaut()]) is None


@needs_dlib
def test_face_similarity_takes_the_nearest_reference(tmp_path, faces):
    path = tmp_path / "astronaut.png"
    astronaut().save(path)
    refs = [lfw_face(), SimpleNamespace(path=str(path))]  # the nearest reference is the astronaut, not the other
    got = face_likeness.face_similarity([ImageOps.mirror(astronaut())], refs)
    assert got == pytest.approx(1 - distance(faces["mirror"], faces["astronaut"]), abs=1e-4)


# -- the runner ---------------------------------------------------------------------------------------------------


def make_runner(tmp_path: Path, kind: str, photos: list[Image.Image]) -> runner.Runner:
    paths = []
    for i, photo in enumerate(photos):
        paths.append(tmp_path / f"photo{i}.png")
        photo.save(paths[-1])
    spec = SimpleNamespace(kind=kind, trigger="sasha_person", class_word="person", steps=10)
    ctx = SimpleNamespace(spec=spec, settings=None, workdir=tmp_path)
    run = runner.Runner(ctx)
    run.trainer = SimpleNamespace(photos=[SimpleNamespace(path=str(p)) for p in paths], step=10)
    return run


@needs_dlib
def test_runner_likeness_is_the_face_similarity_for_face_trainings(tmp_path, monkeypatch, faces):
    run = make_runner(tmp_path, "face", [astronaut(), no_face()])
    run._clip_source, run._clip = "clip", object()  # a CLIP model: scoring.score stands in for it
    monkeypatch.setattr(runner.scoring, "score", lambda *a, **k: {"clip_i": 0.91, "clip_t": 0.27})
    scores = run._score([ImageOps.mirror(astronaut()), no_face()], ["a photo of sasha_person"])
    expected = round(1 - distance(faces["mirror"], faces["astronaut"]), 6)
    assert scores["face"] == pytest.approx(expected, abs=1e-4) and scores["face_found"] == 0.5
    assert scores["likeness"] == scores["face"] and scores["clip_i"] == 0.91 and scores["adherence"] == 0.27
    assert len(run._face_refs) == 1  # the photos' descriptors: computed once, the photo without a face left out
    # no face in any sample: the least likeness, not CLIP-I (another scale)
    none = run._score([no_face()], ["a photo of sasha_person"])
    assert none["face"] is None and none["face_found"] == 0.0 and none["likeness"] == 0.0 and none["clip_i"] == 0.91
    # what clients see: every key, through the Sample the service reads
    record = {"step": 10, "images": [], "prompts": ["p"], **scores}
    assert run._sample_of(record).scores == scores


@needs_dlib
def test_runner_chooses_by_face_likeness_without_a_clip_model(tmp_path):
    run = make_runner(tmp_path, "character", [astronaut()])
    scores = run._score([ImageOps.mirror(astronaut())], ["p"])
    assert scores["adherence"] is None and "clip_i" not in scores and scores["likeness"] == scores["face"] > 0.6
    run.history = [
        {"step": 0, "likeness": 0.0, "adherence": None, "face": None, "face_found": 0.0},
        {"step": 5, "likeness": 0.55, "adherence": None, "face": 0.55, "face_found": 1.0},
        {"step": 10, "likeness": 0.48, "adherence": None, "face": 0.48, "face_found": 0.5},
    ]
    step, reason = run._best()
    assert step == 5 and "face likeness 0.550" in reason


def test_runner_scores_as_before_for_other_kinds(tmp_path, monkeypatch):
    run = make_runner(tmp_path, "object", [astronaut()])
    monkeypatch.setattr(runner.face_likeness, "descriptors", lambda *_: pytest.fail("no face scoring for objects"))
    assert run._score([astronaut()], ["p"]) == {"likeness": None, "adherence": None}
    run._clip_source, run._clip = "clip", object()
    monkeypatch.setattr(runner.scoring, "score", lambda *a, **k: {"clip_i": 0.8, "clip_t": 0.3})
    assert run._score([astronaut()], ["p"]) == {"likeness": 0.8, "adherence": 0.3, "clip_i": 0.8}


def test_runner_without_the_faces_extra_scores_with_clip(tmp_path, monkeypatch):
    monkeypatch.setattr(runner.face_likeness, "available", lambda: False)
    run = make_runner(tmp_path, "face", [astronaut()])
    run._clip_source, run._clip = "clip", object()
    monkeypatch.setattr(runner.scoring, "score", lambda *a, **k: {"clip_i": 0.8, "clip_t": 0.3})
    assert run._score([astronaut()], ["p"]) == {"likeness": 0.8, "adherence": 0.3, "clip_i": 0.8}
