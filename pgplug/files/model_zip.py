"""Read an SB3 model zip's ``data`` without running code from it, and rebuild what SB3's ``load`` needs.

:func:`read_zip` opens the archive with bounds on what it decompresses and reads ``data`` as JSON.
:func:`rebuild_objects` turns each pickled entry of ``data`` into an object through
:mod:`pgplug.files.safe_pickle` (or Python's unpickler for a file the user trusts), rebuilds what
cannot be read that way (spaces from an env, schedules from the saved learning rate) and refuses
the rest in one line that names the entry; the result goes to SB3's ``load`` as ``custom_objects``,
so SB3 unpickles nothing itself. SB3 reads the tensors with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import pickletools
import re
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import gymnasium as gym
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.utils import FloatSchedule

from pgplug.errors import PgplugError, one_line
from pgplug.files.safe_pickle import UntrustedPickleError, loads

#: The largest ``data`` entry read (SB3 writes a few kilobytes; a zip bomb would be gigabytes).
MAX_DATA_BYTES = 16 * 2**20
#: Any member this large must not be compressed more than :data:`MAX_COMPRESSION_RATIO` times.
LARGE_MEMBER_BYTES = 64 * 2**20
MAX_COMPRESSION_RATIO = 100
#: Members of an SB3 zip: data, policy.pth, policy.optimizer.pth, pytorch_variables.pth, version, system info.
MAX_MEMBERS = 64
DEFAULT_CLIP_RANGE = 0.2  # PPO's default, for a clip_range schedule that cannot be rebuilt
TRUST_HINT = "pass --trust-file (trust=True in Python) only if you trust the file"


@dataclass
class ModelZip:
    """What an SB3 zip says about itself, read without unpickling anything.

    :param path: the file (a label such as ``<file object>`` for an open file)
    :param data: the raw ``data`` JSON (pickled entries still base64 ``:serialized:`` blobs)
    :param members: the archive's file names
    :param policy_class: ``(module, name)`` of the saved policy class
    :param content: the archive's bytes when it was read from an open file rather than a path
    """

    path: Path
    data: dict[str, Any]
    members: list[str]
    policy_class: tuple[str, str]
    content: bytes | None = None

    def pickled(self, key: str) -> bytes | None:
        """The pickle bytes of entry ``key``, or None when it is stored as plain JSON."""
        item = self.data.get(key)
        if not (isinstance(item, dict) and ":serialized:" in item):
            return None
        try:
            return base64.b64decode(str(item[":serialized:"]).encode(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise PgplugError(f"{self.path}: corrupt entry {key!r} in 'data' (bad base64)") from exc

    def pickled_type(self, key: str) -> str:
        """The type name SB3 wrote next to a pickled entry, e.g. ``gym.spaces.box.Box``."""
        item = self.data.get(key)
        text = item.get(":type:", "") if isinstance(item, dict) else ""
        match = re.fullmatch(r"<class '(.+)'>", str(text))
        return match.group(1) if match else str(text)

    @property
    def policy_name(self) -> str:
        return ".".join(self.policy_class)

    @property
    def source(self) -> Path | io.BytesIO:
        """What SB3's ``load`` and :class:`zipfile.ZipFile` open: the path, or the bytes read from a file object."""
        return self.path if self.content is None else io.BytesIO(self.content)

    def open(self) -> zipfile.ZipFile:
        return zipfile.ZipFile(self.source)


def resolve_path(path: str | Path) -> Path:
    """``path``, or ``path.zip`` when only that exists (SB3 accepts both)."""
    path = Path(path)
    if not path.exists() and path.suffix != ".zip" and Path(f"{path}.zip").exists():
        path = Path(f"{path}.zip")
    if not path.exists():
        raise PgplugError(f"no such model file: {path}")
    if not path.is_file():
        raise PgplugError(f"{path} is a directory, not a model zip")
    return path


