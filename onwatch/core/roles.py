"""Roles and the permission table: the one place that says who may do what.

Every view declares exactly one permission (see decorators.py); the matrix test walks
every URL × every role against this table.
"""

from __future__ import annotations

from django.db import models


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    DEPLOYER = "deployer", "Deployer"
    VIEWER = "viewer", "Viewer"


RANK = {Role.VIEWER: 0, Role.DEPLOYER: 1, Role.ADMIN: 2, Role.OWNER: 3}

# permission -> the least role that holds it (every higher role holds it too)
PERMISSIONS: dict[str, tuple[Role, str]] = {
    "dashboard.view": (Role.VIEWER, "See the dashboard"),
    "channels.view": (Role.VIEWER, "See alert channels and the delivery log"),
    "channels.test": (Role.DEPLOYER, "Send a test notification"),
    "channels.manage": (Role.ADMIN, "Add, change and remove alert channels"),
    # Where one hears of one's own pushes is one's own business, like one's API tokens.
    "ownchannel.manage": (
        Role.VIEWER,
        "Set, test and remove one's own channel (where one hears about one's own pushes)",
    ),
    "incidents.view": (
        Role.VIEWER,
        "See incidents and their timelines, escalation policies and maintenance windows",
    ),
    "incidents.respond": (Role.DEPLOYER, "Acknowledge and resolve incidents and add notes to them"),
    "policies.manage": (Role.ADMIN, "Add, change and remove escalation policies"),
    "maintenance.manage": (Role.DEPLOYER, "Plan, change and remove maintenance windows"),
    "monitors.view": (Role.VIEWER, "See monitors, their uptime, response times and pings"),
    # Deployers ship the services, so they add the checks for them; who gets paged
    # (channels, policies) stays with admins.
    "monitors.manage": (Role.DEPLOYER, "Add, change, pause and remove monitors"),
    "statuspages.manage": (
        Role.ADMIN,
        "Add, change and remove public status pages and choose what they show",
    ),
    "jobs.view": (Role.VIEWER, "See background jobs and their logs"),
    # A job that sends an alert also needs channels.manage (jobs.cancel, may_stop_alerts).
    "jobs.cancel": (Role.DEPLOYER, "Cancel a queued or running background job, except alerts"),
    "backups.view": (Role.VIEWER, "See backup plans, runs, restore drills, RPO and RTO"),
    "backups.run": (Role.DEPLOYER, "Start a backup or a restore drill now"),
    "backups.manage": (Role.ADMIN, "Add, change and remove backup sources, repositories and plans"),
    "backups.restore": (Role.ADMIN, "Restore a snapshot into a new database or directory"),
    "backups.recoverykit": (
        Role.OWNER,
        "Download a repository's recovery kit (its URL, password and restic commands)",
    ),
    "services.view": (Role.VIEWER, "See services, their pipelines, steps and logs"),
    # Deployers ship the services, so they run their tests; what a service fetches and
    # which secrets its steps get stays with admins.
    "pipelines.run": (Role.DEPLOYER, "Run a service's pipeline now"),
    "services.manage": (Role.ADMIN, "Add and change services, their deploy keys and secrets"),
    "hosts.view": (Role.VIEWER, "See hosts, their checks, provider and monthly cost"),
    # Installing tools on a host and choosing its rights stay with admins.
    "hosts.manage": (Role.ADMIN, "Add, check, prepare, change and remove hosts"),
    "errors.view": (Role.VIEWER, "See error projects, their issues and events"),
    # A DSN lets anyone send events into the project, so making and rotating them is
    # the admins', as channels are.
    "errors.manage": (Role.ADMIN, "Add error projects, change them, rotate and revoke their DSN"),
    # Those who ship the fixes say what is fixed; nothing here changes what is collected.
    "errors.triage": (Role.DEPLOYER, "Resolve, ignore, merge and split error issues"),
    "deploys.run": (Role.DEPLOYER, "Deploy a service's commit, or roll it back to a kept release"),
    "members.view": (Role.VIEWER, "See who is a member and in which role"),
    "members.manage": (Role.ADMIN, "Invite members, change roles, remove members"),
    "tokens.manage": (Role.VIEWER, "Create and revoke one's own API tokens"),
    # Only one's own; what a key may then do (push, fetch) is the role's, checked per push.
    "sshkeys.manage": (Role.VIEWER, "Add and remove one's own SSH keys (for git push)"),
    "audit.view": (Role.ADMIN, "Read the audit log"),
    "org.manage": (Role.OWNER, "Rename the organization, make or remove owners"),
}

