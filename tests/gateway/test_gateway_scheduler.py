"""The scheduler in-process, for what a local runner cannot be made to do on demand:
an environment build that fails."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from skyform.providers.base import RunnerHandle, RunnerSpec
from skyform.providers.environments import EnvironmentBuildError
from skyform.providers.local import LocalProvider
from skyform.runtime.gateway_metrics import GatewayMetrics
from skyform.runtime.gateway_scheduler import Scheduler
from skyform.runtime.queue_store import QueueStore


def _scheduler(
    store: QueueStore, provider: LocalProvider, metrics: GatewayMetrics, state_dir: Path
) -> Scheduler:
    return Scheduler(
        store=store,
        provider=provider,
        metrics=metrics,
        stack="t",
        state_dir=state_dir,
    )


class UninstallableProvider(LocalProvider):
    """The local provider, on a host where the app's requirements cannot be installed."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.builds = 0

    def start_runner(self, spec: RunnerSpec) -> RunnerHandle:
        self.builds += 1
        raise EnvironmentBuildError(
            "No solution found when resolving dependencies: "
            "Because nonexistent-package was not found in the package registry"
        )


def test_environment_build_failure_fails_waiting_requests(tmp_path: Path, bundles) -> None:
    async def scenario() -> None:
        store = QueueStore(tmp_path / "queue.sqlite3")
        provider = UninstallableProvider("t", tmp_path)
        metrics = GatewayMetrics()
        scheduler = _scheduler(store, provider, metrics, tmp_path)
        await scheduler.start()
        try:
            bundle = bundles["echo"]
            app = scheduler.register("env", bundle.data, bundle.meta, "public", {})
            queued = scheduler.submit(
                app, "/", "POST", b'{"text": "x"}', "application/json", no_retry=False, persist=True
            )
            sync = scheduler.submit(
                app,
                "/",
                "POST",
                b'{"text": "y"}',
                "application/json",
                no_retry=False,
                persist=False,
            )
            async with asyncio.timeout(10):
                await queued.done.wait()
                await sync.done.wait()
            for req in (queued, sync):
                assert req.error_type == "environment_build_failed"
                assert "nonexistent-package" in (req.error or "")
                assert req.result_status == 503
            stored = store.get_request(queued.id)
            assert stored is not None and stored.error_type == "environment_build_failed"
            # Failed at the first failed build (a rebuild would fail the same way),
            # not after START_FAILURE_LIMIT tries; nothing waits, so nothing restarts.
            while app.runners:  # a second start begun before the first failed
                await asyncio.sleep(0.05)
            builds = provider.builds
            assert builds <= app.limits.max_runners
            await asyncio.sleep(1.0)
            assert provider.builds == builds
            assert {r.state for r in app.retired} == {"failed"}
            assert app.last_error_type == "environment_build_failed"
            text = metrics.render({}, {}, scheduler.runner_counts())
            assert 'outcome="environment_build_failed"' in text
        finally:
            await scheduler.close()
            store.close()

    asyncio.run(scenario())


class SlowStartProvider(LocalProvider):
    """Starts take a while (a cloud launch, an environment build); records what it stops."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.starting = 0
        self.started: list[str] = []
        self.stopped: list[str] = []

    def prepare_runner(self, spec: RunnerSpec) -> None:
        return None

    def start_runner(self, spec: RunnerSpec) -> RunnerHandle:
        self.starting += 1
        time.sleep(1.0)
        handle = RunnerHandle(spec.runner_id, spec.app, spec.revision, "http://127.0.0.1:9", "fake")
        self.started.append(handle.runner_id)
        return handle

    def stop_runner(self, handle: RunnerHandle, grace: float = 10.0) -> None:
        self.stopped.append(handle.runner_id)


def test_a_runner_still_starting_at_shutdown_is_stopped(tmp_path: Path, bundles) -> None:
    provider = SlowStartProvider("t", tmp_path)

    async def scenario() -> None:
        store = QueueStore(tmp_path / "queue.sqlite3")
        scheduler = _scheduler(store, provider, GatewayMetrics(), tmp_path)
        await scheduler.start()
        try:
            bundle = bundles["echo"]
            app = scheduler.register("slow", bundle.data, bundle.meta, "public", {})
            scheduler.submit(
                app, "/", "POST", b'{"text": "x"}', "application/json", no_retry=False, persist=True
            )
            async with asyncio.timeout(10):
                while provider.starting == 0:
                    await asyncio.sleep(0.01)
        finally:
            await scheduler.close()  # while the provider is still starting the runner
            store.close()

    asyncio.run(scenario())  # returns once the start thread has finished
    assert provider.started, "the start should have completed in its thread"
    assert sorted(provider.stopped) == sorted(provider.started)
