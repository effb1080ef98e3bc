"""`diffusers-uip2p app` driven by gradio_client against a live server on 127.0.0.1, on the shipped models:
each tab returns what the command line's code path computes for the same arguments, bad input comes back as
the library's own message, and requests are queued one at a time."""

import argparse
import socket
import threading
import time

import numpy as np
import PIL.Image
import pytest

pytest.importorskip("gradio")
from gradio_client import Client  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from diffusers_uip2p import app as app_module  # noqa: E402
from diffusers_uip2p.cli import commands  # noqa: E402

TARGET = "a large yellow square in the center and a large black hexagon on the right on a striped gray background"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = free_port()
    page = app_module.launch(port=port, block=False)
    client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
    yield client, f"http://127.0.0.1:{port}/"
    page.close()


def _pixels(path) -> np.ndarray:
    return np.asarray(PIL.Image.open(path).convert("RGB"))


def _shrunk(path) -> np.ndarray:
    """A picture the page enlarged (nearest neighbours), back at the model's size."""
    return _pixels(path)[::app_module.DISPLAY_SCALE, ::app_module.DISPLAY_SCALE]


def _file(value):
    return value["path"] if isinstance(value, dict) else value


def test_instruction_edit_returns_the_ranked_candidates_and_the_verdict(server):
    client, _ = server
    shown_input, edited, ranking, attention, verdict, report = client.predict(
        "three-objects", None, "make the red triangle blue", "make the blue triangle red", 2, 7.5, 1.5, 3, 0,
        api_name="/instruction_edit")
    # the same arguments through the command line's code path
    expected = commands.compute_edit(app_module.cli_arguments(
        ["edit", "--attention", "--candidates", "2", "--guidance-scale", "7.5", "--image-guidance-scale", "1.5",
         "--steps", "3", "--seed", "0", "--reverse", "make the blue triangle red", "--", "three-objects",
         "make the red triangle blue"]))
    assert report == expected.report
    assert np.array_equal(_shrunk(_file(edited)), np.asarray(expected.image))
    assert np.array_equal(_shrunk(_file(shown_input)), np.asarray(expected.columns[0]))
    assert [item["caption"] for item in ranking] == [
        f"#{rank} seed {seed}: {kind}" + (f", reversibility {score:.4f}" if kind == "reverse edit" else "")
        for rank, (seed, score) in enumerate(zip(report["seeds"], report["reversibility"], strict=True), start=1)
        for kind in ("edit", "reverse edit")]
    assert report["reversibility"] == sorted(report["reversibility"], reverse=True)
    assert np.array_equal(_shrunk(_file(ranking[1]["image"])), np.asarray(expected.output.reconstructions[0]))
    assert np.array_equal(_pixels(_file(attention)), np.asarray(expected.attention))
    assert verdict.startswith("**Shapes evaluator:** success ")
    assert set(report["shapes_evaluator"]) == {"success", "edit_applied", "preserved"}


def test_inversion_edit_shows_the_task_the_method_and_the_exact_reconstruction(server):
    client, _ = server
    assert client.predict("striped", None, api_name="/caption") == commands.caption(
        argparse.Namespace(image="striped", model=None))["source_prompt"]
    shown_input, reconstruction, edited, probabilities, method, attention, verdict, report = client.predict(
        "striped", None, "", TARGET, "auto", "default", 4, 7.5, api_name="/inversion_edit")
    assert report["reconstruction_latent_relative_error"] == 0.0
    assert {c["label"]: c["confidence"] for c in probabilities["confidences"]} == pytest.approx(
        report["task_probabilities"])
    assert len(probabilities["confidences"]) == 5 and probabilities["label"] == report["edit_task"]
    assert f"`{report['edit_method']}` (asked: `auto`)" in method and "0.000e+00" in method
    assert _shrunk(_file(reconstruction)).shape == _shrunk(_file(edited)).shape == (64, 64, 3)
    assert _file(attention) is not None and "objects correct" in verdict


