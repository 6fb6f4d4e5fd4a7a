"""The Keys page in a real browser: the first (admin) key made in open mode with its secret shown once, signing
in with it, a second key, each key seeing only its own gallery, a rejected key, and revoking a key.

Its own server: making a key turns authentication on for the rest of the module."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import SERVER_ENV, open_page
from tests.e2e.live import iter_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from iter_server(tmp_path_factory.mktemp("keys"), "tiny", env=SERVER_ENV, ready="/v1/server")


def _txt2img(base: str, key: str, prompt: str) -> None:
    body = {"prompt": prompt, "seed": 5, "width": 64, "height": 64, "steps": 2, "sampler_name": "Euler"}
    r = httpx.post(base + "/sdapi/v1/txt2img", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=120)
    assert r.status_code == 200, r.text


def _make_key(page, name: str, *, admin: bool) -> str:
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Admin (can manage keys)").set_checked(admin)
    page.get_by_role("button", name="Make key").click()
    panel = page.get_by_role("region", name=re.compile(f"New key “{name}”"))
    expect(panel).to_be_visible()
    expect(panel.get_by_text("won't be shown again")).to_be_visible()
    secret = panel.get_by_label("Secret key (shown once)")
    expect(secret).not_to_be_editable()
    value = secret.input_value()
    assert value
    return value


def test_keys_from_open_mode_to_one_gallery_per_key(browser, server, request):
    base = server["base"]
    for page, shots in open_page(browser, base, request):
        page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
        page.goto(base + "/#/keys")
        expect(page.get_by_role("heading", name="Keys", exact=True)).to_be_visible()
        expect(page.get_by_text("No keys yet: the server is open")).to_be_visible()
        # the first key must be an admin key: the server says so next to the checkbox
        page.get_by_label("Name", exact=True).fill("teacher")
        page.get_by_label("Admin (can manage keys)").set_checked(False)
        page.get_by_role("button", name="Make key").click()
        expect(page.locator("#key-admin-error")).to_contain_text("first API key must be an admin key")
        teacher = _make_key(page, "teacher", admin=True)
        assert httpx.get(base + "/v1/me", headers={"Authorization": f"Bearer {teacher}"}).json()["admin"] is True
        page.get_by_role("button", name="Copy secret key (shown once)").click()
        expect(page.get_by_text("Copied", exact=True)).to_be_visible()
        assert page.evaluate("navigator.clipboard.readText()") == teacher
        shots("first-key")
        # the server now wants a key: after a reload the page asks for one, and the secret is gone
        assert httpx.get(base + "/v1/gallery").status_code == 401
        page.reload()
        page.get_by_label("API key").fill(teacher)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_text("Signed in as teacher")).to_be_visible()
        expect(page.get_by_label("Secret key (shown once)")).to_have_count(0)
        keys = page.get_by_role("list", name="Keys")
        expect(keys.get_by_role("listitem")).to_have_count(1)
        pupil = _make_key(page, "pupil", admin=False)
        expect(keys.get_by_role("listitem")).to_have_count(2)
        expect(keys.get_by_role("listitem").filter(has_text="pupil")).not_to_contain_text("admin")
        shots("two-keys")
        page.get_by_role("button", name="Done").click()
        expect(page.get_by_label("Secret key (shown once)")).to_have_count(0)
        # the last admin key cannot be revoked: the server's reason shows next to its row
        row = keys.get_by_role("listitem").filter(has_text="teacher")
        row.get_by_role("button", name="Revoke teacher").click()
        row.get_by_role("button", name="Yes, revoke teacher").click()
        expect(row.get_by_role("alert")).to_contain_text("admin")
        shots("last-admin")

        _txt2img(base, teacher, "the teacher's blackboard")
        _txt2img(base, pupil, "the pupil's drawing")
        for pupil_page, pupil_shots in open_page(browser, base, request, key=pupil):
            pupil_page.goto(base + "/#/gallery")
            grid = pupil_page.get_by_role("list", name="Images")
            expect(grid.get_by_role("button")).to_have_count(1)
            expect(grid).to_contain_text("the pupil's drawing")
            expect(pupil_page.get_by_role("navigation").get_by_role("link", name="Gallery")).to_be_visible()
            expect(pupil_page.get_by_role("link", name="Keys")).to_have_count(0)
            pupil_shots("pupil-gallery")

            # the teacher revokes the pupil's key
            row = keys.get_by_role("listitem").filter(has_text="pupil")
            row.get_by_role("button", name="Revoke pupil").click()
            row.get_by_role("button", name="Yes, revoke pupil").click()
            expect(keys.get_by_role("listitem")).to_have_count(1)
            r = httpx.get(base + "/v1/gallery", headers={"Authorization": f"Bearer {pupil}"})
            assert r.status_code == 401
            # the pupil's page: its next call is refused and it asks for a key again
            pupil_page.get_by_label("Search prompts").fill("drawing")
            expect(pupil_page.get_by_label("API key")).to_be_visible()
            expect(pupil_page.locator("#signin-key-error")).to_contain_text("not accepted")
            expect(pupil_page.get_by_text("Signed in as")).to_have_count(0)
            expect(pupil_page.get_by_role("list", name="Images")).to_have_count(0)
            pupil_shots("revoked")

        # the teacher's gallery holds only the teacher's image
        page.get_by_role("link", name="Gallery").click()
        grid = page.get_by_role("list", name="Images")
        expect(grid.get_by_role("button")).to_have_count(1)
        expect(grid).to_contain_text("the teacher's blackboard")
        # the Keys page at phone width, dark
        page.set_viewport_size({"width": 390, "height": 844})
        page.emulate_media(color_scheme="dark")
        page.get_by_role("link", name="Keys").click()
        expect(keys.get_by_role("listitem")).to_have_count(1)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        shots("phone-dark")


def test_a_bad_key_is_not_accepted(browser, server, request):
    base = server["base"]
    for page, shots in open_page(browser, base, request, viewport={"width": 390, "height": 844}, color_scheme="dark"):
        page.goto(base + "/#/keys")
        page.get_by_label("API key").fill("pt_not-a-real-key")
        page.get_by_role("button", name="Sign in").click()
        error = page.locator("#signin-key-error")
        expect(error).to_contain_text("not accepted")
        expect(page.get_by_label("API key")).to_have_attribute("aria-describedby", "signin-key-error")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        shots("bad-key")
