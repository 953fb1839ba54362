from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("deploys", "0020_fix12_watch_unread_seconds"),
    ]

    operations = [
        migrations.AddField(
            model_name="watch",
            name="hosts",
            field=models.JSONField(blank=True, default=list),
        ),
    ]
