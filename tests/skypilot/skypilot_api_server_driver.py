"""Drives the SkyPilot provider through a real local SkyPilot API server.

Run by test_skypilot_api_server.py inside a loopback-only network namespace,
with HOME pointing at an offline SkyPilot home. Writes its findings as JSON to
argv[1]; the test asserts on them. Every launch that is not a dry run fails
where the cloud would answer (Lambda's API cannot be reached), which is the
provisioning-failure path through real SkyPilot end to end.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

# A script of its own (not under pytest): the shared test support is under tests/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.skypilot import seed_enabled_clouds, stack_tls


def main(out_path: str, work: str) -> None:
    import sky

    from skyform.providers.base import GatewaySpec, RunnerSpec
    from skyform.providers.skypilot import ProvisioningError, SDKClient, SkyPilotProvider

    work_dir = Path(work)
    bundle = work_dir / "embed.skyb"
    bundle.write_bytes(b"bundle")
    tls = stack_tls(work_dir)
    runner = RunnerSpec(
        stack="demo",
        app="embed",
        revision="a1b2c3d4e5f6",
        bundle_path=bundle,
        machine_types=["GPU-H100"],
        requirements=[],
        python_version="3.11",
        env={"SKYFORM_RUNNER_TOKEN": "tok-5e1f"},
        runner_id="r1",
        tls=tls["runner_tls"],
    )
    found: dict[str, object] = {}

    def failure(call) -> dict[str, object]:
        try:
            call()
        except ProvisioningError as exc:
            return {"kind": exc.kind, "reason": exc.reason, "leftover": exc.leftover}
        return {"kind": None}

    sky.api_start()
    try:
        client = SDKClient()
        # The server's first `sky check` cannot verify the fake Lambda key offline;
        # record Lambda as enabled once it is done, as a working check would.
        sky.get("skypilot-server-on-boot-check")
        seed_enabled_clouds()
        found["api_server"] = list(client.api_server())

        dry = SkyPilotProvider("demo", work_dir / "dry", clouds=["lambda"], dryrun=True)
        handle = dry.start_runner(runner)
        found["dryrun_runner"] = {"cluster": handle.info["cluster"], "url": handle.url}
        dry_gw = SkyPilotProvider(
            "demo",
            work_dir / "drygw",
            clouds=["lambda"],
            api_server="http://sky.internal:46580",
            dryrun=True,
        )
        gateway = dry_gw.start_gateway(
            GatewaySpec(stack="demo", port=8765, state_dir=work_dir, **tls)
        )
        found["dryrun_gateway"] = {"cluster": gateway.info["cluster"]}
        found["local_server_gateway"] = failure(
            lambda: SkyPilotProvider("demo", work_dir / "gw2", dryrun=True).start_gateway(
                GatewaySpec(stack="demo", port=8765, state_dir=work_dir, **tls)
            )
        )

        real = SkyPilotProvider("demo", work_dir / "real", clouds=["lambda"])
        found["launch_failure"] = failure(lambda: real.start_runner(runner))
        found["runners_after_failure"] = [h.info["cluster"] for h in real.list_runners("demo")]
        found["status_after_failure"] = [r.name for r in client.status(None)]
        client.down("sf-demo--nothing--00000000--x")  # absent: not an error
        found["down_absent"] = "ok"

        # Last: asking for a cloud that is not enabled makes SkyPilot re-check.
        aws = SkyPilotProvider("demo", work_dir / "aws", clouds=["aws"], dryrun=True)
        found["disabled_cloud"] = failure(lambda: aws.start_runner(runner))
    except Exception:
        found["error"] = traceback.format_exc()
    finally:
        sky.api_stop()
    Path(out_path).write_text(json.dumps(found, indent=2))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
