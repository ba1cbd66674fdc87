"""The run directory: layout, manifests, atomic writes and the lock.

Every file a stage produces is written under a temporary name and renamed, so
a reader (or a re-run after SIGKILL) never sees half a file; a manifest says
`complete` only after every output is in place.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import glob
import hashlib
import json
import os
import shutil
import stat
from pathlib import Path
from typing import NamedTuple

from adaptctl.core.errors import AdaptctlError, RunFailed, UserError
from adaptctl.core.redact import redact

STAGES = ("prepare", "train", "distill", "evaluate", "export")
# distill's cache of the teacher's logits, kept under prepare/ beside the data it was computed on.
TEACHER_LOGITS = "teacher_logits"
# A folder is adaptctl's run directory only when it holds this file: stages replace and remove
# folders inside it (prepare/, train/checkpoints/ ...), which must never be a user's own.
MARKER = ".adaptctl-run"
MARKER_VERSION = 1


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------- atomic I/O
def atomic_write(path: Path, write) -> Path:
    """`write(tmp)` writes the file under a temporary name, which then replaces `path`: a reader sees the
    old file or the whole new one, never half of it.  ".NAME.tmp-PID" is the name clear_stale removes
    when a killed process left it behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = leftover_path(path, "tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:  # Ctrl-C mid-write too: never leave the temp file behind
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        _raise_write_error(path, exc)
    clear_stale(path)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    """Every text output of a run goes through here, so secrets are redacted here (redact.py)."""
    text = redact(text)
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: Path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


@contextlib.contextmanager
def atomic_dir(target: Path, keep_existing: bool = False):
    """Yield a temporary folder that replaces `target` only if the block succeeds.  With
    `keep_existing`, a `target` that is there when the block ends (another process finished first)
    is kept and the new folder dropped: for a cache whose entries are equal whoever writes them."""
    target = Path(target)
    tmp = leftover_path(target, "tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        clear_stale(target)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as exc:
        _raise_write_error(target, exc)
    try:
        yield tmp
        replace_dir(tmp, target, keep_existing=keep_existing)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_write_error(target, exc)


def cached_model_folder(name: str, write) -> Path:
    """ADAPTCTL_CACHE/models/<name>: built on the first call by write(temporary folder), renamed into place
    whole (atomic_dir), and reused once it holds config.json."""
    target = cache_dir() / "models" / name
    if not (target / "config.json").is_file():
        with atomic_dir(target, keep_existing=True) as tmp:
            write(tmp)
    return target


def replace_dir(new: Path, target: Path, keep_existing: bool = False):
    """Put folder `new` in place of `target`, the one way adaptctl replaces a folder.  Two renames
    cannot be one atomic step, so the old folder is first set aside under a backup name
    (`.NAME.old-PID`) and only removed once the new one is in place: a process killed between the
    renames leaves the backup, which clear_stale (at the next replace, or RunDir.lock via recover)
    puts back as `target`."""
    new, target = Path(new), Path(target)
    if keep_existing:
        _publish_unless_there(new, target)
    else:
        backup = _set_aside(target)
        try:
            _put_in_place(new, target)
        except BaseException:  # an error, not a kill: undo the first rename here and now
            if backup is not None and not _present(target):
                os.replace(backup, target)
            raise
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    clear_stale(target)  # a killed earlier run's .old-/.tmp- folders, whoever renamed them


def _set_aside(target: Path) -> Path | None:
    """Rename `target` to its backup name; None when there was no `target`."""
    if not _present(target):
        return None
    backup = leftover_path(target, "old")
    shutil.rmtree(backup, ignore_errors=True)  # this pid's own, from an earlier failed replace
    os.replace(target, backup)
    return backup


def _put_in_place(new: Path, target: Path):
    # Its own function so that the crash tests (tests/test_primitives.py) can kill a process at
    # exactly this step, between the two renames.
    os.replace(new, target)


def _publish_unless_there(new: Path, target: Path):
    # rename(2) refuses a non-empty target folder, which is how a concurrent writer that won shows.
    try:
        os.rename(new, target)
    except OSError:
        if not (target.is_dir() and not _empty_dir(target)):
            raise
        shutil.rmtree(new, ignore_errors=True)


def _present(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _empty_dir(folder: Path) -> bool:
    return next(folder.iterdir(), None) is None


def clear_stale(target: Path):
    """Tidy the temp/old siblings of `target` a killed process left (never a live one's), and only
    inside a run directory or adaptctl's cache: elsewhere (predict --output) a look-alike name may be
    the user's.  A backup with no `target` is the old folder of a replace killed between its two
    renames: it is put back (the newest, should there be several); any other leftover is removed."""
    if not owned_by_adaptctl(target):
        return
    dead = [s for s in target.parent.glob(f".{glob.escape(target.name)}.*-*") if _left_by_dead_process(s, target)]
    backups = sorted((s for s in dead if (left := parse_leftover(s.name)) is not None and left.kind == "old" and s.is_dir() and not s.is_symlink()),
                     key=lambda s: s.stat().st_mtime, reverse=True)
    if backups and not _present(target):
        with contextlib.suppress(OSError):
            os.replace(backups[0], target)
    for sibling in dead:
        if not _present(sibling):
            continue  # the backup just put back
        if sibling.is_dir() and not sibling.is_symlink():
            shutil.rmtree(sibling, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                sibling.unlink()


def leftover_path(target: Path, kind: str) -> Path:
    """This process's temporary ("tmp") or backup ("old") name for `target`: `.NAME.KIND-PID`, the
    pid telling clear_stale whether its maker is still alive."""
    return target.with_name(f".{target.name}.{kind}-{os.getpid()}")


class Leftover(NamedTuple):
    target: str  # the name of the file or folder it was the temporary or the backup of
    kind: str    # "tmp" (atomic_write, atomic_dir) or "old" (replace_dir's backup)
    pid: int     # the process that made it


def parse_leftover(name: str) -> Leftover | None:
    """`.TARGET.tmp-PID` or `.TARGET.old-PID` read back into its parts; None for any other name
    (which adaptctl never removes)."""
    head, _, pid = name.rpartition("-")
    target, _, kind = head.rpartition(".")
    if not (target.startswith(".") and len(target) > 1 and kind in ("tmp", "old") and pid.isdecimal()):
        return None
    return Leftover(target[1:], kind, int(pid))


def _left_by_dead_process(sibling: Path, target: Path) -> bool:
    """Whether `sibling` is a leftover of `target` made by a process that is dead."""
    leftover = parse_leftover(sibling.name)
    return (leftover is not None and leftover.target == target.name and leftover.pid != os.getpid()
            and not process_alive(leftover.pid))


def recover(root: Path, depth: int = 3):
    """Run clear_stale for every target under `root` (down to `depth` folders) that has a leftover
    backup, so a folder a killed replace_dir set aside is back before any stage reads it.  Folders
    whose names start with a dot (adaptctl's temp and backup folders) are not entered."""
    root = Path(root)
    for folder, dirs, files in os.walk(root):
        level = len(Path(folder).relative_to(root).parts)
        for name in (*dirs, *files):
            leftover = parse_leftover(name)
            if leftover is not None and leftover.kind == "old":
                clear_stale(Path(folder) / leftover.target)
        dirs[:] = [d for d in dirs if not d.startswith(".") and level + 1 < depth]


def read_json_object(path: Path) -> dict:
    """A JSON file's object, or {} where the file is absent, unreadable, not JSON or not an object: for
    the records that may be missing (adaptctl.json, adapter_config.json, metrics.json), read as advice."""
    try:
        found = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def cache_dir() -> Path:
    """adaptctl's cache (prepared data, converted models, peft verdicts): ADAPTCTL_CACHE, else ~/.cache/adaptctl."""
    return Path(os.environ.get("ADAPTCTL_CACHE") or Path.home() / ".cache" / "adaptctl").expanduser()


def owned_by_adaptctl(path: Path) -> bool:
    """Whether `path` lies inside a marked run directory or adaptctl's cache (ADAPTCTL_CACHE)."""
    path = Path(path).absolute()
    if path.is_relative_to(cache_dir().absolute()):
        return True
    return any((folder / MARKER).is_file() for folder in path.parents)


def path_for_libraries(path: Path) -> Path:
    """`path` itself, or, where the value of a secret is part of it, a symbolic link to it under adaptctl's
    cache whose name holds none.  Libraries record the path they write to in files adaptctl cannot
    redact (the Trainer pickles its arguments into every checkpoint's training_args.bin; trackers log
    output_dir and run_name; peft writes the base model's path into adapter_config.json), or that
    adaptctl must read back (a lineage's run directories): given the link, they never see the secret."""
    path = Path(path).absolute()
    if redact(str(path)) == str(path):
        return path
    path.mkdir(parents=True, exist_ok=True)
    link = cache_dir() / "paths" / hashlib.sha256(str(path).encode()).hexdigest()[:16]
    if not (link.is_symlink() and os.readlink(link) == str(path)):
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = leftover_path(link, "tmp")
        tmp.unlink(missing_ok=True)
        os.symlink(path, tmp)
        os.replace(tmp, link)
    return link


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


class CannotWrite(UserError):
    """The file system refused a write (permissions, read-only): exit 1, but unlike other user
    errors it can come after a stage started replacing its outputs."""


def _raise_write_error(path: Path, exc: BaseException):
    """Re-raise `exc`, as a UserError/RunFailed naming `path` when it is a full or read-only disk."""
    mapped = write_failure(path, exc)
    if mapped is None:
        raise exc
    raise mapped from exc


class DiskFull(RunFailed):
    """A write failed for want of space: exit 3.  A sweep stops at it (every later trial would fail too)."""


def write_failure(path: Path | str, exc: BaseException) -> AdaptctlError | None:
    """The error to show for a write to `path` that failed with `exc` on a full or read-only
    disk (exit 3 / exit 1 naming the path), or None when `exc` is something else."""
    code = _errno(exc, path)
    if code == errno.ENOSPC:
        return DiskFull(f"no space left on the device while writing {path}",
                        hint="free disk space and run again; earlier outputs are kept")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return CannotWrite(f"cannot write {path}: {os.strerror(code)}", hint="choose a writable --run-dir")
    return None


# How writers that are not Python's own report a failed write: safetensors (Rust) names the OS
# error in its message; torch.save's zip writer only says it could not write, without a cause.
_ERRNO_WORDS = {errno.ENOSPC: ("No space left on device", "os error 28", "database or disk is full"),
                errno.EACCES: ("Permission denied", "os error 13"),
                errno.EROFS: ("Read-only file system", "os error 30")}
_TORCH_WRITE_FAILED = ("PytorchStreamWriter failed writing", "inline_container.cc")


def disk_failure(exc: BaseException, path: Path | str | None = None) -> AdaptctlError | None:
    """write_failure for an error a library raised while (or after) a write failed: the full or read-only
    disk may be its cause or context (Optuna's AssertionError over SQLite's "database or disk is full",
    shutil.Error holding copytree's failures).  `path`: what was being written, else the file the OS named."""
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and not any(cause is e for e in chain):
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    first = next((e for e in reversed(chain) if isinstance(e, (DiskFull, CannotWrite))), None)
    if first is not None:  # adaptctl's own word, from the write that failed first
        return first
    for exc in chain:
        if (mapped := write_failure(path or getattr(exc, "filename", None) or "the run directory", exc)) is not None:
            return mapped
    return None


def _errno(exc: BaseException, path: Path | str) -> int | None:
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno
    if not isinstance(exc, Exception) or isinstance(exc, AdaptctlError):
        return None
    text = str(exc)
    for code, words in _ERRNO_WORDS.items():
        if any(w in text for w in words):
            return code
    if any(w in text for w in _TORCH_WRITE_FAILED) and _nearly_full(path):
        return errno.ENOSPC
    return None


def _nearly_full(path: Path | str) -> bool:
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free < 64 * 2**20
    except OSError:
        return False


def file_hash(path: Path) -> str:
    """sha256 of a file, or of a folder's files (names and contents)."""
    digest = hashlib.sha256()
    path = Path(path)
    if not path.is_dir():
        require_regular_file(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def require_regular_file(path: Path):
    """A file adaptctl reads whole (to hash it, to read it) must be a regular file: /dev/zero, a FIFO or a
    terminal would be read for ever, or block."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise UserError(f"{path} is {file_kind(mode)}, not a regular file",
                        hint="name a data file (copy the stream into one first)")


def file_kind(mode: int) -> str:
    """What a path's st_mode says it is, in words, for messages."""
    for test, kind in ((stat.S_ISREG, "a file"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a pipe (FIFO)"),
                       (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"


HASH_MEMO = "file-hashes.json"  # in cache_dir(): each file's sha256 by its path, size, mtime and inode
MAX_MEMO = 10_000


def content_hash(path: Path) -> str:
    """file_hash of a file or folder (a model's weights: gigabytes), each file hashed again only when its
    size, mtime or inode changed since adaptctl last hashed it: for the keys that must follow what a
    model folder holds without reading all of it at every command."""
    path = Path(path).absolute()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    memo, digest, changed = read_json_object(cache_dir() / HASH_MEMO), hashlib.sha256(), False
    for file in files:
        info = file.stat()
        stamp = f"{info.st_size}:{info.st_mtime_ns}:{info.st_ino}"
        entry = memo.get(str(file))
        if not (isinstance(entry, list) and entry[0] == stamp):
            entry, changed = [stamp, file_hash(file)], True
            memo[str(file)] = entry
        digest.update(f"{file.relative_to(path) if path.is_dir() else file.name}\0{entry[1]}\0".encode())
    if changed:
        with contextlib.suppress(AdaptctlError, OSError):  # a memo that cannot be saved costs time, not truth
            atomic_write_json(cache_dir() / HASH_MEMO, dict(list(memo.items())[-MAX_MEMO:]))
    return digest.hexdigest()


def json_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


# ---------------------------------------------------------------- the run
class RunDir:
    def __init__(self, root: Path | str):
        self.given = str(root)  # as the user wrote it: Path("") would read as the current directory
        self.root = Path(root)

    def stage(self, name: str) -> Path:
        return self.root / name

    def manifest_path(self, stage: str) -> Path:
        return self.root / stage / "manifest.json"

    def read_manifest(self, stage: str) -> dict | None:
        try:
            manifest = json.loads(self.manifest_path(stage).read_text())
        except (OSError, ValueError):  # missing, unreadable, not UTF-8 or not JSON: no manifest
            return None
        return manifest if isinstance(manifest, dict) else None

    def is_complete(self, stage: str, key: str | None = None) -> bool:
        manifest = self.read_manifest(stage)
        if not manifest or manifest.get("status") != "complete":
            return False
        return key is None or manifest.get("key") == key

    def write_manifest(self, stage: str, **fields) -> Path:
        manifest = {"stage": stage, **fields, "versions": versions()}
        return atomic_write_json(self.manifest_path(stage), manifest)

    def require(self, stage: str, needed_by: str) -> dict:
        manifest = self.read_manifest(stage)
        if not manifest or manifest.get("status") != "complete":
            raise UserError(f"{needed_by} needs a complete {stage} stage in {self.root}",
                            hint=f"run `adaptctl {stage} RECIPE` (or `adaptctl run RECIPE`) first")
        return manifest

    @contextlib.contextmanager
    def lock(self):
        """One writer per run directory; the kernel drops the lock (filelock's flock) if the holder
        dies.  Every stage enters here first, so this is also where a folder is claimed as a run
        directory (claim) and where a replace killed halfway is put right (recover)."""
        from filelock import FileLock, Timeout

        path = self.root / ".lock"
        try:
            self.claim()
            lock = FileLock(path, timeout=0)  # never wait: another writer is a user error, said at once
            lock.acquire()
        except Timeout:
            raise UserError(f"run directory {self.root} is locked by another adaptctl process (pid {_holder(path)}): {path}",
                            hint="wait for it to finish, or use another --run-dir") from None
        except OSError as exc:
            raise UserError(f"cannot use {self.root} as a run directory: {exc.strerror or exc}",
                            hint="choose a writable folder with --run-dir") from None
        try:
            # The pid is for the message above; the same file (inode) is written, never replaced, as
            # replacing it would leave the lock on an unlinked file.
            path.write_text(str(os.getpid()))
            recover(self.root)
            yield self
        finally:
            lock.release()

    # ------------------------------------------------------------ ownership
    def claim(self):
        """Make sure the folder is adaptctl's before anything is written or removed in it: a new or
        empty folder gets the marker; a marked one, or one an earlier adaptctl made, is used; a
        user's folder (not empty, no marker), the current directory as '', the filesystem root and
        the home folder are refused."""
        self._refuse_obvious_mistakes()
        if (self.root / MARKER).is_file():
            return
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"cannot use {self.root} as a run directory: it is a file",
                            hint="choose an empty or new folder with --run-dir")
        if self.root.is_dir() and not _empty(self.root) and not _made_by_earlier_adaptctl(self.root):
            raise UserError(f"--run-dir {self.root} is not empty and is not an adaptctl run directory "
                            f"(no {MARKER} file): adaptctl replaces folders such as prepare/ and train/ in it",
                            hint="choose an empty or new --run-dir")
        if self.root.is_dir() and not _empty(self.root):
            from adaptctl.core import console

            console.info(f"{self.root}: a run directory of an earlier adaptctl; marking it as one ({MARKER})")
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.root / MARKER, {"adaptctl_run_directory": MARKER_VERSION, "created_at": now(),
                                               "adaptctl": versions()["adaptctl"]})

    def _refuse_obvious_mistakes(self):
        if self.given.strip() == "":
            raise UserError("--run-dir is empty (it would be the current directory)",
                            hint="choose an empty or new --run-dir, e.g. runs/NAME")
        resolved = self.root.expanduser().resolve()
        if resolved == Path(resolved.anchor) or resolved == Path.home().resolve():
            raise UserError(f"--run-dir {self.root} is {'the filesystem root' if resolved == Path(resolved.anchor) else 'your home folder'}",
                            hint="choose an empty or new --run-dir, e.g. runs/NAME")


# Where a run directory's model is, looked for in this order.  export/model is the finished copy of
# whichever stage trained it; a recipe with a distill section trains its student in distill
# instead of train, so a run holding both is a distillation run whose product is distill/model.
MODEL_STAGES = ("export", "distill", "train")


def run_model_folder(run_dir: Path | str) -> tuple[Path, str] | None:
    """(STAGE/model, STAGE) for the first of MODEL_STAGES that is complete and has a model/ folder,
    or None.  A stage whose manifest is not complete (running, failed, interrupted) is passed over:
    its model/ may be an earlier run's, or about to be replaced."""
    run = RunDir(run_dir)
    for stage in MODEL_STAGES:
        model = run.stage(stage) / "model"
        if run.is_complete(stage) and model.is_dir():
            return model, stage
    return None

def _holder(lock_file: Path) -> str:
    try:
        return lock_file.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def _empty(folder: Path) -> bool:
    # A lone .lock is what a run killed before it wrote anything leaves.
    return all(entry.name == ".lock" for entry in folder.iterdir())


def _made_by_earlier_adaptctl(folder: Path) -> bool:
    """A run directory from before the marker existed: its lock, its resolved recipe and a stage manifest."""
    if not ((folder / ".lock").is_file() and (folder / "recipe.yaml").is_file()):
        return False
    for stage in STAGES:
        try:
            manifest = json.loads((folder / stage / "manifest.json").read_text())
        except (OSError, ValueError):
            continue
        if isinstance(manifest, dict) and manifest.get("stage") == stage:
            return True
    return False


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {}
    for name in ("adaptctl", "torch", "transformers", "peft", "datasets", "accelerate"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


# ---------------------------------------------------------------- lineage
def is_run_directory(path: Path) -> bool:
    """A folder adaptctl ran stages in (its marker, or the recipe.yaml and stage folders of an earlier one)."""
    path = Path(path)
    return path.is_dir() and ((path / MARKER).is_file() or _made_by_earlier_adaptctl(path))


def recipe_hash(text: str) -> str:
    """A phase's recipe hash: sha256 of its resolved recipe.yaml text (every default spelled out)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def run_lineage(run_dir: Path) -> list[dict]:
    """The chain of models a run's model came from, first the plain base model, last the run itself:
    what its prepare stage recorded, or (a run from before lineage was recorded) its recipe's model.base
    and the run.  Each run entry carries its recipe hash, read now from its recipe.yaml."""
    import yaml

    run = RunDir(run_dir)
    recorded = (run.read_manifest("prepare") or {}).get("lineage")
    try:
        text = (Path(run_dir) / "recipe.yaml").read_text(encoding="utf-8")
        recipe = yaml.safe_load(text) or {}
    except (OSError, ValueError):
        return recorded if isinstance(recorded, list) and recorded else [{"run": str(Path(run_dir).resolve())}]
    if isinstance(recorded, list) and recorded and isinstance(recorded[-1], dict):
        # the run's own hash from its recipe.yaml now: a later stage (train with other settings) may have
        # rewritten it without preparing again
        return [*recorded[:-1], {**recorded[-1], "recipe_hash": recipe_hash(text)}]
    model = (recipe.get("model") or {}).get("base") if isinstance(recipe, dict) else None
    return [{"model": model}, phase_entry(Path(run_dir), recipe, text)]


def phase_entry(run_dir: Path, recipe: dict, text: str, stage: str | None = None) -> dict:
    """One run of a lineage: where it is, what it was, and the hash of its recipe."""
    entry = {"run": str(path_for_libraries(Path(run_dir).resolve())), "name": recipe.get("name"), "task": recipe.get("task"),
             "method": (recipe.get("method") or {}).get("name"), "recipe_hash": recipe_hash(text)}
    return {**entry, "model_stage": stage} if stage else entry
