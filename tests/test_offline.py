import socket
import threading

import pytest
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import LocalEntryNotFoundError


def test_non_loopback_connection_fails():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        with pytest.raises(RuntimeError, match="Network access is forbidden"):
            s.connect(("93.184.216.34", 443))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        with pytest.raises(RuntimeError, match="Network access is forbidden"):
            s.connect_ex(("8.8.8.8", 53))


def test_loopback_connection_works():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    accepted = threading.Thread(target=lambda: server.accept()[0].close())
    accepted.start()
    with socket.create_connection(server.getsockname(), timeout=5):
        pass
    accepted.join(timeout=5)
    server.close()


def test_hub_download_is_refused():
    """HF_HUB_OFFLINE is set for the whole suite: a download fails locally, before any connection."""
    with pytest.raises(LocalEntryNotFoundError):
        hf_hub_download("stable-diffusion-v1-5/stable-diffusion-v1-5", "model_index.json")
