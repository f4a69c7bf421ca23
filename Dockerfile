# One image for every Mailqueue process: `web` (gunicorn), `worker`, `scheduler`, `migrate`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

RUN useradd --system --create-home --uid 1000 mailqueue

COPY pyproject.toml README.md ./
COPY config ./config
COPY mailqueue ./mailqueue
COPY templates_app ./templates_app
COPY tracking ./tracking
RUN pip install .

COPY manage.py ./
COPY fixtures ./fixtures
COPY docker/entrypoint.sh /usr/local/bin/mailqueue-entrypoint

# Static files are collected at build time and served by whitenoise from gunicorn.
RUN SECRET_KEY=build-only DATABASE_URL=sqlite:////tmp/build.sqlite3 \
    python manage.py collectstatic --no-input -v 0 \
 && chmod +x /usr/local/bin/mailqueue-entrypoint

USER mailqueue
EXPOSE 8000 2525
ENTRYPOINT ["mailqueue-entrypoint"]
CMD ["web"]
