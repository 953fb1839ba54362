from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("core", "0001_initial")]

    operations = [
        # Entries already written keep their unkeyed hash (scheme 1) until `onwatch migrate`
        # seals them with the key; new ones are keyed (scheme 2).
        migrations.AddField(
            model_name="auditentry",
            name="scheme",
            field=models.PositiveSmallIntegerField(default=1),
        ),
        migrations.AlterField(
            model_name="auditentry",
            name="scheme",
            field=models.PositiveSmallIntegerField(default=2),
        ),
        migrations.AddField(
            model_name="auditentry",
            name="key_id",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="auditentry",
            name="seals",
            field=models.JSONField(default=dict),
        ),
    ]
