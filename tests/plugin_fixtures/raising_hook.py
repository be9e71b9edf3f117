from pgplug import hookimpl


@hookimpl
def pgplug_register_estimators(register):
    raise RuntimeError("boom")
