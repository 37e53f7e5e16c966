# m1lite: one process, one data directory (/data, keep it on a named volume).
#
#   docker build -t m1lite .
#   docker run -d -p 8080:8080 -v m1data:/data -e M1LITE_ADMIN_PASSWORD=... m1lite
#
# Every dependency ships manylinux wheels for CPython 3.11, so no compiler or apt
# packages are needed. The Debian release is pinned so a rebuild does not change it.

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY m1lite/ m1lite/
# A wheel, so the runtime image holds the installed package and not the source tree.
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    M1LITE_DATA=/data \
    M1LITE_HOST=0.0.0.0 \
    M1LITE_PORT=8080

# A fixed uid, so a volume's ownership stays right across image rebuilds.
RUN groupadd --system --gid 10001 m1lite \
    && useradd --system --no-log-init --uid 10001 --gid m1lite --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin m1lite \
    && mkdir /data \
    && chown m1lite:m1lite /data

COPY --from=build /wheels/ /wheels/
# No dev extras: the runtime dependencies from pyproject.toml only.
RUN pip install --no-cache-dir /wheels/*.whl \
    && rm -rf /wheels

# Declared after /data is created and chowned, so a new named volume starts out owned
# by m1lite (Docker copies the image directory's ownership into an empty volume).
VOLUME /data
EXPOSE 8080
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001

# slim has no curl, so Python asks /ping (no token needed); the port follows M1LITE_PORT.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('M1LITE_PORT', '8080'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/ping', timeout=4).status == 200 else 1)"]

# SIGTERM makes m1lite stop accepting requests and commit every queued event before it
# exits; m1lite gives open requests up to 8 s, inside `docker stop`'s default 10 s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["m1lite"]
CMD ["serve"]
