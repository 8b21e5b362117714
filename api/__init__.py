"""The shared language of OneClick Clusters: resource models and the broker wire protocol.

Imported by the controller, the CLI and the agent; depends on pydantic only, so the agent can
use it inside a VM image without kopf or the Kubernetes client.
"""

GROUP = "clusters.oneclick.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
