"""The server serves the simulator's kind of work: ImageNet CNNs on ``[batch, 3, 224, 224]``
inputs, as FP32 (normalised as torchvision expects) or UINT8 (raw pixels the server
normalises), in JSON and in the binary tensor extension; shapes come from the zoo."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import orjson
import pytest
from server_harness import Server, running_server

TASK = "classification-imagenet-224"
VARIANT = "mobilenet_v3_small-torch-fp32-cpu1-b8"  # torch eager: no export on the request path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    pytest.importorskip("torchvision")
    with running_server(["catalog=imagenet", "policy=infaas", "server.request_timeout_s=120"],
                        tmp_path_factory.mktemp("images")) as srv:
        yield srv


def _json(x: np.ndarray, datatype: str) -> bytes:
    return orjson.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": datatype,
                                     "data": x.ravel().tolist()}],
                         "parameters": {"latency_slo_ms": 60000}})


def test_metadata_comes_from_the_zoo(server: Server) -> None:
    status, body = server.get(f"/v2/models/{TASK}")
    meta = orjson.loads(body)
    assert status == 200 and meta["inputs"][0]["shape"] == [-1, 3, 224, 224]
    assert meta["outputs"][0]["shape"] == [-1, 1000]


def test_fp32_and_uint8_images_are_served_and_agree(server: Server) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(2, 3, 224, 224), dtype=np.uint8)
    # the first query loads the variant (a worker process builds the CNN): allow for it
    status, body = server.post(f"/v2/models/{VARIANT}/infer", _json(pixels, "UINT8"), timeout_s=110)
    assert status == 200, body
    out = orjson.loads(body)
    assert out["model_name"] == VARIANT and out["outputs"][0]["shape"] == [2, 1000]
    y_u8 = np.asarray(out["outputs"][0]["data"], dtype=np.float32).reshape(2, 1000)
    # the same pixels normalised by the client as torchvision expects give the same scores
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(1, 3, 1, 1)
    x = ((pixels.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)
    status, body = server.post(f"/v2/models/{VARIANT}/infer", _json(x, "FP32"))
    assert status == 200, body
    y_f = np.asarray(orjson.loads(body)["outputs"][0]["data"], dtype=np.float32).reshape(2, 1000)
    np.testing.assert_allclose(y_u8, y_f, rtol=1e-4, atol=1e-4)


def test_binary_uint8_and_a_wrong_shape(server: Server) -> None:
    pixels = np.full((1, 3, 224, 224), 128, dtype=np.uint8)
    head = orjson.dumps({"inputs": [{"name": "input", "shape": [1, 3, 224, 224], "datatype": "UINT8",
                                     "parameters": {"binary_data_size": pixels.nbytes}}],
                         "parameters": {"latency_slo_ms": 60000, "binary_data_output": True}})
    status, body = server.post(f"/v2/models/{VARIANT}/infer", head + pixels.tobytes(),
                               {"Inference-Header-Content-Length": str(len(head))})
    assert status == 200, body[:200]
    status, body = server.post(f"/v2/models/{TASK}/infer", _json(np.zeros((1, 64), np.float32), "FP32"))
    assert status == 400 and b"[batch >= 1, 3, 224, 224]" in body


def test_tritonclient_sends_images_to_the_task_and_gets_a_variant_meeting_the_floor(server: Server) -> None:
    """Acceptance (issue 12): a batch of 224x224 RGB images to the task, with requirements, gets
    1000 class scores per image from a variant whose catalog accuracy meets the floor."""
    http = pytest.importorskip("tritonclient.http")
    from infaas_real.server.config import build_catalog, compose

    catalog = build_catalog(compose("serve", ["catalog=imagenet"]).cfg)
    client = http.InferenceServerClient(server.url.removeprefix("http://"), network_timeout=300,
                                        connection_timeout=300)  # the first query may build a variant's artifact
    images = np.random.default_rng(1).integers(0, 256, (3, 3, 224, 224), dtype=np.uint8)
    inp = http.InferInput("input", list(images.shape), "UINT8")
    inp.set_data_from_numpy(images)
    r = client.infer(TASK, [inp], parameters={"min_accuracy": 0.70, "latency_slo_ms": 5000})
    variant = r.get_response()["model_name"]
    assert r.as_numpy("output").shape == (3, 1000)
    assert catalog.get(variant).task == TASK and catalog.get(variant).accuracy >= 0.70
