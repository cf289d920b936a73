"""What changes the world on request: the power-on gate, remediation overlays."""
