"""The object store: one root URI, `file://` (embedded) or `s3://` (production), behind one small interface.

Keys are `/`-separated paths relative to the root. Writes of whole objects are atomic on both
backends (a temp file renamed into place; S3 PUTs are atomic), and `create_only` never overwrites,
so a reader never sees a half-written object. We keep this small module instead of fsspec because
Airflow's `ObjectStoragePath("s3://")` needs s3fs, which pins botocore (through aiobotocore) to an
older release line than the locked boto3; fsspec's local create-only write is not atomic either.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse


class ObjectExistsError(FileExistsError):
    """A create-only write found the key already present."""


class ObjectStore(Protocol):
    """What the pipeline needs of storage."""

    root_uri: str

    def uri(self, key: str) -> str:
        """The absolute URI of `key`."""
        ...

    def exists(self, key: str) -> bool:
        """Whether an object exists at `key`."""
        ...

    def read_bytes(self, key: str) -> bytes:
        """The object's content; FileNotFoundError if absent."""
        ...

    def write_bytes(self, key: str, data: bytes) -> None:
        """Create or replace the object atomically."""
        ...

    def create_only(self, key: str, data: bytes) -> None:
        """Create the object; ObjectExistsError if it exists. Atomic."""
        ...

    def list(self, prefix: str = "") -> list[str]:
        """Keys under `prefix` (a folder-like prefix), sorted."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key under `prefix`; return how many."""
        ...

    def delete(self, key: str) -> None:
        """Delete the object at `key`, if there is one."""
        ...

    def upload_file(self, local_path: Path, key: str) -> None:
        """Copy a local file to `key` atomically."""
        ...

    def download_file(self, key: str, local_path: Path) -> None:
        """Copy `key` to a local file."""
        ...

    def open_uri(self, uri: str) -> ObjectStore:
        """The store rooted at `uri`, opened with this store's S3 credentials and endpoint (if any).

        Source, input and label patterns may point outside the store's root; they are opened
        through this, so they get the same credentials as the store itself.
        """
        ...


def _clean_key(key: str) -> str:
    key = key.strip("/")
    if not key or any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"invalid object key {key!r}")
    return key


def _clean_prefix(prefix: str) -> str:
    prefix = prefix.strip("/")
    return "" if not prefix else _clean_key(prefix) + "/"


