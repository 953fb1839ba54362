"""The expiry of the certificate a monitor last saw: pages count a warning's days left from
it when shown, so the words do not go stale while checks fail."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("uptime", "0004_uptime_encrypted_config"),
    ]

    operations = [
        migrations.AddField(
            model_name="monitor",
            name="cert_expires_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
