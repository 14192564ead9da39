# orcid-gatekeeper: the service under gunicorn.
#   docker build -t orcid-gatekeeper .
#   docker run -p 127.0.0.1:8000:8000 -e SECRET_KEY=... -e ORCID_CLIENT_ID=... -e ORCID_CLIENT_SECRET=... \
#     -e REDIS_URL=redis://redis:6379/0 -e PUBLIC_URL=https://data.example.org \
#     -v /srv/gatekeeper/policies:/app/policies:ro orcid-gatekeeper
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY app ./app
# app/examples/policies links to the example policies: the wheel carries them.
COPY policies ./policies
# A wheel of the project and its runtime dependencies only: no test extras.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GUNICORN_BIND=0.0.0.0:8000 \
    POLICY_PATH=/app/policies
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin gatekeeper
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/* && rm -rf /wheels
WORKDIR /app
COPY --chown=root:root policies ./policies
USER gatekeeper
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"]
# gunicorn with the packaged configuration (app/gunicorn_config.py); arguments go to gunicorn.
ENTRYPOINT ["gatekeeper", "serve"]