# API token scopes -> the permission each one stands for. A token can never do more than
# its owner's role allows at the time of the request.
SCOPES: dict[str, str] = {
    "channels:read": "channels.view",
    "channels:test": "channels.test",
    "jobs:read": "jobs.view",
    "jobs:cancel": "jobs.cancel",
    "audit:read": "audit.view",
    "monitors:read": "monitors.view",
    "monitors:write": "monitors.manage",
    "incidents:read": "incidents.view",
    "incidents:write": "incidents.respond",
    "policies:read": "incidents.view",
    "policies:write": "policies.manage",
    "maintenance:read": "incidents.view",
    "maintenance:write": "maintenance.manage",
    "services:read": "services.view",
    "services:write": "services.manage",
    "pipelines:run": "pipelines.run",
    "deploys:run": "deploys.run",
    "sshkeys:write": "sshkeys.manage",
    "hosts:read": "hosts.view",
    "hosts:write": "hosts.manage",
    "errors:read": "errors.view",
    "errors:write": "errors.manage",
    "errors:triage": "errors.triage",
}


def has_permission(role: str, permission: str) -> bool:
    least, _ = PERMISSIONS[permission]
    return RANK[Role(role)] >= RANK[least]


def permission_table() -> list[tuple[str, str, list[bool]]]:
    """Rows for the documented table: permission, description, held by each role."""
    roles = [Role.OWNER, Role.ADMIN, Role.DEPLOYER, Role.VIEWER]
    return [
        (name, desc, [has_permission(r, name) for r in roles])
        for name, (_, desc) in PERMISSIONS.items()
    ]


def role_change_refusal(
    actor_role: str, current: str, new: str | None, *, is_self: bool, owners: int
) -> str | None:
    """Why a member in `actor_role` may not move someone from `current` to `new` (None:
    removal), or None when they may. `owners` counts the organization's owners now."""
    if is_self:
        return "Nobody changes their own role or removes themselves; ask another owner or admin."
    if not has_permission(actor_role, "members.manage"):
        return "Your role cannot change members; ask an owner or admin."
    touches_owner = Role.OWNER in (current, new)
    if touches_owner and not has_permission(actor_role, "org.manage"):
        return "Only an owner can make or remove owners; ask one of them."
    if current == Role.OWNER and new != Role.OWNER and owners <= 1:
        return "This is the last owner; make someone else an owner first."
    return None


def roles_grantable_by(actor_role: str) -> list[Role]:
    """The roles a member may hand out in invites or role changes: owners any, admins up
    to admin (making owners needs org.manage)."""
    allowed = [Role.ADMIN, Role.DEPLOYER, Role.VIEWER]
    if has_permission(actor_role, "org.manage"):
        allowed.insert(0, Role.OWNER)
    return allowed if has_permission(actor_role, "members.manage") else []


def scopes_for(role: str) -> list[str]:
    """Scopes worth offering on a new token: a token never does more than its owner's role."""
    return [scope for scope, permission in SCOPES.items() if has_permission(role, permission)]


def markdown_table() -> str:
    """The tables in docs/permissions.md, generated so the document cannot drift."""
    lines = [
        "| permission | what it allows | owner | admin | deployer | viewer |",
        "|---|---|:-:|:-:|:-:|:-:|",
    ]
    for name, desc, held in permission_table():
        marks = " | ".join("yes" if h else "—" for h in held)
        lines.append(f"| `{name}` | {desc} | {marks} |")
    lines += ["", "| API token scope | stands for permission |", "|---|---|"]
    lines += [f"| `{scope}` | `{perm}` |" for scope, perm in SCOPES.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    # `python -m onwatch.core.roles` prints the tables to paste into docs/permissions.md.
    print(markdown_table(), end="")
