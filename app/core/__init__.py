"""Wiring shared by the app and its commands: settings (read from the environment when asked, never on import) and
the one registration block."""
