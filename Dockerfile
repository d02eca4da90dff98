# The relay in a container: Python, the system's libsrt for SRT ingest, the ffmpeg from imageio-ffmpeg.
# Most of the image is that ffmpeg (a static build, ~170 MB); the rest is the slim base and our wheels.
# Build and run: README.md, "Running in containers"; tests/containers builds and runs it as is.
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends libsrt1.5-openssl ca-certificates \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
WORKDIR /app
COPY pyproject.toml README.md ./
COPY relay ./relay
COPY api ./api
RUN pip install --no-cache-dir . \
 && rm -rf /app/build /app/*.egg-info
ENV RELAY_DATA_DIR=/data \
    RELAY_BIND=0.0.0.0
VOLUME ["/data"]
EXPOSE 8080 1935 1936 5001/udp
STOPSIGNAL SIGTERM
ENTRYPOINT ["restream-relay"]
CMD ["serve", "--announce"]
