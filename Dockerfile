# The controller's image: occ-controller (kopf operator, context broker, metrics).
#   docker build -t oneclick/occ-controller:0.1.0 .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY api api
COPY agent agent
COPY controller controller
COPY cli cli
COPY controlplane controlplane
COPY kits kits
COPY hack/constraints.txt hack/constraints.txt
RUN pip install --no-cache-dir --prefix=/install -c hack/constraints.txt .

FROM python:3.11-slim
COPY --from=build /install /usr/local
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent occ
USER 10001:10001
EXPOSE 8443 9090 8080
ENTRYPOINT ["occ-controller"]
