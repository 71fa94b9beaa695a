"""magv: MAG-V multi-agent generation and verification of tool-using agent trajectories."""

__version__ = "0.1.0"
