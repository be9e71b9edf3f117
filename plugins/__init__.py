"""pgplug's built-in plugins: estimators, objectives and algorithms registered through the same hooks any
third-party plugin uses (the host's list is :data:`pgplug.contracts.registries.BUILTIN_PLUGINS`)."""
