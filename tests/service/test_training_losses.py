"""The training's stored loss curve (`losses` of `/v1/trainings/{id}`): what a resumed run steps over again is
replaced, and a long run keeps every k-th step, so at most about LOSS_POINTS points over the whole run."""

from __future__ import annotations

from pictale.service.trainings.run import LOSS_POINTS, add_loss


def test_points_are_appended_in_step_order():
    points: list = []
    for step in range(1, 6):
        add_loss(points, step, 1.0 / step, 5)
    assert points == [[1, 1.0], [2, 0.5], [3, 0.333333], [4, 0.25], [5, 0.2]]


def test_a_resumed_run_replaces_the_steps_it_runs_again():
    points = [[1, 1.0], [2, 0.5], [3, 0.4], [4, 0.3]]
    add_loss(points, 3, 0.9, 4)  # resumed from the checkpoint at step 2
    assert points == [[1, 1.0], [2, 0.5], [3, 0.9]]


def test_a_long_run_is_thinned_evenly():
    points: list = []
    for step in range(1, 10_001):
        add_loss(points, step, 0.5, 10_000)
    steps = [p[0] for p in points]
    # every 16th step (10000 / 16 = 625 <= LOSS_POINTS), the first and the last
    assert steps == [1, *range(16, 10_000, 16), 10_000]
    assert len(points) <= LOSS_POINTS + 2
