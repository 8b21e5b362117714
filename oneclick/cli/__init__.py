"""occ: the command-line client of OneClick Clusters."""
