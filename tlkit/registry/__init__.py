"""The plugin machinery: hook specifications, the plugin manager, specs and their parameters, helpers for plugin authors."""
