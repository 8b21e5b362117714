"""OneClick Clusters: every module of ours lives under this one import name.

- `oneclick.api`: the resources' models, the broker protocol and what parses members' input;
- `oneclick.agent`: what runs inside a member (imports `oneclick.api` only);
- `oneclick.controller`: the operator, its context broker and the providers;
- `oneclick.cli`: `occ`;
- `oneclick.controlplane`: the development control plane and node;
- `oneclick.kits`: small clients and helpers the others share.

The version is kept here, once: the package's metadata, `occ version`, the agent's User-Agent
and the broker's /healthz all read it.
"""

__version__ = "0.1.0"
