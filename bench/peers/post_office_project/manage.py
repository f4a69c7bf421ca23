#!/usr/bin/env python
"""manage.py of the post_office peer (run with bench/.venv-peers/bin/python)."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "po_project.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