@pytest.mark.parametrize("argv, message", [
    (("three-objects", None, "make the purple triangle blue", "make the blue triangle red", 1, 7.5, 1.5, 3, 0),
     "No purple triangle in this scene; it has: black square, yellow circle, red triangle."),
    (("three-objects", None, "make the red triangle a zebra", "", 1, 7.5, 1.5, 3, 0),
     "words the Shapes world does not know: zebra"),
    (("three-objects", None, "make the red triangle blue", "", 2, 7.5, 1.5, 3, 0),
     "--candidates 2 ranks edits by reversibility: give --reverse too."),
    (("three-objects", None, "!!!", "", 1, 7.5, 1.5, 3, 0),
     "instruction '!!!' has no word in it; say what the edit should do."),
    ((None, None, "make the red triangle blue", "", 1, 7.5, 1.5, 3, 0),
     "no image: choose a bundled sample or upload an image."),
])
def test_bad_input_comes_back_as_the_librarys_message(server, argv, message):
    client, _ = server
    with pytest.raises(AppError) as caught:
        client.predict(*argv, api_name="/instruction_edit")
    assert message in str(caught.value) and "Traceback" not in str(caught.value)


def test_an_uploaded_image_that_is_not_a_shapes_scene_is_refused_with_the_reason(server, tmp_path):
    client, _ = server
    PIL.Image.new("RGB", (300, 200), "white").save(tmp_path / "blank.png")
    from gradio_client import handle_file

    with pytest.raises(AppError, match="does not read as a Shapes-world scene"):
        client.predict(None, handle_file(str(tmp_path / "blank.png")), api_name="/caption")


def test_requests_are_queued_one_at_a_time(monkeypatch):
    """Two edits asked at once run one after the other (on a CPU, in parallel each would take twice as long)."""
    spans, lock = [], threading.Lock()

    def slow_edit(self, sample, upload, instruction, reverse, candidates, guidance_scale, image_guidance_scale,
                  steps, seed):
        start = time.monotonic()
        time.sleep(0.5)
        with lock:
            spans.append((start, time.monotonic()))
        return None, None, [], None, "done", {}

    monkeypatch.setattr(app_module.App, "instruction_edit", slow_edit)
    port = free_port()
    page = app_module.launch(port=port, block=False)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
        jobs = [client.submit("three-objects", None, "x", "", 1, 7.5, 1.5, 3, 0, api_name="/instruction_edit")
                for _ in range(2)]
        assert [job.result()[4] for job in jobs] == ["done", "done"]
        assert page.server_name == "127.0.0.1"  # this machine only, unless --host says otherwise
    finally:
        page.close()
    (a_start, a_end), (b_start, b_end) = sorted(spans)
    assert b_start >= a_end


def test_the_command_lines_parser_refuses_with_its_own_message():
    with pytest.raises(ValueError, match=r"argument --steps: must be a positive integer, got 0"):
        app_module.cli_arguments(["edit", "--steps", "0", "--", "three-objects", "make the red triangle blue"])


def test_an_edit_through_the_page_in_a_real_browser(server, tmp_path):
    """Headless Chromium loads the page, presses Edit and sees the result and no error; `.ci/run` installs
    the browser, so in CI this test cannot skip."""
    import importlib.util
    import os
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "app_screenshot.py"
    spec = importlib.util.spec_from_file_location("app_screenshot", path)
    browser = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(browser)
    if browser.browser_paths() is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have chromium and chromedriver (.ci/run installs them)")
        pytest.skip("no chromium/chromedriver here (apt-get install chromium chromium-driver)")
    _, url = server
    seen = browser.drive(url, tmp_path / "app.png", steps=4)
    assert seen["errors"] == [] and seen["steps"] == "4"
    assert "/gradio_api/file=" in seen["result_src"] and seen["result_src"].endswith(".png")
    assert seen["verdict"].startswith("Shapes evaluator: success ")
    assert PIL.Image.open(tmp_path / "app.png").size[0] >= 1000
    refused = browser.drive(url, tmp_path / "refused.png", steps=4, instruction="!!!")
    assert any("instruction '!!!' has no word in it" in text for text in refused["errors"])
    assert refused["result_src"] is None and not any("Traceback" in text for text in refused["errors"])
