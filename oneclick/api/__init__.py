"""The shared language of OneClick Clusters: resource models and the broker wire protocol.

Imported by the controller, the CLI and the agent; depends on pydantic only, so the agent can
use it inside a VM image without kopf or the Kubernetes client.
"""

GROUP = "clusters.oneclick.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
# A paused launch (or member) is left alone by the reconciler, as Cluster API's paused
# annotation: for maintenance, for handing launches between controllers, and for tests that
# play the controller's part themselves. The broker still serves its members.
PAUSED = f"{GROUP}/paused"
# What keeps a launch or member until its instances are terminated.
FINALIZER = f"{GROUP}/finalizer"
# The label by which a Secret or ConfigMap opts in to being delivered to members (value
# "true"). Only whoever may write the object can set it, so a tenant who may create launches
# but not read a namespace's Secrets cannot have them sent to a VM it controls.
DELIVERABLE = f"{GROUP}/deliverable"
