"""Unit tests of how engine answers to a pull become our errors, and of image reference parsing."""

from __future__ import annotations

import pytest

from worker.compute import (
    ContainerSpec,
    DockerUnavailableError,
    ImageNotFoundError,
    ImagePullError,
    InvalidImageReferenceError,
    RegistryAuthError,
    RegistryUnreachableError,
    classify_pull_error,
    is_digest_reference,
    registry_of,
)
from worker.protocol.errors import TransientError

IMAGE = "registry.example.org/team/app:1"


@pytest.mark.parametrize(
    ("status", "message", "kind"),
    [
        (404, "manifest for x:1 not found: manifest unknown: manifest unknown", ImageNotFoundError),
        (500, 'Head "http://h/v2/x/manifests/1": no basic auth credentials', RegistryAuthError),
        (500, "unauthorized: authentication required", RegistryAuthError),
        (
            404,
            "pull access denied for team/app, repository does not exist or may require 'docker login'",
            RegistryAuthError,
        ),
        (
            500,
            'Get "https://h/v2/": dial tcp 127.0.0.1:1: connect: connection refused',
            RegistryUnreachableError,
        ),
        (
            500,
            'Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io: no such host',
            RegistryUnreachableError,
        ),
        (500, "received unexpected HTTP status: 503 Service Unavailable", RegistryUnreachableError),
        (400, "invalid reference format", InvalidImageReferenceError),
        (900, "Cannot connect to Docker Engine via unix:///var/run/docker.sock", DockerUnavailableError),
        (0, "write /var/lib/docker/tmp/x: no space left on device", ImagePullError),
    ],
)
def test_pull_errors_are_classified(status: int, message: str, kind: type[Exception]) -> None:
    error = classify_pull_error(IMAGE, status, message)
    assert type(error) is kind
    assert message in str(error)


def test_only_network_failures_are_retryable() -> None:
    assert isinstance(classify_pull_error(IMAGE, 500, "connection refused"), TransientError)
    assert not isinstance(classify_pull_error(IMAGE, 404, "manifest unknown"), TransientError)
    assert not isinstance(
        classify_pull_error(IMAGE, 500, "unauthorized: authentication required"), TransientError
    )


@pytest.mark.parametrize(
    ("image", "registry"),
    [
        ("ubuntu:22.04", "docker.io"),
        ("iexechub/app:1.0", "docker.io"),
        ("docker.io/iexechub/app:1.0", "docker.io"),
        ("127.0.0.1:5000/app:1", "127.0.0.1:5000"),
        ("localhost/app:1", "localhost"),
        ("ghcr.io/org/app@sha256:" + "0" * 64, "ghcr.io"),
    ],
)
def test_registry_of_image_reference(image: str, registry: str) -> None:
    assert registry_of(image) == registry


def test_digest_references_are_recognised() -> None:
    assert is_digest_reference("app@sha256:" + "1" * 64)
    assert not is_digest_reference("127.0.0.1:5000/app:1")


def test_container_spec_rejects_a_non_positive_timeout() -> None:
    with pytest.raises(ValueError, match="timeout"):
        ContainerSpec(name="x", image="y", timeout=0)
