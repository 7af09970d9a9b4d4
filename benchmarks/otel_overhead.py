"""Cost per task of the OpenTelemetry tracing plugin's hooks, with and without a tracer provider.

One task's hook calls, as an adapter makes them: publish, prerun, a progress write with a
stage, succeed, postrun; on a plugin manager holding only the plugin (no recorder, no store),
so the numbers are the plugin's own cost per task. Rows:

* no plugin: the five hook calls with nothing registered (pluggy's dispatch alone);
* plugin, no provider: ``install()`` without a provider while none is set globally, as in a
  process that has the plugin but no SDK: every span is the API's no-op span;
* plugin, NoOpTracerProvider: the same on an explicit no-op provider;
* plugin, SDK: an SDK provider whose processor drops the spans (the cost of recording them,
  before any export), when ``opentelemetry-sdk`` is installed.

Best of several interleaved repeats of N tasks; the overhead is a row minus the first row.
Target: at most 10 µs per task without a provider.

    python benchmarks/otel_overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable

from _support import add_common_arguments, machine, print_table, run_main, verdict
from opentelemetry import trace

from taskstatus.events import TaskEvent
from taskstatus.observability.otel import Tracing
from taskstatus.plugins import make_plugin_manager

TASKS = 20_000
#: Most the plugin may add to a task's hook calls without a tracer provider (tracking a task
#: costs hundreds of µs: a row written at publish, at start and at the end).
TARGET_NO_PROVIDER_US = 10.0


def task_hooks(plugin: Tracing | None, tasks: int) -> Callable[[], float]:
    """A run of ``tasks`` tasks' hook calls: returns its seconds."""
    pm = make_plugin_manager(load_entry_points=False)
    if plugin is not None:
        pm.register(plugin)
    hook = pm.hook
    events = [
        TaskEvent(task_id=str(uuid.uuid4()), queue="rq", task_class="bench.task", attempt=1)
        for _ in range(tasks)
    ]
    progress = [
        TaskEvent(task_id=event.task_id, queue="rq", stage="Sending emails") for event in events
    ]

    def run() -> float:
        began = time.perf_counter()
        for event, stage in zip(events, progress, strict=True):
            event.carrier.clear()
            hook.taskstatus_publish(event=event)
            hook.taskstatus_prerun(event=event)
            hook.taskstatus_progress(event=stage)
            hook.taskstatus_succeed(event=event)
            hook.taskstatus_postrun(event=event)
        return time.perf_counter() - began

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)  # --backends is accepted and unused: nothing is stored
    args = parser.parse_args()
    tasks, repeats = (2_000, 3) if args.quick else (TASKS, 7)
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    setups: dict[str, Tracing | None] = {
        "no plugin": None,
        "plugin, no provider": Tracing(),
        "plugin, NoOpTracerProvider": Tracing(trace.NoOpTracerProvider()),
    }
    try:
        from opentelemetry.sdk.trace import TracerProvider
    except ModuleNotFoundError:
        pass
    else:
        # No span processor: spans are recorded, then dropped as they end.
        setups["plugin, SDK (spans dropped)"] = Tracing(TracerProvider())
    runs = {name: task_hooks(plugin, tasks) for name, plugin in setups.items()}
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):  # interleaved: a busy moment of the machine hits every setup
        for name, run in runs.items():
            best[name] = min(best[name], run())
    us = {name: seconds / tasks * 1e6 for name, seconds in best.items()}
    base = us["no plugin"]
    met = us["plugin, no provider"] - base <= TARGET_NO_PROVIDER_US
    print_table(
        f"hook calls of one task (publish, prerun, progress, succeed, postrun), best of "
        f"{repeats} x {tasks}",
        ["setup", "µs per task", "overhead µs"],
        [(name, f"{value:.2f}", f"{value - base:+.2f}") for name, value in us.items()],
    )
    print(
        f"\nno provider: +{us['plugin, no provider'] - base:.2f} µs per task (target <= "
        f"{TARGET_NO_PROVIDER_US:.0f}): {verdict(met)}"
    )
    print(f"\nOverall: {'all targets met' if met else 'some targets MISSED'}; {machine()}")


if __name__ == "__main__":
    run_main(main)
