"""Independent evaluations, in this process, in worker processes or on a Ray cluster.

One interface over three backends: :meth:`Backend.map` runs ``fn(state, task)`` for every
task and returns the results in task order. ``state`` is what ``setup(threads,
*setup_args)`` builds once per worker process (the expensive part: a parsed model, the
data), so a task itself can be small (which channels to keep). ``fn`` and ``setup`` must
be module-level functions (they travel by reference), ``setup_args`` and the tasks
picklable. ``threads`` is how many threads one task should use (None: no limit).

- :class:`Serial`: in this process; ``local`` (an already-built state) spares the setup.
- :class:`Processes`: ``jobs`` worker processes (``forkserver``, ``spawn`` where it is
  missing: a script using it must guard its entry point with
  ``if __name__ == "__main__":``), each task using ``cpu_count // jobs`` threads. Inside
  ``with``, the workers (and the state they built) outlive a map: a later map with the
  same ``setup`` and the same ``setup_args`` object reuses them (a search measures one
  generation per map).
- :class:`Ray`: tasks of one CPU (one thread) each on a Ray cluster (``pip install
  'onnxprune[ray]'``; every node needs onnxprune installed, the same version). The setup
  arguments are put in the object store once; a worker builds the state on its first
  task and keeps it for the rest of the map. A process that already called
  ``ray.init`` keeps its connection; otherwise ``address`` (``auto``: ``RAY_ADDRESS`` or
  the cluster ``ray start`` started on this machine; ``host:port``; ``ray://host:port``)
  is checked to answer before connecting, and the connection is closed after the map.
  Failing to connect, or losing a node, raises :class:`~onnxprune.errors.ClusterError`.

Use a backend as a context manager (``with backend(jobs, ray) as b: b.map(...)``): Ray
connects on entry, so a cluster that cannot be reached fails before any work.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from concurrent.futures import ProcessPoolExecutor, as_completed

from .errors import BadArgumentError, ClusterError

RAY_HINT = "--ray needs the ray package: pip install 'onnxprune[ray]'"
PROBE_SECONDS = 5.0  # how long the address may take to accept a TCP connection


class Backend:
    """Runs independent tasks; see the module docstring."""

    workers = 1  # tasks that may run at once

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def check(self) -> "Backend":
        """Fail now, cheaply, if the backend cannot be used (before long work that needs it)."""
        return self

    def map(self, fn, tasks, setup, setup_args=(), *, local=None, on_result=None) -> list:
        raise NotImplementedError

    def describe(self) -> str:
        return "serial"


class Serial(Backend):
    def map(self, fn, tasks, setup, setup_args=(), *, local=None, on_result=None) -> list:
        state = local if local is not None else setup(None, *setup_args)
        out = []
        for task in tasks:
            out.append(fn(state, task))
            if on_result is not None:
                on_result()
        return out


class Processes(Backend):
    def __init__(self, jobs: int):
        self.workers = jobs
        self._keep = False  # inside `with`: pools outlive a map
        self._pool = self._key = None

    def describe(self) -> str:
        return f"{self.workers} processes"

    def __enter__(self):
        self._keep = True
        return self

    def __exit__(self, *exc) -> None:
        self._keep = False
        self._close()

    def _close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = self._key = None

    def map(self, fn, tasks, setup, setup_args=(), *, local=None, on_result=None) -> list:
        tasks = list(tasks)
        jobs = min(self.workers, len(tasks))
        if jobs <= 1 and not (self._keep and self._key == (setup, id(setup_args))):
            return Serial().map(fn, tasks, setup, setup_args, local=local, on_result=on_result)
        import multiprocessing as mp

        key = (setup, id(setup_args))
        if self._pool is None or self._key != key:
            self._close()
            jobs = self.workers if self._keep else jobs
            ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
            threads = max(1, (os.cpu_count() or 1) // jobs)
            self._pool = ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_pool_init,
                                             initargs=(setup, (threads, *setup_args)))
            self._key = key
        pool = self._pool
        out: list = [None] * len(tasks)
        try:
            futures = {pool.submit(_pool_call, fn, task): i for i, task in enumerate(tasks)}
            for f in as_completed(futures):
                out[futures[f]] = f.result()
                if on_result is not None:
                    on_result()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._key = None
            raise
        if not self._keep:
            self._close()
        return out


_POOL_STATE: dict = {}


def _pool_init(setup, args) -> None:
    _POOL_STATE["state"] = setup(*args)


def _pool_call(fn, task):
    return fn(_POOL_STATE["state"], task)


class Ray(Backend):
    def __init__(self, address: str):
        if not address or not str(address).strip():
            raise BadArgumentError("--ray takes 'auto' or a cluster address (host:port or ray://host:port)")
        self.address = str(address).strip()
        self._ray = None
        self._connected = False  # by us (so we disconnect)

    def describe(self) -> str:
        return f"ray {self.address}"

    def check(self) -> "Ray":
        ray = _import_ray()
        if not ray.is_initialized():
            _probe(ray, self.address)
        return self

    def __enter__(self):
        self.check()
        self._ray = _import_ray()
        if not self._ray.is_initialized():
            try:
                self._ray.init(address=self.address, logging_level=logging.ERROR, log_to_driver=False)
            except Exception as exc:  # ray raises ConnectionError, RuntimeError, ValueError...
                raise ClusterError(f"--ray {self.address}: cannot connect to a Ray cluster ({_first_line(exc)})") \
                    from None
            self._connected = True
        try:
            self.workers = max(1, int(self._ray.cluster_resources().get("CPU", 1)))
        except Exception:
            self.workers = 1
        return self

    def __exit__(self, *exc) -> None:
        if self._connected:
            self._connected = False
            self._ray.shutdown()

    def map(self, fn, tasks, setup, setup_args=(), *, local=None, on_result=None) -> list:
        if self._ray is None:
            with self:
                return self.map(fn, tasks, setup, setup_args, local=local, on_result=on_result)
        ray = self._ray
        tasks = list(tasks)
        if not tasks:
            return []
        remote = ray.remote(num_cpus=1)(_ray_call)
        token = uuid.uuid4().hex
        args_ref = ray.put((1, *setup_args))
        refs = [remote.remote(token, setup, [args_ref], fn, task) for task in tasks]  # a list: resolved lazily
        where = {ref: i for i, ref in enumerate(refs)}
        out: list = [None] * len(tasks)
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    out[where[ref]] = _ray_get(ray, ref, self.address)
                    if on_result is not None:
                        on_result()
        except BaseException:
            for ref in pending:
                try:
                    ray.cancel(ref)
                except Exception:
                    pass
            raise
        return out


_RAY_STATE: dict = {}


def _ray_call(token, setup, args_ref, fn, task):
    """One task in a Ray worker: the state of this map is built on its first task there."""
    if _RAY_STATE.get("token") != token:
        import ray

        _RAY_STATE.clear()  # one map's state at a time
        _RAY_STATE.update(token=token, state=setup(*ray.get(args_ref[0])))
    return fn(_RAY_STATE["state"], task)


def _ray_get(ray, ref, address: str):
    from ray import exceptions as rex

    try:
        return ray.get(ref)
    except rex.RayTaskError as exc:  # the task raised: re-raise what it raised
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException):
            raise cause from None
        raise
    except (rex.RayError, ConnectionError) as exc:  # a worker or node died, the connection dropped
        raise ClusterError(f"--ray {address}: the Ray cluster failed during the run ({_first_line(exc)})") from None


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ClusterError(RAY_HINT) from None
    return ray


def _probe(ray, address: str) -> None:
    """Fail fast (Ray itself retries an unreachable address for minutes, printing as it
    goes): the address must accept a TCP connection within :data:`PROBE_SECONDS`."""
    target = address
    if address == "auto" or address is None:
        try:
            from ray._private.services import canonicalize_bootstrap_address_or_die
        except ImportError:  # another Ray version: let ray.init find it
            return
        try:
            target = canonicalize_bootstrap_address_or_die("auto")
        except ConnectionError as exc:
            raise ClusterError(f"--ray auto: no Ray cluster found ({_first_line(exc)})") from None
        except Exception:
            return
    if target == "local":
        return
    host, port = _host_port(target)
    try:
        with socket.create_connection((host, port), timeout=PROBE_SECONDS):
            pass
    except OSError as exc:
        raise ClusterError(f"--ray {address}: cannot connect to a Ray cluster at {host}:{port} "
                           f"({exc.strerror or type(exc).__name__})") from None


def _host_port(address: str) -> tuple:
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rstrip("/").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise BadArgumentError(f"--ray {address}: expected 'auto', host:port or ray://host:port")
    return host.strip("[]"), int(port)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def backend(jobs: int = 1, ray: str | None = None) -> Backend:
    """The backend for ``jobs`` worker processes (0: one per CPU core, 1: this process)
    or, with ``ray`` (``auto`` or an address), a Ray cluster (``jobs`` must then stay 1:
    the cluster's CPUs set the parallelism)."""
    if jobs is None or jobs < 0:
        raise BadArgumentError(f"jobs must be >= 0 (0: one per CPU core), got {jobs}")
    if ray is not None:
        if jobs != 1:
            raise BadArgumentError("--jobs and --ray exclude each other: on Ray the cluster's CPUs set the parallelism")
        return Ray(ray)
    jobs = jobs or (os.cpu_count() or 1)
    return Serial() if jobs == 1 else Processes(jobs)


__all__ = ["Backend", "Serial", "Processes", "Ray", "backend"]
