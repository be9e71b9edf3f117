"""pgplug's built-in plugins. They are ordinary plugins: the host registers these modules through
the same hooks as any entry-point or local plugin (as pytest keeps its list of default plugins)."""

BUILTIN_PLUGINS: tuple[str, ...] = (
    "pgplug.plugins.estimators",
    "pgplug.plugins.reinforce",
    "pgplug.plugins.a2c",
    "pgplug.plugins.a3c",
)
