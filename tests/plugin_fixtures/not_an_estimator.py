from pgplug import hookimpl


class Thing:
    name = "thing"


@hookimpl
def pgplug_register_estimators(register):
    register(Thing)
