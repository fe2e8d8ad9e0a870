# One image for every part: web (WSGI), gateway (aiohttp under gunicorn) and workers.
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /venv
COPY requirements.txt /tmp/requirements.txt
# Wheels only: no compiler in the image, none needed.
RUN /venv/bin/pip install --only-binary=:all: -r /tmp/requirements.txt

FROM python:3.11-slim
ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 DJANGO_SETTINGS_MODULE=project.settings
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin chat
COPY --from=build /venv /venv
WORKDIR /app
COPY --chown=chat:chat . /app
# collectstatic needs settings but no database or secrets of the deployment.
RUN DEBUG=0 SECRET_KEY=build-only python manage.py collectstatic --noinput
USER chat
EXPOSE 8000 8080
CMD ["gunicorn", "project.wsgi", "--bind", "0.0.0.0:8000"]
