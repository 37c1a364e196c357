"""The tiny / base / paper configs (YAML), installed as package data: ``avitalk.configs``; ``avitalk train -c tiny``."""
