"""`manage.py load_default_templates`: add the templates shipped in fixtures/templates/."""

import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from templates_app.models import EmailTemplate
from templates_app.services import template_create, template_update


class Command(BaseCommand):
    """Load the templates shipped in fixtures/templates/."""

    help = "Create the default templates that are missing (--update also overwrites existing ones)."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--dir", default=str(Path(settings.BASE_DIR) / "fixtures" / "templates")
        )
        parser.add_argument(
            "--update", action="store_true", help="Overwrite templates that already exist."
        )

    def handle(self, *args, dir: str, update: bool, **options) -> None:
        paths = sorted(Path(dir).glob("*.json"))
        if not paths:
            raise CommandError(f"No template files in {dir}")
        created = updated = 0
        for path in paths:
            data = json.loads(path.read_text())
            slug = data.pop("slug")
            existing = EmailTemplate.objects.filter(slug=slug).first()
            if existing is None:
                template_create(slug=slug, created_by="load_default_templates", **data)
                created += 1
            elif update:
                template_update(template=existing, created_by="load_default_templates", **data)
                updated += 1
        self.stdout.write(f"templates: {created} created, {updated} updated, {len(paths)} shipped")
