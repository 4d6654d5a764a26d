"""Wiring: steps that read configs and paths and call the pure steps of the other sub-packages."""
