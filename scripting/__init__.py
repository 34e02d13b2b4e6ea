"""tildekit.scripting."""
