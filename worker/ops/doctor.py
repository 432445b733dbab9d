"""``iexec-worker doctor``: read the settings as ``run`` would, then run every check over the real ports.

Settings that do not load are a FAIL of their own (the message names the variable); the checks
that need no setting (CPUs, Docker) still run, so one pass shows as much as can be known.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

from worker.config import Settings, host_cpu_count, load_settings
from worker.doctor import Check, Doctor, DoctorSettings, Report, Result
from worker.ops.wiring import doctor_ports, machine_ports
from worker.protocol.errors import ConfigurationError


@dataclass(frozen=True)
class DoctorOptions:
    image: str | None = None
    contributions: int = 10
    lookback_blocks: int = 50_000


def doctor_settings(settings: Settings, options: DoctorOptions) -> DoctorSettings:
    mode = getattr(settings.tee, "sgx_driver_mode", None)
    return DoctorSettings(
        pool=settings.scheduler.pool_address,
        core_url=settings.scheduler.core_url,
        base_dir=settings.node.base_dir,
        wallet_path=settings.wallet_path,
        password_file=settings.wallet.password_file,
        slots=settings.available_cpu_count,
        slots_overridden=settings.node.override_available_cpu_count is not None,
        gas_price_cap=settings.chain.gas_price_cap,
        node_urls=[url for url in settings.chain.node_urls("") if url],
        data_max_bytes=settings.data.max_bytes,
        result_max_bytes=settings.result.max_bytes,
        sgx_driver_mode=None if mode is None else str(getattr(mode, "value", mode)),
        sgx_devices=tuple(getattr(settings.tee, "sgx_devices", ())),
        contributions=options.contributions,
        lookback_blocks=options.lookback_blocks,
        check_image=options.image,
        worker_name=settings.node.name,
        protocol_version=settings.node.protocol_version,
    )


async def run_doctor(env_file: Path | None, options: DoctorOptions) -> Report:
    try:
        settings = load_settings(env_file)
    except ConfigurationError as exc:
        return await _without_settings(str(exc), options)
    async with AsyncExitStack() as stack:
        ports = await doctor_ports(stack, settings)
        return await Doctor(doctor_settings(settings, options), ports).run()


async def _without_settings(problem: str, options: DoctorOptions) -> Report:
    first, *rest = problem.splitlines()
    fix = "; ".join(line.strip() for line in rest) if rest else first
    report = Report([Check("settings", Result.FAIL, first if rest else "the settings do not load", fix)])
    cpus = host_cpu_count()
    placeholder = DoctorSettings(
        pool="", core_url="", base_dir=Path("."), wallet_path=Path("."), password_file=None,
        slots=max(cpus - 1, 1), slots_overridden=False, gas_price_cap=1, check_image=options.image,
    )  # fmt: skip
    async with AsyncExitStack() as stack:
        doctor = Doctor(placeholder, await machine_ports(stack))
        doctor.cpus()
        await doctor.docker()
    report.checks += doctor.report.checks
    return report
