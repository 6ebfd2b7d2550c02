"""``art jobs``: the node's jobs as rows (JSON) and as a text table, without patient identifiers."""

from __future__ import annotations

import time

__all__ = ["jobs_rows", "jobs_text"]

_COLUMNS = ("id", "state", "series_uid", "n_instances", "exit_code", "priority1_met", "recommendation", "runs", "out_dir", "detail")


def jobs_rows(jobs: list[dict]) -> list[dict]:
    """Jobs from :meth:`art.node.store.NodeStore.jobs` as JSON-ready rows (times as ISO 8601 UTC)."""
    out = []
    for j in jobs:
        row = {k: j.get(k) for k in _COLUMNS}
        row["created"] = _iso(j.get("created_at"))
        row["updated"] = _iso(j.get("updated_at"))
        row["sends"] = j.get("sends", {})
        out.append(row)
    return out


def jobs_text(rows: list[dict]) -> str:
    """A fixed-width table: one line per job, sends summarised as ``name:state``."""
    if not rows:
        return "no jobs"
    head = ("job", "state", "updated (UTC)", "series", "exit", "sends", "detail")
    lines = [head]
    for r in rows:
        sends = " ".join(f"{k}:{v['state']}" for k, v in r["sends"].items()) or "-"
        series = r["series_uid"] or ""
        lines.append((str(r["id"]), r["state"], r["updated"] or "", "…" + series[-16:] if len(series) > 17 else series,
                      "" if r["exit_code"] is None else str(r["exit_code"]), sends, (r["detail"] or "")[:100]))  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(head) - 1)]
    return "\n".join("  ".join([*(c.ljust(w) for c, w in zip(line[:-1], widths)), line[-1]]).rstrip() for line in lines)


def _iso(t: float | None) -> str | None:
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
