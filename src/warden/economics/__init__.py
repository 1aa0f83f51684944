"""Economics: what model calls cost, and budgets that cannot be overspent.

- Pricing (``_pricing``): prices from the ``genai-prices`` data the installed package ships
  (tiered and cached-input prices included, never downloaded at run time), overridable per
  model in the spec.
- Budgets (``_budgets``): reserve before a call, settle or release after, decided
  atomically in the store so that they hold across processes and replicas.
- Cost reports (``_reports``): cost per run and per successful run, per workflow, tenant,
  route and task type, against the previous window (``warden costs``, ``GET /v1/costs``).
"""

from warden.economics._budgets import (
    ROLLING_BUCKETS,
    Amount,
    Budgets,
    BudgetStatus,
    Crossing,
    Exceeded,
    Headroom,
    Limit,
    Reservation,
    Settlement,
    Target,
    affordable_max_tokens,
    targets_for,
)
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
from warden.economics._reports import (
    DIMENSIONS,
    CostGroup,
    CostReport,
    Figures,
    cost_report,
    parse_by,
    parse_since,
)
from warden.spec._economics import BudgetPeriod, BudgetScope

__all__ = [
    "DIMENSIONS",
    "ROLLING_BUCKETS",
    "Amount",
    "BudgetPeriod",
    "BudgetScope",
    "BudgetStatus",
    "Budgets",
    "CostGroup",
    "CostReport",
    "Crossing",
    "Exceeded",
    "Figures",
    "Headroom",
    "Limit",
    "ModelPricing",
    "Money",
    "OutputLine",
    "Reservation",
    "Settlement",
    "Target",
    "UnknownModelError",
    "Usage",
    "affordable_max_tokens",
    "cost_report",
    "data_version",
    "parse_by",
    "parse_since",
    "price",
    "pricing_for",
    "targets_for",
    "worst_case",
]
