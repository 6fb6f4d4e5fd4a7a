"""The per-key gallery: the recorder that keeps each finished generation's images (storage.gallery holds them)."""

from pictale.service.gallery.recorder import GalleryRecorder, is_recorded

__all__ = ["GalleryRecorder", "is_recorded"]
