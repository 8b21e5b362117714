"""The OneClick Clusters controller: a kopf operator, its providers and the context broker."""
