"""Tools: what works across runs (sweeps, summaries, doctor, tune-steps, export).

Each tool uses the engine and the core and never another tool: a piece two
tools need moves down into the engine.
"""
