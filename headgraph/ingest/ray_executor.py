"""Run the ingest's tasks on a Ray cluster (``pip install headgraph[ray]``).

The only module of headgraph that imports ``ray`` (lazily, after setting its environment).
It implements the executor protocol of :mod:`headgraph.ingest.executors`:

``score_layers`` (one big model)
    The shared :class:`~headgraph.ingest.factors.Factors` go into the object store once
    (``ray.put``); one task per *target* layer gets a reference to them and that layer's
    attention weights, which the driver reads from the reader, and runs
    :func:`headgraph.ingest.scoring.score_layer`. Late layers (the largest tasks: layer l
    scores all l * n_heads earlier heads) are submitted first. A worker deserialises the factors once and
    keeps them for the next layer of the same model (on its GPU when the device is cuda).
``run_models`` (a fleet)
    One task per model runs :func:`headgraph.ingest.task.compute_model` (load, compose,
    virtual heads, evidence) and returns its :class:`~headgraph.ingest.task.ModelResult`;
    the driver writes each one in its own transaction (:func:`.pipeline.ingest_fleet`).

Both keep at most ``in_flight`` results pending (default: twice the workers the cluster
can run at once), so the driver's memory stays flat however many tasks there are. Each task
asks for ``cpus_per_task`` CPUs, or one GPU when the device is cuda, and sets torch's thread
count from ``OMP_NUM_THREADS`` (Ray sets it to the task's CPUs; a reused worker would keep
the count of its first task otherwise). A task whose worker dies is retried
(``max_retries``); an exception raised by the task itself (bad weights, a bad source) is
deterministic and fails at once. Workers are reused (``max_calls=0``, GPU tasks included):
an idle worker keeps the last model's factors until its next layer task or until Ray
reaps it. Fault injection for tests: :func:`.task.inject_fault`.

Network: without an address a local Ray starts on this machine's cores, bound to
127.0.0.1 only (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` and ``_node_ip_address``; no
dashboard, no usage stats). With ``address`` it joins a running cluster (``ray start
--head`` elsewhere; see SCALING.md); a loopback address stays on loopback.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from headgraph.errors import HeadgraphError
from headgraph.ingest.factors import Factors
from headgraph.ingest.reader import WeightReader, check_layer
from headgraph.ingest.scoring import ScoreBlock, score_layer
from headgraph.ingest.spec import LayerWeights
from headgraph.ingest.task import (
    ModelJob,
    ModelResult,
    TaskFailedError,
    compute_model,
    inject_fault,
)
from headgraph.ingest.writer import FAULT_ENV

_END = object()

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")

RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",  # never report usage
    "RAY_AUTH_MODE": "disabled",  # 2.60 would otherwise write a token under ~/.ray
}
"""Environment defaults set before Ray is imported (a value already set is kept)."""

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # every Ray socket on 127.0.0.1


def is_loopback(address: str | None) -> bool:
    """``None`` (a local Ray) or an address whose host is this machine's loopback."""
    if address is None:
        return True
    host = address.removeprefix("ray://").rsplit(":", 1)[0]
    return host in LOOPBACK_HOSTS


_CLUSTER_DEFAULT: list[bool] = []  # Ray's own ENABLE_RAY_CLUSTER, before we touched it


def _import_ray(loopback: bool):
    """Import Ray with its environment set; on loopback, keep every address 127.0.0.1.

    Ray reads ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` once, when it is first imported, and with
    it enabled turns ``127.0.0.1`` into the machine's network address. If something imported
    Ray before us (a notebook, a test), the environment came too late, so the constant it
    read is set here as the variable would have set it."""
    for key, value in {**RAY_ENV, **(LOOPBACK_ENV if loopback else {})}.items():
        os.environ.setdefault(key, value)
    import ray
    from ray._private import ray_constants

    if not _CLUSTER_DEFAULT:
        _CLUSTER_DEFAULT.append(ray_constants.ENABLE_RAY_CLUSTER)
    ray_constants.ENABLE_RAY_CLUSTER = False if loopback else _CLUSTER_DEFAULT[0]
    return ray


