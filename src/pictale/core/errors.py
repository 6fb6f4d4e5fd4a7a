"""The one error tree. Every dialect renders these in its own shape (DESIGN.md rule 3)."""

from __future__ import annotations


class PictaleError(Exception):
    """Base of every error pictale raises on purpose; `status` is the HTTP status it maps to."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def __reduce__(self):
        # Pickled whole (message, param, retry_after, ...): a Ray worker replica's error reaches the ingress as it
        # was raised, so the dialects render it as they would a local one.
        return (_rebuild, (type(self), self.message, dict(self.__dict__)))


def _rebuild(cls: type[PictaleError], message: str, state: dict) -> PictaleError:
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    exc.__dict__.update(state)
    return exc


class InvalidRequest(PictaleError):
    """A request field is out of range or inconsistent (names the field)."""

    status = 422
    code = "invalid_request"


class PromptSyntaxError(InvalidRequest):
    code = "prompt_syntax"


class InvalidImage(InvalidRequest):
    """An uploaded or base64 image cannot be decoded or is too large."""

    code = "invalid_image"


class InitImageMissing(PictaleError):
    status = 404
    code = "init_image_missing"


class ModelNotFound(PictaleError):
    status = 404
    code = "model_not_found"


class UnsafeModelFile(PictaleError):
    """A pickle checkpoint (.ckpt/.bin/.pt/.pth) was offered: pictale never unpickles."""

    status = 422
    code = "unsafe_model_file"


class ModelLoadError(PictaleError):
    status = 500
    code = "model_load_failed"


class QueueFull(PictaleError):
    status = 429
    code = "queue_full"

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ReplicaLost(PictaleError):
    """A Ray worker replica stopped (died, was removed) while it ran the job, and retries ran out."""

    status = 503
    code = "replica_lost"


class JobCancelled(PictaleError):
    status = 499
    code = "cancelled"


class JobNotFound(PictaleError):
    status = 404
    code = "job_not_found"


class NotAuthenticated(PictaleError):
    status = 401
    code = "not_authenticated"


class ScriptNotFound(InvalidRequest):
    code = "script_not_found"


class UnknownAvatarError(InvalidRequest):
    """A prompt token names an avatar the caller does not have (message quotes the token, suggests names)."""

    code = "unknown_avatar"


class AvatarNotFound(PictaleError):
    """REST: no such avatar for this key (other keys' avatars do not exist for it)."""

    status = 404
    code = "avatar_not_found"


class CharacterNotFound(AvatarNotFound):
    """REST: no such story character for this key (other keys' characters do not exist for it)."""

    code = "character_not_found"


class AvatarExists(PictaleError):
    status = 409
    code = "avatar_exists"


class InvalidUpload(InvalidRequest):
    """An uploaded file failed validation; the message names the file and the reason. Nothing was stored."""

    code = "invalid_upload"


class InvalidTrainingPhotos(InvalidUpload):
    """Training photos that cannot be used (unreadable, too small, blurry, near-duplicates, no face, too few): one
    4xx before anything is stored or computed. `problems` lists each as `{"file": name or None, "problem": text}`
    (`file` None: the set as a whole, e.g. too few photos); the message says the same in words."""

    code = "invalid_training_photos"

    def __init__(self, problems: list[dict], *, param: str | None = "photos") -> None:
        self.problems = [{"file": p.get("file"), "problem": str(p["problem"])} for p in problems]
        by_file: dict[str | None, list[str]] = {}
        for p in self.problems:
            by_file.setdefault(p["file"], []).append(p["problem"])
        files = [name for name in by_file if name is not None]
        parts = [f"{name}: {' and '.join(texts)}" if name else "; ".join(texts) for name, texts in by_file.items()]
        head = f"{len(files)} file(s) cannot be used" if files else "the training photos cannot be used"
        super().__init__(f"{head}. " + "; ".join(parts), param=param)


class UploadTooLarge(PictaleError):
    status = 413
    code = "upload_too_large"


class Forbidden(PictaleError):
    status = 403
    code = "forbidden"


class KeyNotFound(PictaleError):
    status = 404
    code = "key_not_found"


class UnsupportedFeature(InvalidRequest):
    """A feature the loaded model family cannot do (e.g. an IP-Adapter on a family without one)."""

    code = "unsupported"


class LLMUnavailable(PictaleError):
    """The story LLM did not answer usefully (refused, timed out, HTTP error, unparseable reply); names the endpoint."""

    status = 502
    code = "llm_unavailable"


class BookNotFound(PictaleError):
    """No book with this id for the caller (other keys' books are not found either)."""

    status = 404
    code = "book_not_found"


class BookBusy(PictaleError):
    """The book is being made or changed; wait for its job (or cancel it) first."""

    status = 409
    code = "book_busy"


class UnsupportedMediaType(PictaleError):
    """The body is not in the format the route reads (names the Content-Type it expects)."""

    status = 415
    code = "unsupported_media_type"


class MalformedBody(PictaleError):
    """The body could not be parsed at all (invalid or too deeply nested JSON)."""

    status = 400
    code = "invalid_body"


class LastAdminKey(PictaleError):
    """Over HTTP, the last admin key cannot be revoked: nobody could manage keys afterwards."""

    status = 409
    code = "last_admin_key"


class CallbackRefused(InvalidRequest):
    """A `callback_url` whose host is (or resolves to) an address the server must not call."""

    code = "callback_url_refused"


class CheckpointUnloadable(ModelLoadError):
    """A checkpoint a client selected cannot be loaded (corrupt, truncated, unknown architecture, shapes that do
    not match its config): a 422 naming the file and the reason; the model loaded before keeps serving."""

    status = 422
    code = "checkpoint_unloadable"


class TrainingNotFound(PictaleError):
    """No training with this id for the caller (other keys' trainings are not found either)."""

    status = 404
    code = "training_not_found"


class TrainingBusy(PictaleError):
    """The training is running (or finished) and cannot be resumed now."""

    status = 409
    code = "training_busy"


class GalleryImageNotFound(PictaleError):
    """No gallery image with this id for the caller (other keys' images are not found either)."""

    status = 404
    code = "image_not_found"
