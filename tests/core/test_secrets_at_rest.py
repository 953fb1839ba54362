"""No secret a person types into onwatch's forms (or its API) is readable in its database:
monitors' headers, bodies and URL passwords, channel URLs, repository and source
passwords, API tokens, sign-in passwords. The
database's own bytes are scanned (on SQLite a copy of the file, on PostgreSQL every row as
text), not values read back through the models."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse

from onwatch.backups.models import Repository
from onwatch.core.models import Organization
from onwatch.uptime.models import Monitor
from tests.support.backups import PgSource, pg_db, pg_parts
from tests.support.fixtures import PASSWORD, signed_in

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fast_passwords")]
__all__ = ["pg_db"]

HEADER_TOKEN = "hdr-Tok3n-aaaaaaaaaaaa"
URL_PASSWORD = "url-Pa55-bbbbbbbbbbbb"
BODY_SECRET = "body-S3cret-cccccccccc"
CHANNEL_TOKEN = "chan-Tok3n-dddddddddd"
REPO_ACCESS = "repo-Acc3ss-eeeeeeeeee"
SOURCE_PASSWORD = "src-Pa55-ffffffffffff"
SCRATCH_PASSWORD = "scratch-Pa55-gggggggg"
API_HEADER = "api-Key-hhhhhhhhhhhhhhh"


def posted(client: Client, url: str, data: dict[str, str]) -> None:
    r = client.post(url, data)
    assert r.status_code == 302, r.content.decode()[-2000:]


def add_monitor(client: Client) -> None:
    posted(
        client,
        "/monitors/add/http/",
        {
            "name": "Storefront",
            "interval": "60",
            "retry_interval": "20",
            "timeout": "10",
            "confirmations": "3",
            "config_url": f"https://shopper:{URL_PASSWORD}@shop.example.com/api",
            "config_method": "POST",
            "config_accepted_status_codes": "200-299",
            "config_headers": f"Authorization: Bearer {HEADER_TOKEN}",
            "config_body": f'{{"api_key": "{BODY_SECRET}"}}',
            "config_follow_redirects": "on",
            "config_verify_tls": "on",
            "config_cert_expiry_warn_days": "14",
        },
    )


def add_backup_setup(client: Client, tmp_path: Path, pg: PgSource) -> None:
    posted(
        client,
        reverse("backup_repository_add"),
        {
            "name": "office nas",
            "url": str(tmp_path / "nas"),
            "provider": "office",
            "env": f"AWS_SECRET_ACCESS_KEY={REPO_ACCESS}\n",
        },
    )
    host, port, user = pg_parts()
    posted(
        client,
        reverse("backup_source_add_kind", args=["postgresql"]),
        {
            "name": "shop db",
            "host": host,
            "port": str(port),
            "database": pg.name,
            "username": user,
            "password": SOURCE_PASSWORD,
            "provider": "hetzner",
            "scratch_url": f"postgresql://{user}:{SCRATCH_PASSWORD}@{host}:{port}/postgres",
            "smoke_queries": "",
        },
    )


def add_monitor_through_the_api(client: Client) -> str:
    """An API token made in its form, then a monitor sent with it as JSON; the token."""
    r = client.post(reverse("tokens"), {"name": "ci", "scopes": ["monitors:write"], "days": 30})
    found = re.search(r"ow_[0-9a-f]{8}_[A-Za-z0-9_-]{43}", r.content.decode())
    assert found, "the new token is on the page"
    config = {"url": "https://api.example.com/", "headers": {"X-Api-Key": API_HEADER}}
    made = Client().post(
        "/api/v1/monitors/",
        {"name": "Api", "kind": "http", "config": config},
        content_type="application/json",
        headers={"authorization": f"Bearer {found.group(0)}"},
    )
    assert made.status_code == 201, made.content
    return found.group(0)


def database_bytes(tmp_path: Path) -> bytes:
    if connection.vendor == "sqlite":
        # The test database lives in memory: copy it into a file and read that file.
        copy = tmp_path / "copy.sqlite3"
        with connection.cursor() as c:
            c.execute("VACUUM INTO %s", [str(copy)])
        return copy.read_bytes()
    found = []
    with connection.cursor() as c:
        for table in connection.introspection.table_names(c):
            c.execute(f"SELECT t::text FROM {connection.ops.quote_name(table)} t")  # noqa: S608  (names from the database)
            found += [row[0] for row in c.fetchall()]
    return "\n".join(found).encode()


def test_no_secret_typed_into_a_form_is_readable_in_the_database(
    org: Organization, members: dict[str, Any], tmp_path: Path, pg_db: PgSource
) -> None:
    client = signed_in(members["admin"])
    add_monitor(client)
    posted(
        client,
        "/channels/add/",
        {"name": "ops hook", "url": f"json://robot:{CHANNEL_TOKEN}@127.0.0.1:9/in"},
    )
    add_backup_setup(client, tmp_path, pg_db)
    api_token = add_monitor_through_the_api(client)
    # The one secret onwatch makes rather than takes is as secret as the rest.
    repo_password = Repository.objects.get(name="office nas").password
    assert Monitor.objects.get(name="Storefront").config["headers"] == {
        "Authorization": f"Bearer {HEADER_TOKEN}"
    }

    stored = database_bytes(tmp_path)
    # The scan sees plain text: names are there, the secrets are not.
    assert b"Storefront" in stored and b"ops hook" in stored and b"office nas" in stored
    typed = [
        HEADER_TOKEN,
        URL_PASSWORD,
        BODY_SECRET,
        CHANNEL_TOKEN,
        REPO_ACCESS,
        repo_password,
        SOURCE_PASSWORD,
        SCRATCH_PASSWORD,
        API_HEADER,
        api_token,  # kept hashed
        PASSWORD,  # the sign-in password: kept hashed
    ]
    readable = [secret for secret in typed if secret.encode() in stored]
    assert readable == []
