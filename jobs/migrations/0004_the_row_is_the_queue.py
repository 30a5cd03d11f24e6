"""The job row is the queue: ``dispatched_at`` (when a job was last handed to the
django-q2 broker) goes, and so do the tables django-q2 left (its queue, schedules and
task results), now that no app owns them."""

from django.db import migrations

DJANGO_Q_TABLES = ("django_q_ormq", "django_q_schedule", "django_q_task")


class Migration(migrations.Migration):
    dependencies = [("jobs", "0003_processheartbeat")]

    operations = [
        migrations.RemoveField(model_name="job", name="dispatched_at"),
        migrations.RunSQL(
            [f"DROP TABLE IF EXISTS {table}" for table in DJANGO_Q_TABLES],
            reverse_sql=migrations.RunSQL.noop,
        ),
    ]