def _set_threads(cpus: int) -> None:
    import torch

    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", cpus))))


_WORKER_FACTORS: dict[str, Factors] = {}  # in a worker: the last model's factors, by object id


def _layer_task(box: list, lw: LayerWeights, device: str, cpus: int, fault: str | None
                ) -> list[ScoreBlock]:
    """One target layer's scores (runs on a worker). ``box`` holds the factors' ObjectRef
    inside a list so that Ray hands over the reference, not a fresh copy per task."""
    import ray

    _set_threads(cpus)
    key = box[0].hex()
    factors = _WORKER_FACTORS.get(key)
    if factors is None:
        _WORKER_FACTORS.clear()  # a new model: drop the last one's
        factors = ray.get(box[0])
        if device != "cpu":
            factors = factors.to(device)
        _WORKER_FACTORS[key] = factors
    inject_fault(fault, f"layer{lw.layer}")
    return score_layer(factors, lw)


def _model_task(job: ModelJob, cpus: int) -> ModelResult:
    """One model of a fleet (runs on a worker)."""
    _set_threads(cpus)
    _WORKER_FACTORS.clear()  # a layer task's cached factors are not needed here
    try:
        return compute_model(job)
    finally:
        if job.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()  # the worker is reused: leave its GPU to the next task


class RayExecutor:
    """Run ingest tasks on Ray; a context manager that starts or joins a cluster.

    Parameters
    ----------
    address : a running cluster to join (``HOST:PORT`` of its head); ``None`` starts a local
        Ray on loopback with ``num_cpus`` CPUs (default: all of this machine's).
    device : ``cpu`` or ``cuda``; with cuda each task asks for one GPU.
    max_retries : attempts after a worker dies mid-task.
    in_flight : most results pending at once (default: twice the concurrent workers).
    cpus_per_task : CPUs (torch threads) per CPU task.

    If Ray is already initialised in this process (a notebook, a test session) it is used
    as it is and left running; otherwise :meth:`close` shuts down what :meth:`start` began.
    """

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None,
                 device: str = "cpu", max_retries: int = 3, in_flight: int | None = None,
                 cpus_per_task: int = 1) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.device = device
        self.max_retries = max_retries
        self.in_flight = in_flight
        self.cpus_per_task = cpus_per_task
        self._ray: Any = None
        self._owns = False
        self._tasks: dict[Callable, Any] = {}

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> RayExecutor:
        if self._ray is not None:
            return self
        loopback = is_loopback(self.address)
        ray = _import_ray(loopback)
        if not ray.is_initialized():
            options: dict[str, Any] = {"logging_level": "WARNING", "log_to_driver": False}
            if loopback:
                options["_node_ip_address"] = "127.0.0.1"
            if self.address is None:
                options.update(num_cpus=self.num_cpus or os.cpu_count() or 1,
                               include_dashboard=False)
            else:
                options["address"] = self.address
            try:
                ray.init(**options)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = self.address or "a local Ray"
                raise HeadgraphError(f"could not start or join Ray at {where}: {exc}. Start "
                                     "the head with `ray start --head` (see SCALING.md) and "
                                     "pass its HOST:PORT to --ray-address.") from None
            self._owns = True
        self._ray = ray
        node_ip = ray.util.get_node_ip_address()
        if loopback and node_ip not in LOOPBACK_HOSTS:
            self.close()
            raise HeadgraphError(
                f"Ray runs on {node_ip}, not on loopback: it was started before headgraph "
                "could keep it on 127.0.0.1. Set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before "
                "Ray starts, or pass the cluster's address to --ray-address.")
        return self

    def close(self) -> None:
        if self._ray is not None and self._owns:
            self._ray.shutdown()
        self._ray, self._owns = None, False
        self._tasks.clear()

    def __enter__(self) -> RayExecutor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- scheduling ------------------------------------------------------------------

    @property
    def _gpu(self) -> bool:
        return self.device.startswith("cuda")

    def workers(self) -> int:
        """How many tasks the cluster can run at once."""
        res = self.start()._ray.cluster_resources()
        if self._gpu:
            return max(1, int(res.get("GPU", 0)))
        return max(1, int(res.get("CPU", 1)) // self.cpus_per_task)

    def _remote(self, fn: Callable) -> Any:
        if fn not in self._tasks:
            resources = {"num_gpus": 1, "num_cpus": 1} if self._gpu else {
                "num_cpus": self.cpus_per_task}
            # max_calls=0: GPU workers too are reused (Ray's default for GPU tasks is one
            # call per worker), so a worker keeps its copy of the factors across layers
            self._tasks[fn] = self._ray.remote(max_retries=self.max_retries,
                                               retry_exceptions=False, max_calls=0,
                                               **resources)(fn)
        return self._tasks[fn]

    def _bounded(self, submit: Callable[[Any], Any], items: Iterable[Any]
                 ) -> Iterator[tuple[Any, Any]]:
        """Submit ``submit(item)`` for each item, at most ``in_flight`` pending; yield
        ``(item, value or exception)`` as each finishes."""
        ray = self._ray
        limit = self.in_flight or 2 * self.workers()
        pending: dict[Any, Any] = {}
        todo = iter(items)
        exhausted = False
        try:
            while pending or not exhausted:
                while not exhausted and len(pending) < limit:
                    item = next(todo, _END)
                    if item is _END:
                        exhausted = True
                    else:
                        pending[submit(item)] = item
                if not pending:
                    break
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                item = pending.pop(ref)
                try:
                    value = ray.get(ref)
                except Exception as exc:
                    value = _unwrap(exc)
                del ref
                yield item, value
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def score_layers(self, factors: Factors, reader: WeightReader, layers: list[int]
                     ) -> Iterator[list[ScoreBlock]]:
        """Yield each layer's score blocks as its task finishes (in any order)."""
        ray = self.start()._ray
        cpu_factors = factors if factors.A.device.type == "cpu" else factors.to("cpu")
        box = [ray.put(cpu_factors)]  # once; each task gets the reference
        task = self._remote(_layer_task)
        fault = os.environ.get(FAULT_ENV)
        device = self.device if self._gpu else "cpu"

        def submit(layer: int):
            lw = check_layer(reader.layer(layer, mlp=False), factors.spec)
            return task.remote(box, lw, device, self.cpus_per_task, fault)

        # largest first: layer l scores every earlier head, so its task costs ~l; submitting
        # the late layers first keeps the last task from running alone at the end
        for layer, value in self._bounded(submit, sorted(layers, reverse=True)):
            if isinstance(value, Exception):
                if isinstance(value, HeadgraphError):
                    raise value
                raise TaskFailedError(f"the scoring task of layer {layer} failed: {value}"
                                      ) from value
            yield value

    def run_models(self, jobs: Iterable[ModelJob]
                   ) -> Iterator[tuple[ModelJob, ModelResult | Exception]]:
        """Yield each fleet job with its result, or the exception that failed it."""
        self.start()
        task = self._remote(_model_task)
        yield from self._bounded(lambda job: task.remote(job, self.cpus_per_task), jobs)


def _unwrap(exc: Exception) -> Exception:
    """The task's own exception where there is one; a clear error for a lost worker."""
    from ray import exceptions as rex

    if isinstance(exc, rex.RayTaskError):
        cause = getattr(exc, "cause", None)
        return cause if isinstance(cause, Exception) else exc
    if isinstance(exc, rex.WorkerCrashedError | rex.NodeDiedError | rex.OwnerDiedError
                  | rex.ObjectLostError):
        return TaskFailedError(f"its worker died on every attempt ({type(exc).__name__}); "
                               "see the Ray logs of that node (out of memory?).")
    return exc
