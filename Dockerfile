# CPU image of `zhangcolor serve`: the web page and the REST API on port 8000.
#
#   docker build -t zhangcolor .
#   docker run --rm -p 8000:8000 zhangcolor          # then open http://localhost:8000/
#
# Not yet built: written to be correct by reading, its RUN steps mirror .ci/run
# (tests/test_project.py checks that); see docs/docker.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The CPU builds of torch and torchvision first (about 1 GB less than the default CUDA build);
# installing the project afterwards finds its torch requirement met.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch torchvision

# Then the project, installed and checked as CI does (.ci/run), so the image holds what CI proves:
# a plain `pip install .` colorizes a generated photo, offline; then the serve extra (CI installs
# it within the dev extra) and `pip check`. Last, CMD's server is started once and must answer
# the healthcheck's /healthz, so a missing dependency fails the build, not the container's start.
COPY pyproject.toml README.md LICENSE ./
COPY zhangcolor ./zhangcolor
RUN pip install . \
    && work=$(mktemp -d) && export ZHANGCOLOR_CACHE="$work/cache" \
    && python -c "from PIL import Image; Image.new('L', (64, 48), 90).save('$work/photo.jpg')" \
    && (cd "$work" && zhangcolor colorize photo.jpg -o colorized/ && test -s colorized/photo.png) \
    && rm -rf "$work" /app/build
RUN pip install ".[serve]" \
    && pip check \
    && work=$(mktemp -d) && export ZHANGCOLOR_CACHE="$work/cache" \
    && (zhangcolor serve --port 8000 & server=$!; ok=1; \
        for i in $(seq 120); do sleep 1; kill -0 $server || break; \
            if python -c "import urllib.request as r; r.urlopen('http://127.0.0.1:8000/healthz')" 2>/dev/null; \
            then ok=0; break; fi; done; \
        kill $server; exit $ok) \
    && rm -rf "$work" /app/build

# An unprivileged user; the cache (ONNX exports, the colour table) lives in its home.
RUN useradd --create-home --uid 10001 zhangcolor
USER zhangcolor
WORKDIR /home/zhangcolor

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]

# Listen on every interface of the container; limits and cache sizes are flags of `serve`.
CMD ["zhangcolor", "serve", "--host", "0.0.0.0", "--port", "8000"]
