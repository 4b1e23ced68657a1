"""A fake Kubernetes API server (tests/k8s_fake) per test, and a backend pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from kubernetes import client

from studio.backends.kubernetes import KubernetesBackend
from studio.config import K8sSettings
from tests.k8s_fake import FakeKubernetes

NAMESPACE = "models"


def api_client(fake: FakeKubernetes) -> client.ApiClient:
    """The official client, unmodified, pointed at the fake."""
    configuration = client.Configuration(host=fake.url)
    configuration.retries = 0
    return client.ApiClient(configuration)


@pytest.fixture
def fake() -> Iterator[FakeKubernetes]:
    with FakeKubernetes(ready_delay_s=0.3) as server:
        with api_client(server) as api:
            client.CoreV1Api(api).create_namespace(
                client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE))
            )
        yield server


@pytest.fixture
def settings() -> K8sSettings:
    return K8sSettings(
        namespace=NAMESPACE, timeout_s=5, prometheus_address="http://prometheus.monitoring:9090"
    )


@pytest.fixture
async def backend(fake: FakeKubernetes, settings: K8sSettings) -> AsyncIterator[KubernetesBackend]:
    configuration = client.Configuration(host=fake.url)
    configuration.retries = 0
    k8s = KubernetesBackend(settings, configuration=configuration)
    yield k8s
    await k8s.close()
