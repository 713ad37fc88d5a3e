"""mixlang."""
