"""Fakes shipped for users' own tests: scripted agent, fake tools, fake model upstream."""

from warden.testing._fakes import FakeTool, ScriptedAgent, Step
from warden.testing._upstream import FakeReply, FakeRequest, FakeUpstream

__all__ = ["FakeReply", "FakeRequest", "FakeTool", "FakeUpstream", "ScriptedAgent", "Step"]
