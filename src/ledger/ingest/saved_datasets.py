"""Folders written by Hugging Face `datasets`: `Dataset.save_to_disk(DIR)` and `DatasetDict.save_to_disk(DIR)`.

A saved `Dataset` folder holds its rows in Arrow IPC stream shards (`data-00000-of-00004.arrow`, ...)
beside `state.json` and `dataset_info.json`. `state.json`'s `_data_files` lists the shards in the
order `Dataset.load_from_disk` concatenates them, so that list, not the names, gives the row order;
the two JSON files are metadata, not records. A saved `DatasetDict` folder holds `dataset_dict.json`
and one such folder per split: which split was trained on is the whole point of a batch, so it is
refused, naming the splits, rather than read as one batch of every split.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any, Final

from ledger.errors import InputError, UsageError

__all__ = ["DATASET_DICT_FILE", "METADATA_FILES", "STATE_FILE", "saved_dataset_files"]

STATE_FILE: Final = "state.json"
DATASET_DICT_FILE: Final = "dataset_dict.json"
METADATA_FILES: Final = frozenset({STATE_FILE, "dataset_info.json", DATASET_DICT_FILE})


def saved_dataset_files(folder: Path) -> list[Path] | None:
    """The Arrow shards of a `Dataset.save_to_disk` folder in `state.json` order; None for other folders.

    A `DatasetDict` folder is a UsageError naming its splits; a `state.json` that cannot be read, or
    that names a shard that is missing, outside the folder or listed twice, is an InputError.
    """
    dict_file = folder / DATASET_DICT_FILE
    if dict_file.is_file():
        splits = _splits(folder, _read_json(dict_file))
        shown = ", ".join(splits) if splits else "none listed"
        example = f": give one split's folder, such as {folder / splits[0]}" if splits else ""
        raise UsageError(
            f"{folder}: a Hugging Face DatasetDict folder (splits: {shown}) holds several "
            f"datasets{example}"
        )
    state_file = folder / STATE_FILE
    if not state_file.is_file():
        return None
    state = _read_json(state_file)
    listed = state.get("_data_files") if isinstance(state, dict) else None
    if not isinstance(listed, list) or not listed:
        raise InputError(
            f"{state_file}: expected a non-empty list '_data_files' (a Dataset.save_to_disk state)"
        )
    if isinstance(state, dict) and state.get("_indices_data_files"):
        raise InputError(
            f"{state_file}: the rows are reordered by an indices file (an old `datasets` save): "
            "load it and save it again with datasets >= 2, or record the Dataset itself"
        )
    out: list[Path] = []
    for position, item in enumerate(listed):
        name = item.get("filename") if isinstance(item, dict) else None
        where = f"{state_file}: _data_files[{position}]"
        relative = PurePosixPath(name) if isinstance(name, str) and name else None
        if relative is None or relative.is_absolute() or ".." in relative.parts:
            raise InputError(
                f"{where}: expected a file name inside the folder, found {json.dumps(name)}"
            )
        file = folder.joinpath(*relative.parts)
        if not file.is_file():
            raise InputError(f"{where}: {name} is not in {folder}")
        if file in out:
            raise InputError(f"{where}: {name} is listed twice")
        out.append(file)
    return out


def _read_json(path: Path) -> Any:
    try:
        with path.open("rb") as f:
            return json.load(f)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except ValueError as exc:
        raise InputError(f"{path}: invalid JSON ({exc})") from exc


def _splits(folder: Path, manifest: Any) -> list[str]:
    """The split names `dataset_dict.json` lists, else the subfolders that are saved datasets."""
    splits = manifest.get("splits") if isinstance(manifest, dict) else None
    if isinstance(splits, list) and splits and all(isinstance(s, str) for s in splits):
        return [str(s) for s in splits]
    return sorted(p.name for p in folder.iterdir() if (p / STATE_FILE).is_file())
