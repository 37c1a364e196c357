"""The prompts and the instruction vocabulary (YAML), installed as package data: ``avitalk.prompts``."""
