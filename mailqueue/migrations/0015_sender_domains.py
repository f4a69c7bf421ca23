"""Sender domains, and for an upgrade, every domain each client already sends from registered
as verified by an operator (so that no existing sender starts getting 400s)."""

import django.db.models.deletion
from django.db import migrations, models

import mailqueue.models


def register_domains_in_use(apps, schema_editor) -> None:
    """Register the from_email and reply_to domains of each client's existing emails."""
    from mailqueue.services.sender_domains import sender_domains_backfill

    sender_domains_backfill(
        email_model=apps.get_model("mailqueue", "EmailJob"),
        domain_model=apps.get_model("mailqueue", "SenderDomain"),
        using=schema_editor.connection.alias,
    )


class Migration(migrations.Migration):
    dependencies = [
        ("mailqueue", "0014_batch_schedule_runs"),
    ]

    operations = [
        migrations.CreateModel(
            name="SenderDomain",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("domain", models.CharField(max_length=253)),
                (
                    "verification_token",
                    models.CharField(
                        default=mailqueue.models.sender_domain_token,
                        editable=False,
                        max_length=64,
                    ),
                ),
                ("verified_at", models.DateTimeField(blank=True, null=True)),
                (
                    "verified_by",
                    models.CharField(
                        blank=True,
                        choices=[("dns", "DNS TXT record"), ("operator", "operator")],
                        default="",
                        max_length=10,
                    ),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "client",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="sender_domains",
                        to="mailqueue.client",
                    ),
                ),
            ],
            options={
                "db_table": "sender_domains",
                "ordering": ["domain", "id"],
                "indexes": [models.Index(fields=["domain"], name="sender_domain_domain")],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("client", "domain"), name="sender_domain_client_domain"
                    )
                ],
            },
        ),
        migrations.RunPython(register_domains_in_use, migrations.RunPython.noop),
    ]
