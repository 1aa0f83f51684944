"""The governed call: stages, the pipeline that orders them, and kill switches."""

from warden.pipeline._call import Call, RunState
from warden.pipeline._pipeline import Pipeline
from warden.pipeline._services import Services
from warden.pipeline._switches import Scope, Switch, SwitchBoard

__all__ = ["Call", "Pipeline", "RunState", "Scope", "Services", "Switch", "SwitchBoard"]
