"""Every split of a config read and checked together, with leakage between them logged."""
from __future__ import annotations

from weitiao.config import Config
from weitiao.console import log


def open_stream(cfg: Config, splits, skipped: list | None) -> None:
    """data.streaming: `splits.stream` over the training files, its first usable row read now, so that an empty
    or unreadable start is an error before any model is loaded. Rows skipped while streaming join `skipped`."""
    from weitiao.data.stream import TrainStream

    splits.stream = TrainStream(splits.train_paths, cfg.data, skipped)
    splits.stream.first()


def read_splits(cfg: Config, what: str = "rows"):
    """Every row of every split read and checked (`load_splits`: all bad rows reported together), and copies of
    training rows in val/test (leakage) logged and recorded in the report. Returns (splits, skipped): `skipped`
    collects the bad rows when `data.skip_bad_rows` is on, else it is None."""
    from weitiao.data.check import find_overlaps
    from weitiao.data.dataset import load_splits

    splits = load_splits(cfg.data, cfg.base_dir, skip_bad_rows=cfg.data.skip_bad_rows)
    skipped = list(splits.bad) if cfg.data.skip_bad_rows else None
    if cfg.data.streaming:
        open_stream(cfg, splits, skipped)
        log(f"data: train streamed from {', '.join(splits.report['train_files'])} (data.streaming: rows are checked "
            f"and tokenized as training reads them, not de-duplicated or checked for leakage); {len(splits.val)} "
            f"val / {len(splits.test)} test {what} (format {cfg.data.format})")
        return splits, skipped
    log(f"data: {len(splits.train)} train / {len(splits.val)} val / {len(splits.test)} test {what} "
        f"(format {cfg.data.format}; {splits.report['train_duplicates_dropped']} duplicates and "
        f"{splits.report['train_empty_rows_dropped']} empty rows dropped)")
    leakage = {name: find_overlaps(splits.train, getattr(splits, name), cfg.data.near_duplicate_threshold)
               for name in ("val", "test") if getattr(splits, name)}
    for name, ov in leakage.items():
        if ov.exact or ov.near:
            log(f"warning: {len(ov.exact)} exact and {len(ov.near)} near copies of training rows in the {name} "
                f"split (leakage); `weitiao data check` lists them")
    splits.report["leakage"] = {name: ov.as_dict() for name, ov in leakage.items()}
    return splits, skipped
