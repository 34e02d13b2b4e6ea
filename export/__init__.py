"""tildekit.export."""
