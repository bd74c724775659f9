# CPU image of `zhangcolor serve`: the web page and the REST API on port 8000.
#
#   docker build -t zhangcolor .
#   docker run --rm -p 8000:8000 zhangcolor          # then open http://localhost:8000/
#
# Untested: the machines this project is built on have no Docker engine. Written to be correct
# by reading; see README.md, "Docker".
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The CPU builds of torch and torchvision first (about 1 GB less than the default CUDA build);
# installing the project afterwards finds its torch requirement met.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch torchvision

COPY pyproject.toml README.md LICENSE ./
COPY zhangcolor ./zhangcolor
RUN pip install ".[serve]" && rm -rf /app/build

# An unprivileged user; the cache (ONNX exports, the colour table) lives in its home.
RUN useradd --create-home --uid 10001 zhangcolor
USER zhangcolor
WORKDIR /home/zhangcolor

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]

# Listen on every interface of the container; limits and cache sizes are flags of `serve`.
CMD ["zhangcolor", "serve", "--host", "0.0.0.0", "--port", "8000"]
