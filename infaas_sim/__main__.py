"""``python -m infaas_sim``: the same Hydra application as the ``infaas-sim`` command."""

from infaas_sim.cli import main

main()
