def pgplug_regster_algorithms(register):  # misspelled, and no @hookimpl
    pass
