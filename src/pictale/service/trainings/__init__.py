"""LoRA trainings as jobs (issue 11): accept (every check first), run in chunks on the one worker, follow, cancel,
resume, and register the result as the owner's LoRA avatar.

- `protocol`: the `TrainingRunner` interface the service drives (the real one: `training/runner.py`).
- `requests`: the request's fields, the base model and its family, the TrainingSpec (preset + overrides).
- `photos`: uploads, a zip or face avatars into the work dir, then `training.photos.prepare`.
- `run`: one training's thread; its steps as chunk jobs on the shared worker (one GPU trains and serves).
- `finish`: the LoRA avatar and the character.
- `views`: the training object.
- `service`: `TrainingService`, what the API and the CLI call.
"""

from pictale.service.trainings.protocol import (
    Checkpoint,
    Choice,
    ChunkControl,
    RunnerContext,
    RunnerFactory,
    Sample,
    TrainingRunner,
)
from pictale.service.trainings.requests import TrainingFields
from pictale.service.trainings.service import TrainingService, make_training_service

__all__ = [
    "Checkpoint",
    "Choice",
    "ChunkControl",
    "RunnerContext",
    "RunnerFactory",
    "Sample",
    "TrainingFields",
    "TrainingRunner",
    "TrainingService",
    "make_training_service",
]
