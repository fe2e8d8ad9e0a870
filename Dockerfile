# One image for every part: web (WSGI), gateway (aiohttp under gunicorn) and workers.
# Build stage: the virtualenv, from wheels only. Final stage: that virtualenv and the code,
# run as an unprivileged user; no compiler and no package manager step in it.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /venv
COPY requirements.lock /tmp/requirements.lock
# The lock (python -m scripts.lock): every package at its locked version, each file checked
# against its hash. Wheels only: a package without a wheel for this platform fails the build
# here, instead of pulling a compiler in.
RUN /venv/bin/pip install --require-hashes --only-binary=:all: -r /tmp/requirements.lock

FROM ${PYTHON_IMAGE}
ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 DJANGO_SETTINGS_MODULE=project.settings
RUN useradd --system --uid 10001 --no-create-home --home-dir /app --shell /usr/sbin/nologin chat
COPY --from=build /venv /venv
WORKDIR /app
# Owned by root and only readable by the app user: a compromised process cannot rewrite its code.
COPY . /app
# collectstatic needs settings but no database or secrets of the deployment: the hashed,
# compressed files WhiteNoise serves are part of the image.
RUN DEBUG=0 SECRET_KEY=build-only-not-a-secret python manage.py collectstatic --noinput \
    && python -m compileall -q /app
USER chat
# web 8000, gateway 8080, worker metrics 9100.
EXPOSE 8000 8080 9100
CMD ["gunicorn", "project.wsgi", "--bind", "0.0.0.0:8000", "--worker-tmp-dir", "/dev/shm", "--no-control-socket"]
