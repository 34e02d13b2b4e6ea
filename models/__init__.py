"""tildekit.models."""
