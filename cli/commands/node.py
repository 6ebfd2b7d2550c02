"""``art register``, ``art jobs`` and ``art serve``: the DICOM node (docs/deployment.md)."""

from __future__ import annotations

import json as _json
from pathlib import Path
from typing import Annotated, Optional

import typer

from art_cli.options import Json

Config = Annotated[
    Path,
    typer.Option("--config", envvar="ART_NODE_CONFIG", help="The node's configuration file (TOML; docs/deployment.md). Env: ART_NODE_CONFIG."),
]


def register(
    reference: Annotated[Path, typer.Option(help="Reference folder: planning CT, RTSTRUCT, RTPLAN and protocol.toml (as for art replan).")],
    config: Config,
    json: Json = False,
) -> None:
    """Register a patient's reference folder with the node: its CBCTs arriving by DICOM are re-planned against it.

    The folder is checked as ``art replan`` checks it; the patient is keyed by PatientID
    (stored hashed, never printed) and the planning CT's frame of reference.
    """
    from art.node.config import load_config
    from art.node.registry import register_reference
    from art.node.store import NodeStore

    cfg = load_config(config)
    row = register_reference(NodeStore(cfg.database), reference)
    if json:
        typer.echo(_json.dumps(row, indent=2))
    typer.echo(f"registered {row['reference']} (protocol {row['protocol']!r}, frame of reference {row['frame_of_reference_uid']})", err=True)


def jobs(
    config: Config,
    state: Annotated[list[str] | None, typer.Option("--state", help="Only jobs in this state (repeatable): received, queued, running, done, sent, failed.")] = None,
    json: Annotated[bool, typer.Option("--json", help="Print the jobs as JSON (a list) on stdout.")] = False,
) -> None:
    """List the node's jobs: state, series, result, sends (no patient names or IDs)."""
    from art.node.config import load_config
    from art.node.jobs_table import jobs_rows, jobs_text
    from art.node.store import JOB_STATES, NodeStore

    for s in state or ():
        if s not in JOB_STATES:
            raise typer.BadParameter(f"unknown state {s!r}; one of {', '.join(JOB_STATES)}", param_hint="--state")
    cfg = load_config(config)
    rows = jobs_rows(NodeStore(cfg.database).jobs(state or None))
    typer.echo(_json.dumps(rows, indent=2) if json else jobs_text(rows))


def serve(
    config: Config,
    once: Annotated[
        bool, typer.Option("--once", help="Exit when no job is left to run or send and no series is arriving (tests, batch windows).")
    ] = False,
    scheduler: Annotated[
        Optional[str], typer.Option("--scheduler", help="Run the jobs on this Dask scheduler (tcp://HOST:8786) instead of the configuration's [dask].")
    ] = None,
) -> None:
    """Run the DICOM node: receive CT/CBCT series, re-plan on Dask, send the results by C-STORE.

    Stops on SIGINT/SIGTERM; queued and running jobs resume at the next start. Logs (job
    numbers, series UIDs, states; never patient names or IDs) go to stderr.
    """
    import dataclasses
    import logging

    from art.node.config import load_config
    from art.node.serve import serve as run_node

    cfg = load_config(config)
    if scheduler is not None:
        if "://" not in scheduler:
            raise typer.BadParameter(f"expected an address like tcp://HOST:8786, got {scheduler!r}", param_hint="--scheduler")
        cfg = dataclasses.replace(cfg, scheduler=scheduler, workers=None, threads_per_worker=None)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("art.node")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        run_node(cfg, once=once)
    finally:
        logger.removeHandler(handler)
