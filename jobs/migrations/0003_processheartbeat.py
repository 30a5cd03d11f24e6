"""ProcessHeartbeat moves here from the runtimes app (jobs/heartbeats.py): the model
state only; its table (``runtimes_processheartbeat``), index and rows are kept."""

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("jobs", "0002_job_progress_deadline"),
        ("runtimes", "0003_processheartbeat_to_jobs"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name="ProcessHeartbeat",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("instance", models.CharField(max_length=64, unique=True)),
                        (
                            "role",
                            models.CharField(
                                choices=[
                                    ("web", "web"),
                                    ("worker", "worker"),
                                    ("sandbox_host", "sandbox host"),
                                ],
                                max_length=20,
                            ),
                        ),
                        ("hostname", models.CharField(max_length=255)),
                        ("pid", models.PositiveIntegerField()),
                        ("started_at", models.DateTimeField(default=django.utils.timezone.now)),
                        ("seen_at", models.DateTimeField(default=django.utils.timezone.now)),
                        ("stopped_at", models.DateTimeField(blank=True, null=True)),
                        ("meta", models.JSONField(blank=True, default=dict)),
                    ],
                    options={
                        "db_table": "runtimes_processheartbeat",
                        "indexes": [
                            models.Index(
                                fields=["role", "seen_at"], name="runtimes_pr_role_4e1b47_idx"
                            )
                        ],
                    },
                ),
            ],
        ),
    ]
