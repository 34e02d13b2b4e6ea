"""tildekit.patches."""
