from pgplug import hookimpl
from pgplug.plugins.estimators import TD


class MyGAE(TD):
    name = "gae"  # taken by the built-in GAE


@hookimpl
def pgplug_register_estimators(register):
    register(MyGAE)
