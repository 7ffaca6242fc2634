"""INFaaS-py real backend: variant generation and profiling, an executor running variants in
worker processes, a KServe v2 server driven by the ``infaas_core`` policies, a trace-replaying
load generator, and the simulator-vs-real validation."""
