"""Configuration: YAML files validated into typed models with errors that name the file and field.

Config is data; logic stays in the stages. Source paths are resolved relative to the config file.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A configuration problem, with the file and field it is about."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


class CsvOptions(_Strict):
    delimiter: str = ","
    encoding: str = "utf-8"
    quotechar: str = '"'

    @field_validator("delimiter")
    @classmethod
    def _one_char(cls, value: str) -> str:
        if len(value) != 1:
            raise ValueError("delimiter must be one character")
        return value


class LinkConfig(_Strict):
    """An explicit merge edge: the record (or event) is the same person as `type`:`column`'s value."""

    column: str
    type: str
    rule: str


class SourceConfig(_Strict):
    name: str
    system: Literal["salesforce", "segment", "generic"] = "generic"
    kind: Literal["records", "events"] = "records"
    format: Literal["csv", "parquet", "jsonl", "segment"]
    path: str
    csv: CsvOptions = Field(default_factory=CsvOptions)
    trust: int = 100
    key: str | None = None
    timestamp: str | None = None
    deleted: str | None = None
    attributes: dict[str, str | list[str]] = Field(default_factory=dict)
    identifiers: dict[str, str | list[str]] = Field(default_factory=dict)
    links: list[LinkConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _records_need_a_key(self) -> "SourceConfig":
        if self.kind == "records" and not self.key:
            raise ValueError(f"source {self.name!r}: records sources need `key` (the record id column)")
        return self

    def attribute_columns(self) -> dict[str, list[str]]:
        return {name: _as_list(cols) for name, cols in self.attributes.items()}

    def identifier_columns(self) -> dict[str, list[str]]:
        return {name: _as_list(cols) for name, cols in self.identifiers.items()}

    def referenced_columns(self) -> list[str]:
        """Every column the mapping reads, in a stable order, without repeats."""
        cols: list[str] = []
        for name in (self.key, self.timestamp, self.deleted):
            if name:
                cols.append(name)
        for group in (*self.attribute_columns().values(), *self.identifier_columns().values()):
            cols.extend(group)
        cols.extend(link.column for link in self.links)
        return list(dict.fromkeys(cols))


class IdentifierType(_Strict):
    normalizer: Literal["trim", "lower", "email", "phone", "sfid", "ip"] = "trim"
    priority: int = 100
    limit: int | None = None
    hub_cap: int | None = None
    strong: bool = False
    evidence: bool = True
    # When an edge of this type is what would join two groups, the joined group may hold at most
    # this many values of the named types (e.g. a phone may not join two different emails).
    link_limits: dict[str, int] = Field(default_factory=dict)

    @field_validator("limit", "hub_cap")
    @classmethod
    def _positive(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError("must be >= 1")
        return value


class BlocklistConfig(_Strict):
    vendor_lists: bool = True
    values: list[str] = Field(default_factory=list)
    patterns: list[str] = Field(default_factory=list)


class EmailOptions(_Strict):
    fold_gmail_dots: bool = True
    fold_plus_tags: bool = True


class IdentityConfig(_Strict):
    types: dict[str, IdentifierType]
    blocklist: BlocklistConfig = Field(default_factory=BlocklistConfig)
    email: EmailOptions = Field(default_factory=EmailOptions)
    guards: bool = True  # False switches off limits and hub caps (blocked values still apply)

    @model_validator(mode="after")
    def _link_limits_name_known_types(self) -> "IdentityConfig":
        for name, spec in self.types.items():
            unknown = sorted(set(spec.link_limits) - set(self.types))
            if unknown:
                raise ValueError(f"types.{name}.link_limits names undeclared types {unknown}")
        return self


class RunOptions(_Strict):
    output_dir: str = "out"
    default_region: str = "US"
    workers: int = Field(default=2, ge=1)  # processes that read and normalize source files in parallel


class Config(_Strict):
    run: RunOptions = Field(default_factory=RunOptions)
    sources: list[SourceConfig]
    identity: IdentityConfig
    base_dir: Path = Field(default=Path("."), exclude=True)

    @model_validator(mode="after")
    def _consistent(self) -> "Config":
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique; repeated: {dupes}")
        known = set(self.identity.types)
        for source in self.sources:
            used = set(source.identifiers) | {link.type for link in source.links}
            unknown = sorted(used - known)
            if unknown:
                raise ValueError(
                    f"source {source.name!r} uses identifier types {unknown} that identity.types does not declare"
                )
        return self

    def source_files(self, source: SourceConfig) -> list[Path]:
        """The files a source's glob matches, sorted so that runs are deterministic."""
        pattern = Path(source.path)
        if not pattern.is_absolute():
            pattern = self.base_dir / pattern
        return sorted(Path(p) for p in glob.glob(str(pattern)))

    def output_path(self) -> Path:
        out = Path(self.run.output_dir)
        return out if out.is_absolute() else self.base_dir / out


def _format_validation_error(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: invalid configuration"]
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        lines.append(f"  {where}: {item['msg']}")
    return "\n".join(lines)


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config; raise ConfigError naming the file and the field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(path, exc)) from exc
    config.base_dir = path.resolve().parent
    return config
