"""A repository's recovery kit: everything needed to get the data back with restic alone,
on a fresh machine, with onwatch gone. It holds the repository's secrets; only owners may
download it, and every download is in the audit log."""

from __future__ import annotations

import json
import shlex
from datetime import datetime

from onwatch.backups import restic
from onwatch.backups.kinds import kind_of
from onwatch.backups.models import Plan, Repository, RunCopy
from onwatch.backups.services import left_out_copies, verified_copies, why_left_out
from onwatch.core import ssh

KEY_FILE, KNOWN_HOSTS_FILE = "onwatch-sftp-key", "onwatch-known-hosts"


def env_of(repository: Repository) -> dict[str, str]:
    if not repository.env:
        return {}
    found = json.loads(repository.env)
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def restic_command(repository: Repository) -> str:
    """`restic -r URL`, with the ssh command an SFTP repository's own key needs."""
    base = f"restic -r {shlex.quote(repository.url)}"
    target = restic.sftp_target(repository.url)
    if target is None or not repository.ssh_key:
        return base
    known_hosts = KNOWN_HOSTS_FILE if repository.known_hosts else None
    command = ssh.by_hand_command(target.endpoint, KEY_FILE, known_hosts, "sftp", subsystem=True)
    return f"{base} -o sftp.command={shlex.quote(command)}"


def setup_block(repository: Repository) -> str:
    lines = [f"export RESTIC_PASSWORD={shlex.quote(repository.password)}"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(env_of(repository).items())]
    return "\n".join(lines)


def sftp_section(repository: Repository) -> list[str]:
    if not repository.ssh_key:
        return []
    out = [
        "## The SSH key for the server",
        "",
        f"Save the key below as `{KEY_FILE}` in the directory you run restic from, then "
        f"`chmod 600 {KEY_FILE}`.",
        "",
        "```",
        repository.ssh_key.strip(),
        "```",
        "",
    ]
    if repository.known_hosts:
        out += [
            f"Save the server's host key below as `{KNOWN_HOSTS_FILE}` beside it, so ssh "
            "can tell it is talking to the right server:",
            "",
            "```",
            repository.known_hosts.strip(),
            "```",
            "",
        ]
    return out


# The newest verified snapshots listed per plan; older ones go by the keep-rules anyway.
LISTED = 10


def verified_list(verified: list[RunCopy]) -> list[str]:
    """The snapshots onwatch verified, newest first, by ID and date. Never restic's
    `latest`: a cut-off dump whose snapshot an append-only repository would not let onwatch
    remove is newer than the last good one, and tagged the same."""
    rows = []
    for copy in verified[:LISTED]:
        rows.append(f"| `{copy.snapshot_id}` | {copy.run.started_at:%Y-%m-%d %H:%M} UTC |")
    return [
        "The backups onwatch verified (the dump finished and its rows were counted), "
        "newest first. Restore one of these; restic may list other snapshots of this plan, "
        "from backups that failed.",
        "",
        "| snapshot ID | taken |",
        "|---|---|",
        *rows,
        "",
    ]


def plan_section(plan: Plan, repository: Repository, command: str) -> list[str]:
    source = plan.source
    head = [f"### Plan {plan.name}: {source.name} ({source.get_kind_display()})", ""]
    verified = verified_copies(plan, repository)
    left_out = left_out_lines(plan, repository)
    if not verified:
        return [*head, "onwatch has verified no backup of this plan here yet.", "", *left_out]
    steps = kind_of(source).kit_steps(plan, command, verified[0].snapshot_id)
    older = "For an older backup, put its ID from the list above in place of the newest one's."
    return [*head, *verified_list(verified), *left_out, *steps, "", older, ""]


def left_out_lines(plan: Plan, repository: Repository) -> list[str]:
    """Snapshots a drill could not restore: named with the reason, so nobody picks them
    from restic's own list."""
    lines = [f"- Do not use {why_left_out(c, d)}." for c, d in left_out_copies(plan, repository)]
    return [*lines, ""] if lines else []


def recovery_kit(repository: Repository, made_at: datetime, made_by: str) -> str:
    command = restic_command(repository)
    plans = list(repository.plans.select_related("source").order_by("name", "id"))
    out = [
        f"# Recovery kit: {repository.name}",
        "",
        f"Made by onwatch for {made_by} on {made_at:%Y-%m-%d %H:%M} UTC.",
        "",
        "With this file anyone can read every backup in this repository. Keep it offline "
        "and away from the servers it describes (a password manager or a printed copy in a "
        "safe), and download a new one when the repository's address or credentials change.",
        "",
        "## The repository",
        "",
        f"- Address: `{repository.url}`",
        f"- Provider: {repository.provider}"
        + (f", {repository.location}" if repository.location else ""),
        f"- Password: `{repository.password}`",
        "",
        "## Before you start",
        "",
        "Install restic (https://restic.net; `apt install restic` on Debian or Ubuntu). "
        "Then run these in the shell you will restore from; every command below needs them:",
        "",
        "```sh",
        setup_block(repository),
        "```",
        "",
        *sftp_section(repository),
        "## List the backups",
        "",
        "```sh",
        f"{command} snapshots",
        "```",
        "",
        "Each line is one backup: its ID, when it was taken, and its tags (`plan:N` says "
        "which plan made it). Some may be of backups that failed half-way and could not be "
        "removed: restore only the ones listed as verified under each plan below.",
        "",
        "## Restore",
        "",
    ]
    if not plans:
        out += ["No plan keeps copies here yet.", ""]
    for plan in plans:
        out += plan_section(plan, repository, command)
    return "\n".join(out)
