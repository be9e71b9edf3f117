"""A plugin whose import fails on line 3."""

import torch_extras_that_do_not_exist  # noqa: F401
