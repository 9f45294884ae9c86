# edgetune on a GPU node. The install step is the one CI runs (`make install` = pip install -e '.[dev]').
FROM python:3.11-slim

RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . /app
RUN make install

ENV PATH="/app/.venv/bin:${PATH}"
# Runs, bundles and datasets live here; mount a volume for durability.
VOLUME ["/data"]
WORKDIR /data
ENTRYPOINT ["edgetune"]
CMD ["demo"]
