"""People's SSH keys for `git push`: checked with one clear line, one person's each, and
written into the managed block of the authorized_keys file, whose other lines stay."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from onwatch.cli import push_keys_notice
from onwatch.core import pushkeys, ssh
from onwatch.core.models import AuditEntry, Organization, SshKey
from onwatch.core.services import KeyRefused, add_ssh_key, issue_token, remove_ssh_key
from tests.support.fixtures import make_member, signed_in

OTHER = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVYpRBhC7Eoc5m+Xz2Pmg1VtLb5R4hJvPgCuj7sOv5N admin"


def new_key(path: Path, kind: str = "ed25519", bits: str = "") -> str:
    args = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "ana@laptop", "-f", str(path)]
    subprocess.run(args + (["-b", bits] if bits else []), check=True)
    return Path(f"{path}.pub").read_text()


@pytest.mark.once
@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("", "give exactly one public key"),
        (f"{OTHER}\n{OTHER}", "give exactly one public key"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----", "that is not an SSH public key"),
        (f'command="sh" {OTHER}', "that is not an SSH public key"),
        ("ssh-ed25519 AAAA%%%", "the public key is damaged (its base64 part does not decode)"),
        (OTHER.replace("ssh-ed25519", "ssh-rsa"), "it says ssh-rsa but holds another type"),
    ],
)
def test_a_bad_public_key_gets_one_clear_line(text: str, said: str) -> None:
    with pytest.raises(ssh.SshError) as e:
        ssh.parse_public_key(text)
    assert said in str(e.value) and "\n" not in str(e.value)


@pytest.mark.once
def test_a_weak_rsa_key_is_refused_and_real_keys_are_taken(tmp_path: Path) -> None:
    with pytest.raises(ssh.SshError, match="an RSA key of 1024 bits is too weak"):
        ssh.parse_public_key(new_key(tmp_path / "rsa", "rsa", "1024"))
    for kind in ("ed25519", "ecdsa"):
        text = new_key(tmp_path / kind, kind)
        key = ssh.parse_public_key(text)
        shown = subprocess.run(
            ["ssh-keygen", "-lf", f"{tmp_path / kind}.pub"], capture_output=True, text=True
        ).stdout
        assert key.fingerprint == shown.split()[1] and key.comment == "ana@laptop"


@pytest.mark.once
def test_the_managed_block_keeps_foreign_lines_and_is_replaced_in_place() -> None:
    foreign = f"# mine\n{OTHER}\n"
    key = SshKey(pk=7, public_key="ssh-ed25519 AAAAkey")
    first = pushkeys.merged(foreign, [key])
    assert first.startswith(foreign + pushkeys.BEGIN + "\n")
    assert first.endswith(f"ssh-ed25519 AAAAkey onwatch-key-7\n{pushkeys.END}\n")
    line = first.splitlines()[3]
    assert line.startswith('restrict,command="') and " git-serve --env-file " in line
    # Lines the administrator adds after onwatch's block stay where they are.
    edited = first + "ssh-rsa AAAAlater later\n"
    assert pushkeys.merged(edited, []) == (
        f"{foreign}{pushkeys.BEGIN}\n{pushkeys.END}\nssh-rsa AAAAlater later\n"
    )
    with pytest.raises(pushkeys.KeyFileError, match="has onwatch's first marker line but not"):
        pushkeys.merged(f"{pushkeys.BEGIN}\n{OTHER}\n", [key])


@pytest.mark.django_db
def test_a_key_is_one_persons_written_at_once_and_audited(
    org: Organization, tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ONWATCH_OWNER_PASSWORD", "owner-password-never-kept")
    path = tmp_path / "ssh" / "authorized_keys"
    settings.AUTHORIZED_KEYS = path
    ana, bob = make_member(org, "deployer", mfa=False), make_member(org, "viewer", mfa=False)
    text = new_key(tmp_path / "ana")
    key = add_ssh_key(ana, text)
    assert key.name == "ana@laptop" and key.user == ana
    assert path.stat().st_mode & 0o777 == 0o600 and text.split()[1] in path.read_text()
    with pytest.raises(KeyRefused, match=r"already added \(a key belongs to one person\)"):
        add_ssh_key(bob, text)
    entry = AuditEntry.objects.filter(action="ssh-key-added").get()
    assert entry.org == org and key.fingerprint in entry.target
    remove_ssh_key(key)
    assert text.split()[1] not in path.read_text()
    assert AuditEntry.objects.filter(action="ssh-key-removed").count() == 1
    # What git-serve runs with, for sshd passes on nothing; readable by onwatch's user only.
    env = settings.DATA_DIR / "git-serve.env"
    assert env.stat().st_mode & 0o777 == 0o600
    kept = json.loads(env.read_text())
    assert kept["ONWATCH_DATA_DIR"] == str(settings.DATA_DIR)
    assert "ONWATCH_OWNER_PASSWORD" not in kept and "ONWATCH_KEY_FILE" in kept


@pytest.mark.django_db
def test_a_file_onwatch_cannot_write_is_said_in_one_line(
    org: Organization, tmp_path: Path, settings: Any
) -> None:
    (tmp_path / "a-file").write_text("")
    settings.AUTHORIZED_KEYS = tmp_path / "a-file" / "authorized_keys"
    ana = make_member(org, "deployer", mfa=False)
    with pytest.raises(pushkeys.KeyFileError, match=r"onwatch could not write .* set ONWATCH_AUTH"):
        add_ssh_key(ana, new_key(tmp_path / "ana"))


@pytest.mark.django_db
def test_people_add_and_remove_their_own_keys_on_their_page_and_with_the_api(
    org: Organization, tmp_path: Path, fast_passwords: None
) -> None:
    ana, bob = make_member(org, "viewer"), make_member(org, "deployer")
    page = signed_in(ana)
    added = page.post(reverse("ssh_keys"), {"key": new_key(tmp_path / "ana"), "name": "laptop"})
    assert added.status_code == 302
    [key] = SshKey.objects.filter(user=ana)
    shown = page.get(reverse("ssh_keys")).content.decode()
    assert "laptop" in shown and key.fingerprint in shown
    bad = page.post(reverse("ssh_keys"), {"key": "hello"}).content.decode()
    assert "That is not an SSH public key" in bad
    # Someone else's key: not found, and still there.
    assert signed_in(bob).post(reverse("ssh_keys"), {"remove": key.pk}).status_code == 404
    assert page.post(reverse("ssh_keys"), {"remove": key.pk}).status_code == 302
    assert not SshKey.objects.exists()

    raw = issue_token(bob, org, "ci", ["sshkeys:write"], 1).raw
    api = Client(headers={"authorization": f"Bearer {raw}"})
    url = reverse("api_ssh_keys")
    made = api.post(url, {"key": new_key(tmp_path / "bob")}, content_type="application/json")
    assert made.status_code == 201 and made.json()["name"] == "ana@laptop"
    assert [k["id"] for k in api.get(url).json()["ssh_keys"]] == [made.json()["id"]]
    refused = api.post(url, {"key": "ssh-rsa AAAA"}, content_type="application/json")
    assert refused.status_code == 400 and "damaged" in refused.json()["error"]
    gone = api.post(reverse("api_ssh_key_remove", args=[made.json()["id"]]))
    assert gone.status_code == 200 and not SshKey.objects.exists()


@pytest.mark.django_db
def test_each_start_writes_the_keys_and_settings_again(
    org: Organization, tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.AUTHORIZED_KEYS = tmp_path / "authorized_keys"
    env = settings.DATA_DIR / "git-serve.env"
    assert push_keys_notice() == []
    assert not settings.AUTHORIZED_KEYS.exists()  # nobody pushes: the file stays untouched
    add_ssh_key(make_member(org, "deployer", mfa=False), new_key(tmp_path / "ana"))
    # Started again with another setting: git-serve must run with it too.
    monkeypatch.setenv("ONWATCH_JOB_LEASE_SECONDS", "45")
    assert push_keys_notice() == []
    assert json.loads(env.read_text())["ONWATCH_JOB_LEASE_SECONDS"] == "45"
    settings.AUTHORIZED_KEYS.unlink()
    settings.AUTHORIZED_KEYS.mkdir()
    [warning] = push_keys_notice()
    assert warning.startswith("onwatch: warning: git push to onwatch cannot work until this is")
    assert "onwatch could not write" in warning
