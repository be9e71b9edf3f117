from pgplug import hookimpl


@hookimpl
def pgplug_register_estimator(register):  # the hook is pgplug_register_estimators
    pass
