"""The agents' Jinja prompt templates, installed as the package data of `magv.agent_prompts`
(read by magv.prompts with importlib.resources)."""