def read_zip(source: str | Path | IO[bytes]) -> ModelZip:
    """Open a model zip (a path or an open binary file) and read its ``data`` JSON; fail in one line when the
    file is not a sound SB3 zip or would decompress to far more than it holds."""
    if isinstance(source, (str, Path)):
        path, content = resolve_path(source), None
        with path.open("rb") as file:
            head = file.read(4)
    else:
        path, content = Path(getattr(source, "name", "<file object>")), source.read()
        head = content[:4]
    info = ModelZip(path, {}, [], ("", ""), content)
    try:
        with info.open() as archive:
            check_sizes(path, archive)
            members = archive.namelist()
            bad_member = archive.testzip()
            if bad_member is not None:
                raise PgplugError(f"{path} is corrupt: archive member {bad_member!r} fails its CRC check")
            if "data" not in members:
                raise PgplugError(f"{path} has no 'data' entry: not a Stable-Baselines3 model zip")
            raw = archive.read("data")
    except PgplugError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error, NotImplementedError, ValueError) as exc:
        if head.startswith(b"PK"):
            raise PgplugError(f"{path} is a truncated or corrupt zip archive ({one_line(exc)})") from exc
        raise PgplugError(f"{path} is not a zip archive, so not an SB3/pgplug model file") from exc
    try:
        data = json.loads(raw.decode())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise PgplugError(f"{path} is corrupt: its 'data' entry is not valid JSON ({one_line(exc)})") from exc
    if not isinstance(data, dict):
        raise PgplugError(f"{path} is corrupt: its 'data' entry is not a JSON object")
    if "policy.pth" not in members:
        raise PgplugError(f"{path} has no policy weights ('policy.pth'): not an on-policy SB3 model zip")
    info.data, info.members = data, members
    info.policy_class = _policy_class_name(info)
    return info


def check_sizes(path: Path, archive: zipfile.ZipFile) -> None:
    """Refuse archives that would decompress to far more than they hold, before reading any of it."""
    members = archive.infolist()
    if len(members) > MAX_MEMBERS:
        raise PgplugError(f"{path} has {len(members)} members; an SB3 model zip has a handful (at most {MAX_MEMBERS})")
    for member in members:
        if member.filename == "data" and member.file_size > MAX_DATA_BYTES:
            raise PgplugError(
                f"{path}: its 'data' entry decompresses to {member.file_size:,} bytes, more than the "
                f"{MAX_DATA_BYTES:,} an SB3 model zip needs; refused"
            )
        ratio = member.file_size / max(member.compress_size, 1)
        if member.file_size > LARGE_MEMBER_BYTES and ratio > MAX_COMPRESSION_RATIO:
            raise PgplugError(
                f"{path}: member {member.filename!r} decompresses {ratio:,.0f}× to {member.file_size:,} bytes "
                f"(more than {MAX_COMPRESSION_RATIO}× for a member over {LARGE_MEMBER_BYTES:,} bytes): "
                "a zip bomb; refused"
            )


def _policy_class_name(info: ModelZip) -> tuple[str, str]:
    """``(module, name)`` of the saved policy class, from the pickle's opcodes (nothing runs)."""
    blob = info.pickled("policy_class")
    if blob is None:
        raise PgplugError(f"{info.path} has no pickled 'policy_class' in its 'data': not an SB3 model zip")
    try:
        opcodes = list(pickletools.genops(blob))
    except Exception as exc:
        raise PgplugError(f"{info.path} is corrupt: its 'policy_class' pickle is unreadable ({one_line(exc)})") from exc
    strings = [arg for op, arg, _ in opcodes if isinstance(arg, str) and "UNICODE" in op.name]
    for op, arg, _ in opcodes:
        if op.name == "GLOBAL":
            module, _, name = str(arg).partition(" ")
            return _named_class(info, module, name)
        if op.name == "STACK_GLOBAL" and len(strings) >= 2:
            return _named_class(info, strings[0], strings[1])
    return _named_class(info, "", "")


def _named_class(info: ModelZip, module: str, name: str) -> tuple[str, str]:
    if module and not module.startswith("cloudpickle"):
        return module, name
    # Pickled by value (a class defined in a script): SB3 wrote its module next to the blob.
    return str(info.data["policy_class"].get("__module__", "")), "<class defined in a script>"


# -- rebuilding ----------------------------------------------------------------------------------


def saved_learning_rate(info: ModelZip) -> float | None:
    """The zip's learning rate: the saved constant, else a schedule's start value SB3 wrote beside its
    pickle (e.g. ``initial_value``), else the last rate the saved optimizer used."""
    learning_rate = info.data.get("learning_rate")
    if isinstance(learning_rate, (int, float)) and not isinstance(learning_rate, bool):
        return float(learning_rate)
    for key in ("learning_rate", "lr_schedule"):
        value = number_in_entry(info, key)
        if value is not None:
            return value
    if "policy.optimizer.pth" not in info.members:
        return None
    try:
        with info.open() as archive, archive.open("policy.optimizer.pth") as file:
            state = th.load(io.BytesIO(file.read()), map_location="cpu", weights_only=True)
        return float(state["param_groups"][0]["lr"])
    except Exception:
        return None


