# The controller's image: occ-controller (kopf operator, context broker, metrics).
#   docker build -t oneclick/occ-controller:0.1.0 .
# BASE is any image with Python 3.11 and its venv module: the official python image by default;
# `occ dev build --image` passes one made from Debian's packages (no registry needed).
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
# A virtual environment: the same on either base (no system site-packages, no PEP 668), and
# copied whole into the final stage, whose python3 is at the same path.
RUN python3 -m venv /opt/occ
WORKDIR /src
# The dependencies first, in a layer of their own that a change of our sources keeps: the
# agent's (oneclick-agent) and the operator's (oneclick-clusters) ...
COPY pyproject.toml ./
COPY distributions/oneclick-agent/pyproject.toml distributions/oneclick-agent/pyproject.toml
COPY hack/constraints.txt hack/constraints.txt
RUN python3 -c 'import tomllib; load = lambda p: tomllib.load(open(p, "rb")); print("\n".join(load("distributions/oneclick-agent/pyproject.toml")["project"]["dependencies"] + load("pyproject.toml")["tool"]["oneclick-clusters"]["dependencies"]))' > requirements.txt \
 && /opt/occ/bin/pip install --no-cache-dir --disable-pip-version-check \
      -c hack/constraints.txt -r requirements.txt
# ... then the project itself: its two distributions (oneclick-clusters requires
# oneclick-agent, which is built from the same sources: distributions/README.md).
COPY README.md setup.py MANIFEST.in ./
COPY distributions distributions
COPY oneclick oneclick
RUN /opt/occ/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps \
      -c hack/constraints.txt ./distributions/oneclick-agent .
# The agent as one file (oneclick-agent.pyz: oneclick/controlplane/agent_bundle.py), from the
# same sources and constraints, its libraries for this image's CPython: the controller serves
# it at /v1/agent (OCC_AGENT_BUNDLE below) to members whose image has no agent.
RUN set -e; export OCC_CACHE_DIR=/tmp/agent-bundle; \
    bundle="$(/opt/occ/bin/python -m oneclick.controlplane.agent_bundle)"; \
    install -D -m 0644 "$bundle" /opt/occ/share/oneclick/oneclick-agent.pyz; \
    rm -rf "$OCC_CACHE_DIR"

FROM ${BASE}
COPY --from=build /opt/occ /opt/occ
# OCC_AGENT_BUNDLE: served by default (the chart's agent.serve: false sets it empty).
ENV PATH=/opt/occ/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OCC_AGENT_BUNDLE=/opt/occ/share/oneclick/oneclick-agent.pyz
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent occ
# Non-root, and nothing it writes outside /tmp (the chart mounts the root read-only).
USER 10001:10001
EXPOSE 8443 9090 8080
ENTRYPOINT ["occ-controller"]
