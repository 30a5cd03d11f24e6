"""ProcessHeartbeat now belongs to the jobs app (jobs/heartbeats.py): only the model
state moves; the table, its index and its rows stay where they are."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("runtimes", "0002_remote_runtimes"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="ProcessHeartbeat")],
            database_operations=[],
        ),
    ]
