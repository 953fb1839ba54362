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
    "jobs.view": (Role.VIEWER, "See background jobs and their logs"),
    "members.view": (Role.VIEWER, "See who is a member and in which role"),
    "members.manage": (Role.ADMIN, "Invite members, change roles, remove members"),
    "tokens.manage": (Role.VIEWER, "Create and revoke one's own API tokens"),
    "audit.view": (Role.ADMIN, "Read the audit log"),
    "org.manage": (Role.OWNER, "Rename the organization, make or remove owners"),
}

# API token scopes -> the permission each one stands for. A token can never do more than
# its owner's role allows at the time of the request.
SCOPES: dict[str, str] = {
    "channels:read": "channels.view",
    "channels:test": "channels.test",
    "jobs:read": "jobs.view",
    "audit:read": "audit.view",
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