def number_in_entry(info: ModelZip, key: str) -> float | None:
    """A number SB3 wrote next to a pickled schedule (its first-level attributes), e.g. ``initial_value``."""
    item = info.data.get(key)
    if not isinstance(item, dict):
        return None
    for name, value in item.items():
        if name.startswith(":"):
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        match = re.search(r"val(?:ue)?=([-+0-9.eE]+)", str(value))
        if match:
            try:
                return float(match.group(1))
            except ValueError:
                continue
    return None


def env_spaces(env: Any) -> tuple[gym.Space, gym.Space]:
    """The spaces SB3 would see for ``env`` (after its own wrapping, e.g. channels-first images)."""
    from stable_baselines3.common.base_class import maybe_make_env

    wrapped = BaseAlgorithm._wrap_env(maybe_make_env(env, 0), verbose=0, monitor_wrapper=False)
    return wrapped.observation_space, wrapped.action_space


#: Entries SB3's ``load`` can do without: set to None when they cannot be read (statistics, last observations).
DISPOSABLE_ENTRIES = frozenset(
    {"_last_obs", "_last_original_obs", "_last_episode_starts", "ep_info_buffer", "ep_success_buffer", "action_noise"}
)


def rebuild_objects(
    info: ModelZip, env: Any = None, custom_objects: dict[str, Any] | None = None, trust: bool = False
) -> dict[str, Any]:
    """Every pickled entry of the zip, read safely (or, with ``trust``, unpickled) or rebuilt; ``custom_objects`` win.

    Given to SB3's ``load`` as its ``custom_objects``, so SB3 unpickles nothing itself. An entry that
    cannot be read is rebuilt where its meaning is known (spaces from ``env``, schedules from the saved
    learning rate, with a warning), dropped where SB3 does without it, and refused otherwise.
    """
    objects = dict(custom_objects or {})
    learning_rate = None
    spaces = None
    for key in info.data:
        blob = info.pickled(key)
        if key in objects or blob is None:
            continue
        try:
            objects[key] = loads(blob, trust)
            continue
        except UntrustedPickleError as exc:
            reason, untrusted = one_line(exc), True
        except Exception as exc:
            reason, untrusted = one_line(exc), False
        saved_type = info.pickled_type(key)
        if key in ("observation_space", "action_space"):
            if env is None:
                raise PgplugError(
                    f"{info.path}: cannot rebuild its {key} ({saved_type}: {reason}); pass env= to take it from the env"
                )
            spaces = spaces or env_spaces(env)
            objects[key] = spaces[0] if key == "observation_space" else spaces[1]
        elif key in ("learning_rate", "lr_schedule"):
            learning_rate = learning_rate if learning_rate is not None else saved_learning_rate(info)
            if learning_rate is None:
                raise PgplugError(
                    f"{info.path}: cannot rebuild its {key} ({saved_type}: {reason}) and it saved no learning rate; "
                    f"pass custom_objects={{'{key}': ...}}"
                )
            objects[key] = learning_rate if key == "learning_rate" else FloatSchedule(learning_rate)
            _warn(info, key, saved_type, reason, f"the constant {learning_rate:g}")
        elif key in ("clip_range", "clip_range_vf"):
            value = number_in_entry(info, key)
            value = value if value is not None else (DEFAULT_CLIP_RANGE if key == "clip_range" else None)
            objects[key] = value
            _warn(info, key, saved_type, reason, "None" if value is None else f"the constant {value:g}")
        elif untrusted and key not in DISPOSABLE_ENTRIES:
            raise PgplugError(f"{info.path}: its entry {key!r} cannot be read safely ({reason}); {TRUST_HINT}")
        elif key in ("policy_class", "policy_kwargs"):
            raise PgplugError(f"{info.path}: cannot unpickle its {key} ({reason}); the policy cannot be rebuilt")
        else:
            objects[key] = None
            _warn(info, key, saved_type, reason, "None")
    return objects


def _warn(info: ModelZip, key: str, saved_type: str, reason: str, replacement: str) -> None:
    warnings.warn(
        f"{info.path}: {key} ({saved_type}) cannot be unpickled ({reason}); using {replacement}", stacklevel=3
    )


__all__ = ["ModelZip", "read_zip", "rebuild_objects", "resolve_path", "saved_learning_rate"]
