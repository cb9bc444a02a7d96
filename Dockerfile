FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends libibverbs1 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY xferd ./xferd
# GPU hosts: install the CUDA builds instead (torch from the CUDA index, extra "cuda").
RUN pip install --no-cache-dir torch==2.13.0 && pip install --no-cache-dir ".[cpu]"
ENTRYPOINT []
