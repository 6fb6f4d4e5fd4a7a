"""create_app: builds the FastAPI app and its service in a lifespan (no state at import time)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.middleware.cors import CORSMiddleware

from pictale import __version__
from pictale.api import files as files_routes
from pictale.api.a1111 import control as a1111_control
from pictale.api.a1111 import info as a1111_info
from pictale.api.a1111 import routes as a1111_routes
from pictale.api.auth import Authenticator
from pictale.api.body import JsonBodyMiddleware
from pictale.api.docs import install_docs
from pictale.api.errors import install_error_handlers
from pictale.api.native import avatars as native_avatars
from pictale.api.native import characters as native_characters
from pictale.api.native import gallery as native_gallery
from pictale.api.native import jobs as native_jobs
from pictale.api.native import keys as native_keys
from pictale.api.native import server as native_server
from pictale.api.native import story as native_story
from pictale.api.native import sweeps as native_sweeps
from pictale.api.native import trainings as native_trainings
from pictale.api.native import webhooks as native_webhooks
from pictale.api.openai import routes as openai_routes
from pictale.api.web import install_web
from pictale.core.config import Settings
from pictale.service.files import FileStore
from pictale.service.gallery import GalleryRecorder
from pictale.service.generation import GenerationService
from pictale.service.stores import open_stores
from pictale.service.trainings import RunnerFactory, make_training_service
from pictale.storage.gallery import GalleryStore
from pictale.story.setup import LLMHolder, collect_book_images, make_book_runner
from pictale.story.sweep import SweepRunner

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    service: GenerationService | None = None,
    on_started: Callable[[GenerationService], None] | None = None,
    *,
    log_notes: bool = True,
    training_runner: RunnerFactory | None = None,
) -> FastAPI:
    """The app; `log_notes=False` when a banner shows the start-up notes (the demo warning appears once);
    `training_runner` builds the LoRA trainer (default: `training.runner`; tests give a fake)."""
    settings = settings or Settings()
    svc = service or GenerationService(settings)
    # The database is migrated here, not in the lifespan, so auth works even for a client that never
    # runs the lifespan; nothing of it exists at import time.
    stores = open_stores(settings)
    keys, avatars = stores.keys, stores.avatars
    svc.avatars = avatars  # the service resolves prompt avatar tokens through it
    svc.characters = stores.characters  # and expands <be-char:...> through this
    llm = LLMHolder(settings)
    books = make_book_runner(svc, stores.db, llm)
    trainings = make_training_service(svc, stores.db, training_runner)
    files = FileStore(settings.files_path, settings.file_ttl_minutes * 60)
    sweeps = SweepRunner(svc, books.scorer, files)  # the books' CLIP scorer: loaded once for both
    gallery = GalleryRecorder(GalleryStore(stores.db, settings.gallery_path), settings)
    if settings.gallery:
        gallery.attach(svc.queue)  # every generation of a key is kept in its gallery (not book candidates)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        removed = await run_in_threadpool(avatars.gc)
        if removed:
            log.info("removed %d unreferenced avatar blobs", len(removed))
        await run_in_threadpool(app.state.files.purge)
        removed = await run_in_threadpool(gallery.purge)  # before any job: nothing is being written
        if removed:
            log.info("removed %d gallery images past their retention", removed)
        entry = await run_in_threadpool(svc.start)
        if log_notes:  # `pictale serve` shows the notes in its banner: once, not twice
            for note in svc.startup_notes:
                log.warning(note)
        log.info("serving %s; auth: %s", entry.title, await run_in_threadpool(app.state.auth.describe))
        await run_in_threadpool(collect_book_images, books)
        resumed = books.resume_all()  # books a stopped server left unfinished go on
        if resumed:
            log.info("resumed %d book(s)", len(resumed))
        trainings.resume_all()  # and trainings, each from its runner's last saved state
        if on_started is not None:
            on_started(svc)
        try:
            yield
        finally:
            await run_in_threadpool(books.stop)  # first: book runs stop and stay resumable
            await run_in_threadpool(sweeps.stop)  # sweeps end cancelled
            await run_in_threadpool(trainings.stop)  # trainings too, between two steps
            await run_in_threadpool(svc.stop)
            await run_in_threadpool(gallery.close)  # the images of the last jobs are written before the db goes
            stores.close()

    # FastAPI's own /docs and /redoc load their assets from CDNs; install_docs serves them from pictale
    app = FastAPI(title="pictale", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    install_docs(app)
    app.state.settings = settings
    app.state.service = svc
    app.state.db = stores.db
    app.state.keys = keys
    app.state.avatars = avatars
    app.state.characters = stores.characters
    app.state.books = books
    app.state.trainings = trainings
    app.state.gallery = gallery
    app.state.llm = llm
    app.state.sweeps = sweeps
    app.state.files = files
    app.state.auth = Authenticator(settings.auth_pairs(), keys)
    if settings.cors_allow_origins or settings.cors_allow_origins_regex:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=[o.strip() for o in (settings.cors_allow_origins or "").split(",") if o.strip()],
            allow_origin_regex=settings.cors_allow_origins_regex,
            allow_credentials=True,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    app.add_middleware(JsonBodyMiddleware)
    install_error_handlers(app)
    app.include_router(a1111_routes.router)
    app.include_router(a1111_control.router)
    app.include_router(a1111_info.router)
    app.include_router(native_avatars.router)
    app.include_router(native_characters.router)
    app.include_router(native_gallery.router)
    app.include_router(native_keys.router)
    app.include_router(native_jobs.router)
    app.include_router(native_story.router)
    app.include_router(native_sweeps.router)
    app.include_router(native_trainings.router)
    app.include_router(native_webhooks.router)
    app.include_router(files_routes.router)
    app.include_router(openai_routes.router)
    app.include_router(native_server.router)
    install_web(app)
    return app
