"""Fakes shipped for users' own tests: scripted agent, fake tools."""

from warden.testing._fakes import FakeTool, ScriptedAgent, Step

__all__ = ["FakeTool", "ScriptedAgent", "Step"]
