"""Several relay nodes on one PostgreSQL: nodes, stream leases, published status (docs/architecture.md, "Cluster")."""
