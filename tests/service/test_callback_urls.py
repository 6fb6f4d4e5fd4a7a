"""Where webhooks may go: private, loopback and link-local targets are refused unless allowed.

IP literals need no lookup; names use a stand-in resolver, so nothing here leaves the machine."""

from __future__ import annotations

import re

import pytest

from pictale.core.errors import CallbackRefused
from pictale.service.webhooks.urls import check_callback_url


def no_lookup(host, port):
    raise AssertionError(f"{host} must not be looked up")


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:9000/hook", "127.0.0.1 is a loopback address"),
        ("http://127.8.9.10/hook", "is a loopback address"),
        ("http://[::1]:8080/", "::1 is a loopback address"),
        ("http://[::ffff:127.0.0.1]/", "is a loopback address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
        ("http://[fe80::1]/", "is a link-local address"),
        ("http://10.0.0.1/", "10.0.0.1 is a private address"),
        ("https://172.16.5.4/", "is a private address"),
        ("http://192.168.1.10:7860/", "is a private address"),
        ("http://[fd00::1]/", "is a private address"),
        ("http://0.0.0.0:80/", "is a private address"),
        ("http://100.64.0.1/", "not a public address"),
        ("http://224.0.0.1/", "is a multicast address"),
    ],
)
def test_private_targets_are_refused(url, why):
    def resolver(host, port):
        raise OSError("no such host")

    with pytest.raises(CallbackRefused) as info:
        check_callback_url(url, resolver=resolver)
    assert info.value.param == "callback_url" and info.value.status == 422
    assert why in info.value.message and info.value.message.startswith("callback_url")


@pytest.mark.parametrize("host", ["2130706433", "0x7f.1", "127.1", "017700000001"])
def test_numeric_spellings_of_loopback_are_refused(host):
    """Old inet_aton spellings are names to urllib; the system resolver parses them locally (no lookup)."""
    with pytest.raises(
        CallbackRefused, match=re.escape(f"'{host}' resolves to 127.0.0.1, which is a loopback address")
    ):
        check_callback_url(f"http://{host}/hook")


def test_public_addresses_pass_without_a_lookup():
    check_callback_url("https://93.184.216.34/hook", resolver=no_lookup)
    check_callback_url("http://[2606:4700:4700::1111]:8443/x", resolver=no_lookup)


def test_every_resolved_address_is_checked():
    answers = {"good.example": ["93.184.216.34"], "sly.example": ["93.184.216.34", "10.1.2.3"]}
    check_callback_url("https://good.example/hook", resolver=lambda h, p: answers[h])
    with pytest.raises(CallbackRefused) as info:
        check_callback_url("https://sly.example/hook", resolver=lambda h, p: answers[h])
    assert "'sly.example' resolves to 10.1.2.3, which is a private address" in info.value.message
    seen = []
    check_callback_url("https://good.example:8443/x", resolver=lambda h, p: seen.append((h, p)) or ["1.1.1.1"])
    assert seen == [("good.example", 8443)]


def test_unresolvable_names_and_bad_urls():
    def fail(host, port):
        raise OSError("nope")

    with pytest.raises(CallbackRefused, match=re.escape("host 'nowhere.invalid' does not resolve")):
        check_callback_url("http://nowhere.invalid/", resolver=fail)
    with pytest.raises(CallbackRefused, match="absolute http:// or https://"):
        check_callback_url("ftp://93.184.216.34/", resolver=no_lookup)
    with pytest.raises(CallbackRefused, match="invalid port"):
        check_callback_url("http://93.184.216.34:99999/", resolver=no_lookup)


def test_the_setting_allows_private_targets():
    check_callback_url("http://127.0.0.1:9000/hook", allow_private=True, resolver=no_lookup)
    check_callback_url("http://169.254.169.254/", allow_private=True, resolver=no_lookup)
    with pytest.raises(CallbackRefused):
        check_callback_url("gopher://127.0.0.1/", allow_private=True, resolver=no_lookup)
