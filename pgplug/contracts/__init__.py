"""The contracts: what estimators, objectives, algorithms and parameter stores receive, return and declare,
and the registries that hold them."""
