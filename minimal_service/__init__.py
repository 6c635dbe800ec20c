"""minimal-service: the walkthrough's sample HTTP workload (echo, bounce, health)."""
