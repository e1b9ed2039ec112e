"""Event-store wiring (temporary in this branch; replaced by the eventstore branch)."""
