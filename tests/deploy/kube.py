"""Render the Helm chart and validate what it makes: Kubernetes' own kinds against the API's
OpenAPI schemas (kubernetes-validate), custom resources against their operators' CRDs.

Helm and the CRDs come from ``make k8s-tools`` (Helm built from its Go module into the venv,
the CRDs written by ``deploy/helm/crd-schemas`` into ``<venv>/k8s-crds``).
"""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "foresight"
HELM = Path(sys.prefix) / "bin" / "helm"
CRDS = Path(sys.prefix) / "k8s-crds"
#: The oldest Kubernetes the chart supports (Chart.yaml's kubeVersion) and the newest schemas.
KUBE_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())

Object = dict[str, Any]
_VALUE_CHECKS = frozenset({"oneOf", "anyOf", "allOf", "not"})


class RenderError(RuntimeError):
    """``helm template`` refused the values; the message is Helm's."""


def _need(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `make k8s-tools` (Helm and the CRDs)")
    return path


def render(*args: str, kube_version: str = KUBE_VERSIONS[-1]) -> list[Object]:
    """The objects ``helm template`` makes of the chart with ``args`` (-f, --set, ...)."""
    helm = str(_need(HELM))
    done = subprocess.run(
        [helm, "template", "foresight", str(CHART), "--kube-version", kube_version, *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RenderError(done.stderr.strip())
    return [o for o in yaml.safe_load_all(done.stdout) if o]


def _strict(schema: Any) -> Any:
    """``schema`` refusing fields it does not declare, as the API server's strict field
    validation does (a CRD schema alone lets them through, and the server drops them). The
    branches of oneOf, anyOf, allOf and not only constrain values, and stay as they are."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {k: v if k in _VALUE_CHECKS else _strict(v) for k, v in schema.items()}
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        strict["additionalProperties"] = False
    return strict


def crd_schemas() -> dict[tuple[str, str], Object]:
    """``{(apiVersion, kind): schema}`` of every served version of the vendored CRDs."""
    schemas: dict[tuple[str, str], Object] = {}
    for path in sorted(_need(CRDS / ".complete").parent.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version["served"]:
                schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
                schemas[(f"{group}/{version['name']}", kind)] = _strict(schema)
    return schemas


def problems(obj: Object, kube_version: str, crds: dict[tuple[str, str], Object]) -> Iterator[str]:
    """What is wrong with ``obj`` for a cluster of ``kube_version`` with those CRDs."""
    name = f"{obj['kind']} {obj['metadata']['name']}"
    schema = crds.get((obj["apiVersion"], obj["kind"]))
    if schema is None:
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            yield f"{name}: {obj['apiVersion']} is neither Kubernetes {kube_version} nor a CRD"
        except kubernetes_validate.ValidationError as invalid:
            yield f"{name}: {'.'.join(map(str, invalid.path))}: {invalid.message}"
        return
    for error in jsonschema.Draft7Validator(schema).iter_errors(obj):
        yield f"{name}: {'.'.join(map(str, error.path))}: {error.message}"
