# shoal image: the four binaries on debian:12-slim, running as user "shoal".
# Only Debian packages are fetched; compose.yaml builds this as shoal:local.
#
#   docker build -t shoal:local .
#   docker run --rm shoal:local shoal --help

FROM debian:12-slim AS build
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config \
      librdkafka-dev libcurl4-openssl-dev libjansson-dev libpq-dev libmicrohttpd-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Only the binaries: the test executables are not shipped.
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release \
 && cmake --build build --parallel "$(nproc)" \
      --target shoal shoal-scheduler shoal-worker shoal-sim

FROM debian:12-slim
ARG DEBIAN_FRONTEND=noninteractive
# ca-certificates: workers call real providers over HTTPS.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      librdkafka1 libcurl4 libjansson4 libpq5 libmicrohttpd12 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system shoal \
 && useradd --system --gid shoal --home-dir /var/lib/shoal --create-home \
      --shell /usr/sbin/nologin shoal
COPY --from=build /src/build/shoal /src/build/shoal-scheduler /src/build/shoal-worker \
     /src/build/shoal-sim /usr/local/bin/
COPY examples/ /usr/share/shoal/examples/
USER shoal
WORKDIR /var/lib/shoal
CMD ["shoal", "--help"]
