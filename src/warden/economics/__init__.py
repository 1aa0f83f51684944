"""Economics: what model calls cost, and budgets that cannot be overspent.

- Pricing (``_pricing``): prices from the ``genai-prices`` data the installed package ships
  (tiered and cached-input prices included, never downloaded at run time), overridable per
  model in the spec.
"""

from warden.economics._pricing import (
    ModelPricing,
    Money,
    OutputLine,
    UnknownModelError,
    Usage,
    data_version,
    price,
    pricing_for,
    worst_case,
)

__all__ = [
    "ModelPricing",
    "Money",
    "OutputLine",
    "UnknownModelError",
    "Usage",
    "data_version",
    "price",
    "pricing_for",
    "worst_case",
]
