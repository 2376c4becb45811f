"""Operating the daemon: HTTP (metrics, health), Prometheus metrics, systemd notify, memory, status."""
