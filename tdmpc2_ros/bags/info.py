"""What a bag, or a folder of bags, holds, and what the trainer made of each: ``tdmpc2-ros info``.

A rosbag2 bag's ``metadata.yaml`` says its storage, start, duration and messages per topic; that is
what ``ros2 bag info`` prints, and this reads the same file (machines without the ``ros2`` command
have no other way to see it). For a folder of bags, one row per closed bag, the topics summed over
them, and the bags still open or left by a killed recorder. With the trainer's ingest ledger, each
row also says whether the bag was ingested (and into how many transitions), skipped (and why), is
still pending, or changed after it was ingested. It only reads. Pure Python: no ROS, no torch.
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from tdmpc2_ros.bags.ledger import IngestLedger, closed_bags, is_closed_bag, partial_bags
from tdmpc2_ros.runtime.digest import folder_bytes


def is_bag_folder(path: str | Path) -> bool:
    """A bag, or a folder holding bags (closed or open)."""
    p = Path(path)
    return p.is_dir() and ((p / "metadata.yaml").is_file() or bool(closed_bags(p)) or bool(partial_bags(p)))


def _utc(ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ns / 1e9))


def bag_summary(bag: Path) -> dict:
    """One bag's metadata.yaml, read; `problem` says why not where it cannot be."""
    row = {"bag": bag.name, "mb": round(folder_bytes(bag) / 1e6, 2)}
    try:
        meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        row.update({
            "storage": meta["storage_identifier"], "start": _utc(int(meta["starting_time"]["nanoseconds_since_epoch"])),
            "duration_s": round(int(meta["duration"]["nanoseconds"]) / 1e9, 3), "messages": int(meta["message_count"]),
            "topics": [{"topic": t["topic_metadata"]["name"], "type": t["topic_metadata"]["type"],
                        "messages": int(t["message_count"])} for t in meta.get("topics_with_message_count") or []],
        })
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as e:
        row["problem"] = f"unreadable metadata.yaml ({type(e).__name__}: {e})"
    return row


def ingest_status(bag: Path, ledger: IngestLedger) -> str:
    """The ledger's state of `bag` (IngestLedger.state), in words."""
    state, entry = ledger.state(bag), ledger.entry(bag) or {}
    if state == "changed":
        return f"changed since it was {entry.get('status', 'marked')}: pending again"
    if state == "skipped":
        return f"skipped: {entry.get('reason', '')}"
    if state == "ingested":
        return f"ingested ({entry.get('transitions', 0)} transitions, {entry.get('episodes', 0)} episodes)"
    return state  # pending, unreadable


def bags_info(path: str | Path, ledger_path: str | Path | None = None) -> dict:
    """A bag or a folder of bags, described; with `ledger_path`, each bag's ingest status."""
    p = Path(path)
    single = is_closed_bag(p) or (p / "metadata.yaml").is_file()
    bags = [p] if single else closed_bags(p)
    if ledger_path and not Path(ledger_path).is_file():
        raise FileNotFoundError(f"no ingest ledger at {ledger_path} (the trainer's run_dir/ingest_ledger.jsonl)")
    ledger = IngestLedger(ledger_path) if ledger_path else None
    rows = []
    for bag in bags:
        row = bag_summary(bag)
        if ledger is not None:
            row["status"] = ingest_status(bag, ledger)
        rows.append(row)
    topics: dict[tuple[str, str], int] = {}
    for row in rows:
        for t in row.get("topics", []):
            topics[(t["topic"], t["type"])] = topics.get((t["topic"], t["type"]), 0) + t["messages"]
    return {"kind": "bag" if single else "bag folder", "path": str(p), "bags": rows,
            "topics": [{"topic": k[0], "type": k[1], "messages": n} for k, n in sorted(topics.items())],
            "open": [] if single else [b.name for b in partial_bags(p)],
            "problems": [f"{r['bag']}: {r['problem']}" for r in rows if "problem" in r]}


def format_bags_info(info: dict) -> str:
    rows = info["bags"]
    lines = [f"{info['kind']}: {info['path']} ({len(rows)} closed, {sum(r['mb'] for r in rows):.1f} MB, "
             f"{sum(r.get('messages', 0) for r in rows)} messages)"]
    status = any("status" in r for r in rows)
    lines.append(f"  {'bag':<34} {'storage':<8} {'start (UTC)':<19} {'duration s':>10} {'messages':>9} {'MB':>8}"
                 + ("  ingest" if status else ""))
    for r in rows:
        if "problem" in r:
            lines.append(f"  {r['bag']:<34} {r['problem']}")
            continue
        lines.append(f"  {r['bag']:<34} {r['storage']:<8} {r['start']:<19} {r['duration_s']:>10} {r['messages']:>9} "
                     f"{r['mb']:>8}" + (f"  {r['status']}" if status else ""))
    lines.append("  topics:")
    lines += [f"    {t['topic']} ({t['type']}): {t['messages']} messages" for t in info["topics"]]
    if info["open"]:
        lines.append(f"  open, or left by a killed recorder (never ingested): {', '.join(info['open'])}")
    lines += [f"  PROBLEM: {p}" for p in info["problems"]]
    return "\n".join(lines)
