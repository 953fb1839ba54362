"""Monitor settings are encrypted at rest: header values, request bodies and passwords in
URLs were readable in the database file while every other secret was not."""

from typing import Any

from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

import onwatch.core.fields

CONTEXT = "uptime.monitor.config"  # EncryptedJSONField.context of Monitor.config


def _rewrite(editor: BaseDatabaseSchemaEditor, seal: bool) -> None:
    # Raw rows: the model's field would try to decrypt what is still plain JSON.
    from onwatch.core.keyring import get_keyring

    with editor.connection.cursor() as cursor:
        cursor.execute("SELECT id, config FROM uptime_monitor")
        rows = cursor.fetchall()
        if not rows:
            return  # a new database: no key file needed yet
        ring = get_keyring()
        for pk, value in rows:
            if seal:
                new = ring.encrypt(value, CONTEXT)
            else:
                new = ring.decrypt(value, CONTEXT)
            cursor.execute("UPDATE uptime_monitor SET config = %s WHERE id = %s", [new, pk])


def zero_freed_pages(apps: Any, editor: BaseDatabaseSchemaEditor) -> None:
    # SQLite copies the table to change the column's type; the plain rows of the old one
    # would linger in the file's free pages. Overwrite what is freed from here on.
    if editor.connection.vendor == "sqlite":
        with editor.connection.cursor() as cursor:
            cursor.execute("PRAGMA secure_delete = ON")


def encrypt(apps: Any, editor: BaseDatabaseSchemaEditor) -> None:
    _rewrite(editor, seal=True)


def decrypt(apps: Any, editor: BaseDatabaseSchemaEditor) -> None:
    _rewrite(editor, seal=False)


class Migration(migrations.Migration):
    dependencies = [
        ("uptime", "0003_alerts_since_and_warning"),
    ]

    operations = [
        migrations.RunPython(zero_freed_pages, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="monitor",
            name="config",
            field=onwatch.core.fields.EncryptedJSONField(blank=True, default=dict),
        ),
        migrations.RunPython(encrypt, decrypt),
    ]
