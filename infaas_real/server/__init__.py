"""The single-node KServe v2 server: ``app`` (endpoints), ``protocol`` (v2 JSON and binary
tensors), ``state`` (live cluster view + actions), ``metrics`` (Prometheus), ``config``
(Hydra composition), ``client`` (a lean asyncio v2 client for replay), ``cli`` (``serve``)."""