@dataclass
class LocalStore:
    """A store on the local filesystem under `root`."""

    root: Path
    root_uri: str = field(init=False)

    def __post_init__(self) -> None:
        self.root = self.root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.root_uri = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / _clean_key(key)

    def uri(self, key: str) -> str:
        """The absolute `file://` URI of `key`."""
        return self._path(key).as_uri()

    def open_uri(self, uri: str) -> ObjectStore:
        """The store rooted at `uri`; an `s3://` one gets its credentials from the environment."""
        return open_store(uri)

    def exists(self, key: str) -> bool:
        """Whether a file exists at `key`."""
        return self._path(key).is_file()

    def read_bytes(self, key: str) -> bytes:
        """The file's content."""
        return self._path(key).read_bytes()

    def _temp_beside(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        return Path(name)

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write to a temp file beside the target, fsync, then rename over it."""
        path = self._path(key)
        tmp = self._temp_beside(path)
        try:
            with tmp.open("wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def create_only(self, key: str, data: bytes) -> None:
        """Write a temp file, then hard-link it into place: link() fails if the target exists."""
        path = self._path(key)
        tmp = self._temp_beside(path)
        try:
            with tmp.open("wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError as exc:
                raise ObjectExistsError(f"{self.uri(key)} already exists") from exc
        finally:
            tmp.unlink(missing_ok=True)

    def list(self, prefix: str = "") -> list[str]:
        """Keys of regular files under `prefix`, skipping in-flight temp files."""
        base = self.root / _clean_prefix(prefix) if prefix.strip("/") else self.root
        if not base.is_dir():
            return []
        keys = [
            path.relative_to(self.root).as_posix()
            for path in base.rglob("*")
            if path.is_file() and not (path.name.startswith(".") and path.name.endswith(".tmp"))
        ]
        return sorted(keys)

    def delete_prefix(self, prefix: str) -> int:
        """Remove the folder `prefix` and everything in it."""
        base = self.root / _clean_prefix(prefix)
        if not base.is_dir():
            return 0
        count = sum(1 for path in base.rglob("*") if path.is_file())
        shutil.rmtree(base)
        return count

    def delete(self, key: str) -> None:
        """Remove the file at `key`, if there is one."""
        self._path(key).unlink(missing_ok=True)

    def upload_file(self, local_path: Path, key: str) -> None:
        """Copy a local file into the store atomically."""
        path = self._path(key)
        tmp = self._temp_beside(path)
        try:
            shutil.copyfile(local_path, tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def download_file(self, key: str, local_path: Path) -> None:
        """Copy a stored file to `local_path`."""
        shutil.copyfile(self._path(key), local_path)


@dataclass
class S3Store:
    """A store in an S3 bucket under an optional prefix, through boto3."""

    bucket: str
    prefix: str = ""
    client_kwargs: dict[str, Any] = field(default_factory=dict)
    root_uri: str = field(init=False)

    def __post_init__(self) -> None:
        import boto3  # a second of import time: only when an s3:// store is used

        self.prefix = _clean_prefix(self.prefix)
        self.root_uri = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self._client = boto3.client("s3", **self.client_kwargs)

    def _key(self, key: str) -> str:
        return self.prefix + _clean_key(key)

    def uri(self, key: str) -> str:
        """The absolute `s3://` URI of `key`."""
        return f"s3://{self.bucket}/{self._key(key)}"

    def open_uri(self, uri: str) -> ObjectStore:
        """The store rooted at `uri`; an `s3://` one uses this store's client settings (credentials, endpoint)."""
        if uri.rstrip("/") == self.root_uri:
            return self
        return open_store(uri, self.client_kwargs)

    def exists(self, key: str) -> bool:
        """Whether the object exists (HEAD)."""
        from botocore.exceptions import ClientError

        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def read_bytes(self, key: str) -> bytes:
        """The object's content; FileNotFoundError if absent."""
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
        except self._client.exceptions.NoSuchKey as exc:
            raise FileNotFoundError(self.uri(key)) from exc
        return bytes(response["Body"].read())

    def write_bytes(self, key: str, data: bytes) -> None:
        """PUT the object (S3 PUTs replace atomically)."""
        self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def create_only(self, key: str, data: bytes) -> None:
        """PUT with `If-None-Match: *`: the server refuses (412) when the key exists."""
        from botocore.exceptions import ClientError

        try:
            self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*")
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise ObjectExistsError(f"{self.uri(key)} already exists") from exc
            raise

    def _iter_keys(self, prefix: str) -> Iterator[str]:
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + _clean_prefix(prefix)):
            for item in page.get("Contents", []):
                yield item["Key"][len(self.prefix) :]

    def list(self, prefix: str = "") -> list[str]:
        """Keys under `prefix`, sorted."""
        return sorted(self._iter_keys(prefix))

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under `prefix` in batches of 1000."""
        keys = self.list(prefix)
        for start in range(0, len(keys), 1000):
            batch = [{"Key": self.prefix + key} for key in keys[start : start + 1000]]
            response = self._client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
            )
            # DeleteObjects answers 200 even when some keys failed: they are listed under "Errors".
            if errors := response.get("Errors"):
                first = errors[0]
                raise OSError(
                    f"could not delete {len(errors)} objects under {self.root_uri}/{prefix.strip('/')}: "
                    f"{first.get('Key')}: {first.get('Code')} {first.get('Message')}"
                )
        return len(keys)

    def delete(self, key: str) -> None:
        """Delete the object at `key` (S3 answers 204 whether or not it existed)."""
        self._client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def upload_file(self, local_path: Path, key: str) -> None:
        """Upload with one PUT per file up to 5 GB; threads are slower than one stream on 2 cores."""
        with local_path.open("rb") as handle:
            self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=handle)

    def download_file(self, key: str, local_path: Path) -> None:
        """Download the object to `local_path`."""
        from boto3.s3.transfer import TransferConfig
        from botocore.exceptions import ClientError

        try:
            self._client.download_file(
                self.bucket, self._key(key), str(local_path), Config=TransferConfig(use_threads=False)
            )
        except ClientError as exc:
            # The same error as LocalStore and read_bytes for an absent key (the HEAD answers 404).
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise FileNotFoundError(self.uri(key)) from exc
            raise


def s3_client_kwargs_from_env(endpoint_url: str | None = None) -> dict[str, Any]:
    """boto3 client settings: the given or configured endpoint, the configured timeout
    (`MLOPS_S3_TIMEOUT`); credentials and retries (`AWS_MAX_ATTEMPTS`) from the standard AWS chain."""
    from mlops_pipeline.settings import S3Settings

    configured = S3Settings()
    endpoint = endpoint_url or configured.endpoint_url
    kwargs: dict[str, Any] = {}
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    if configured.region:
        kwargs["region_name"] = configured.region
    if configured.timeout is not None:
        from botocore.config import Config

        # A stalled S3 server answers nothing: without this, each call of a task waits up to
        # 60 s per attempt (botocore's default) before its retries and then the task's can start.
        kwargs["config"] = Config(connect_timeout=configured.timeout, read_timeout=configured.timeout)
    return kwargs


def s3_client_kwargs_from_connection(
    login: str | None, password: str | None, extra: dict[str, Any], endpoint_url: str | None = None
) -> dict[str, Any]:
    """boto3 client settings from an Airflow `aws` connection (login = key id, password = secret,
    extra `endpoint_url`, `region_name`); the connection wins over the environment."""
    kwargs = s3_client_kwargs_from_env(endpoint_url)
    if extra.get("endpoint_url"):
        kwargs["endpoint_url"] = extra["endpoint_url"]
    if extra.get("region_name"):
        kwargs["region_name"] = extra["region_name"]
    if login and password:
        kwargs["aws_access_key_id"] = login
        kwargs["aws_secret_access_key"] = password
    return kwargs


def open_store(uri: str, s3_client_kwargs: dict[str, Any] | None = None) -> ObjectStore:
    """Open the store rooted at `uri` (`file:///abs/path`, a plain absolute path, or `s3://bucket/prefix`)."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"s3 store URI needs a bucket: {uri!r}")
        kwargs = s3_client_kwargs if s3_client_kwargs is not None else s3_client_kwargs_from_env()
        return S3Store(bucket=parsed.netloc, prefix=parsed.path, client_kwargs=kwargs)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"file store URI must be file:///absolute/path, got {uri!r}")
        # Percent-decode: LocalStore.root_uri (Path.as_uri) escapes spaces, '%', '#', ...
        return LocalStore(Path(unquote(parsed.path)))
    if parsed.scheme == "" and uri.startswith("/"):
        return LocalStore(Path(uri))
    raise ValueError(f"unsupported store URI {uri!r}: use file:///absolute/path or s3://bucket/prefix")


def glob_keys(store: ObjectStore, pattern: str) -> list[str]:
    """Keys matching a shell-style `pattern` (`*`, `?`, `[..]`); lists only the part before the first wildcard.

    As in a shell, wildcards match within one path segment: `a/*.csv` does not match `a/b/c.csv`.
    """
    parts = pattern.strip("/").split("/")
    literal_parts = []
    for part in parts[:-1]:
        if any(ch in part for ch in "*?["):
            break
        literal_parts.append(part)
    prefix = "/".join(literal_parts)
    return [key for key in store.list(prefix) if _match_segments(key.split("/"), parts)]


def _match_segments(key_parts: list[str], pattern_parts: list[str]) -> bool:
    return len(key_parts) == len(pattern_parts) and all(
        fnmatch.fnmatchcase(key_part, pattern_part)
        for key_part, pattern_part in zip(key_parts, pattern_parts, strict=True)
    )


def safe_segment(value: str) -> str:
    """A readable key segment from an arbitrary id such as an Airflow run id (`:` and `+` replaced)."""
    cleaned = "".join(ch if ch.isalnum() or ch in "-_.=" else "_" for ch in value).strip("._")
    if not cleaned:
        raise ValueError(f"cannot make a key segment from {value!r}")
    return cleaned
