"""The YAML config groups of INFaaS-py, installed as the package ``infaas_configs`` (data only).

Load them through :mod:`infaas_edge` (Hydra composition); nothing here is imported for code.
"""
