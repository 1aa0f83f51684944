"""τ²-bench retail (Sierra Research, MIT) as a Warden workflow: the store's tools, its policy
as rules, and a suite that replays gold actions and generated violations (see README.md)."""
