"""Two estimators for ``tests/test_optimize.py``: one declaring the values a search tries for its argument, and one
whose advantages are NaN (its training diverges at the first update)."""

from pgplug import Estimate
from pgplug.contracts.search import FloatRange
from pgplug.plugins.estimators import TD


class SearchedTD(TD):
    """The TD advantage times ``scale``, which a hyperparameter search draws from [0.5, 2]."""

    name = "searched_td"
    search_space = {"scale": FloatRange(0.5, 2.0)}

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def estimate(self, **rollout) -> Estimate:
        estimate = super().estimate(**rollout)
        return Estimate(self.scale * estimate.advantages, estimate.returns)


class NaNAdvantage(TD):
    """Every advantage NaN."""

    name = "nan_advantage"

    def estimate(self, **rollout) -> Estimate:
        estimate = super().estimate(**rollout)
        return Estimate(estimate.advantages * float("nan"), estimate.returns)


def pgplug_register_estimators(register):
    register(SearchedTD)
    register(NaNAdvantage)
