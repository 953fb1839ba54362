from __future__ import annotations

import pytest

from onwatch.alerts import apprise
from tests.support.receivers import SmtpReceiver, WebhookReceiver, closed_port_url


@pytest.mark.parametrize(
    ("url", "service"),
    [
        ("json://127.0.0.1:8080/hook", "json"),
        ("mailto://127.0.0.1:2525?from=a@example.com&to=b@example.com", "mailto"),
        ("  SLACK://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#ops ", "slack"),
    ],
)
def test_it_names_the_service_of_a_url_apprise_understands(url: str, service: str) -> None:
    assert apprise.service_of(url) == service


@pytest.mark.parametrize("url", ["bogus://x", "https://example.com/hook", "json://", "hello"])
def test_it_refuses_a_url_apprise_does_not_understand(url: str) -> None:
    with pytest.raises(apprise.ChannelError, match="Apprise does not understand this URL"):
        apprise.service_of(url)


def test_the_summary_shows_host_and_port_but_no_password_or_path() -> None:
    s = apprise.summarize("jsons://robot:s3cr3t-token@hooks.example.com:8443/in/SECRETPATH")
    assert s == apprise.Summary(service="jsons", location="hooks.example.com:8443")


@pytest.mark.parametrize("scheme", ["json", "xml", "form"])
def test_a_plain_http_web_hook_is_refused_beyond_this_machine(scheme: str) -> None:
    with pytest.raises(apprise.ChannelError, match=f"unencrypted; use {scheme}s://"):
        apprise.service_of(f"{scheme}://hooks.example.com/in")
    assert apprise.service_of(f"{scheme}s://hooks.example.com/in") == f"{scheme}s"
    assert apprise.service_of(f"{scheme}://localhost:8080/in") == scheme


def test_the_summary_hides_a_host_that_is_itself_a_token() -> None:
    s = apprise.summarize("discord://4174216298/JHMHI8qBe7bk2ZwO5U711o3dV_js")
    assert s == apprise.Summary(service="discord", location="")


def test_send_posts_title_and_body_to_a_real_webhook() -> None:
    with WebhookReceiver() as hooks:
        apprise.send(hooks.url("/in"), "Disk full", "on db-1")
    [hook] = hooks.hooks
    assert hook.path == "/in"
    assert (hook.json["title"], hook.json["message"]) == ("Disk full", "on db-1")


def test_send_mails_a_real_smtp_server() -> None:
    with SmtpReceiver() as smtp:
        apprise.send(smtp.url(to="ops@example.com"), "Disk full", "on db-1")
    [mail] = smtp.mails
    assert mail.rcpt_tos == ["ops@example.com"]
    assert mail.subject == "Disk full"
    assert "on db-1" in mail.text


def test_a_refusing_endpoint_fails_with_its_status() -> None:
    with WebhookReceiver(then=500) as hooks, pytest.raises(apprise.ChannelError) as e:
        apprise.send(hooks.url(), "t", "b")
    assert "error=500" in str(e.value)
    assert len(hooks.hooks) == 1


def test_an_unreachable_endpoint_fails_with_a_connection_error() -> None:
    with pytest.raises(apprise.ChannelError, match="Connection error"):
        apprise.send(closed_port_url(), "t", "b")


@pytest.mark.parametrize(
    ("service", "location", "flagged"),
    [
        ("json", "hooks.example.com:8443", True),
        ("json", "127.0.0.1:8080", False),
        ("json", "[::1]:8080", False),
        ("jsons", "hooks.example.com", False),
        ("slack", "", False),
    ],
)
def test_stored_channels_crossing_the_network_unencrypted_are_told_apart(
    service: str, location: str, flagged: bool
) -> None:
    assert apprise.crosses_network_unencrypted(service, location) is flagged
