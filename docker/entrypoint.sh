#!/bin/sh
# Usage: web | worker | scheduler | migrate | <any manage.py command>
set -e
case "$1" in
  web)
    shift
    exec gunicorn config.wsgi:application \
      --bind "0.0.0.0:${PORT:-8000}" \
      --workers "${WEB_CONCURRENCY:-2}" \
      --timeout 60 --graceful-timeout 30 "$@"
    ;;
  worker)
    shift
    exec python manage.py rqworker high default low "$@"
    ;;
  scheduler)
    shift
    exec python manage.py rqscheduler "$@"
    ;;
  migrate)
    python manage.py migrate --no-input
    exec python manage.py load_default_templates
    ;;
  *)
    exec python manage.py "$@"
    ;;
esac
