from pgplug import hookimpl


@hookimpl
def pgplug_register_estimators(registry):  # the argument is called register
    pass
