"""Settings: defaults < magv.toml < MAGV_* environment variables.

The file is `magv.toml` in the working directory, or the path in `MAGV_CONFIG` / `--config`.
Nested fields use `__` in environment variables: `MAGV_PIPELINE__RUNS=5`,
`MAGV_LLM__ROLES__RESPONDER__ENDPOINTS='["http://gpu1:8000/v1"]'`.
"""

from __future__ import annotations

import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from magv.errors import BadInput
from magv.serving.registry import DEFAULT_MODEL, MODELS

ROLES = ("investigator", "responder", "reverse", "judge")
_toml_data: ContextVar[dict[str, Any] | None] = ContextVar("magv_toml_data", default=None)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RoleSettings(_Section):
    """Per agent role; unset fields fall back to the `[llm]` defaults."""

    model: str | None = None
    endpoints: list[str] | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    timeout_s: float | None = Field(default=None, gt=0)
    tool_mode: Literal["native", "json"] | None = None


class LLMSettings(_Section):
    # Empty endpoints: magv starts the embedded llama.cpp server itself.
    endpoints: list[str] = Field(default_factory=list)
    # The name sent to the endpoints and kept in the call log; the embedded server answers to it.
    model: str = DEFAULT_MODEL
    api_key: str = "magv"
    temperature: float = Field(default=0.7, ge=0, le=2)
    max_tokens: int = Field(default=256, ge=1)
    timeout_s: float = Field(default=120.0, gt=0)
    retries: int = Field(default=3, ge=0, le=20)
    concurrency_per_endpoint: int = Field(default=4, ge=1, le=1024)
    # native: OpenAI `tools=` (vLLM with a tool parser, OpenAI); json: schema-constrained output.
    tool_mode: Literal["native", "json"] = "json"
    roles: dict[str, RoleSettings] = Field(default_factory=dict)

    def role(self, name: str) -> dict[str, Any]:
        """Effective settings of one role: its overrides over the defaults."""
        base = {
            "model": self.model,
            "endpoints": list(self.endpoints),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "timeout_s": self.timeout_s,
            "tool_mode": self.tool_mode,
        }
        override = self.roles.get(name)
        if override is not None:
            base.update({k: v for k, v in override.model_dump().items() if v is not None})
        return base


class LlamaSettings(_Section):
    """The embedded llama.cpp server started when no endpoint is configured."""

    # A model of the registry (`magv models list`), assembled into the model cache on first use;
    # `gguf`, a path to any GGUF file, wins over it.
    model: str = DEFAULT_MODEL
    gguf: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=1, le=65535)
    n_ctx: int = Field(default=8192, ge=512)
    n_threads: int | None = None
    n_parallel: int = Field(default=1, ge=1)
    startup_timeout_s: float = Field(default=180.0, gt=0)

    @field_validator("model")
    @classmethod
    def _known_model(cls, name: str) -> str:
        if name not in MODELS:
            raise ValueError(f"unknown model; expected one of {', '.join(sorted(MODELS))}")
        return name


class VLLMSettings(_Section):
    model: str | None = None
    port: int = Field(default=8000, ge=1, le=65535)
    tool_call_parser: str = "hermes"
    max_model_len: int = Field(default=8192, ge=256)
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    tensor_parallel_size: int = Field(default=1, ge=1)
    startup_timeout_s: float = Field(default=900.0, gt=0)


class EmbeddingSettings(_Section):
    backend: Literal["local", "endpoint"] = "local"
    model: str = "all-MiniLM-L6-v2"
    endpoint: str | None = None  # an OpenAI-compatible base URL serving /v1/embeddings
    batch_size: int = Field(default=64, ge=1)


class PipelineSettings(_Section):
    questions_per_target: int = Field(default=10, ge=1, le=100)
    questions: int = Field(default=50, ge=1, description="questions kept by selection")
    max_targets: int | None = Field(default=None, ge=1, description="seed trajectories used (None: all)")
    runs: int = Field(default=3, ge=1, le=50, description="R: responder runs per question")
    alternates: int = Field(default=3, ge=0, le=20, description="k: alternates per question")
    alternate_runs: int = Field(default=1, ge=1, le=20, description="R': runs per alternate")
    max_steps: int = Field(default=6, ge=1, le=50)
    dedup_threshold: float = Field(default=0.95, gt=0, le=1)
    concurrency: int = Field(
        default=8, ge=1, le=4096, description="agent runs in flight per process (all chunks share one limit)"
    )
    chunk_size: int = Field(default=16, ge=1, le=100000, description="questions per task")
    workers: int = Field(default=2, ge=1, le=1024, description="chunks in flight (local runner threads)")
    demos: int = Field(default=0, ge=0, le=20)
    seed: int = 0
    tool_timeout_s: float = Field(default=10.0, gt=0)
    runner: Literal["local", "dask", "ray"] = "local"
    dask_address: str | None = None


class VerifySettings(_Section):
    threshold: float = Field(default=0.5, ge=0, le=1)
    gold_match: Literal["strict", "unordered", "subset", "superset"] = "strict"
    gold_arguments: bool = False
    cv_folds: int = Field(default=5, ge=2, le=20)
    models_dir: str = "data/models"
    # What `score` stores as each prediction's top contributions. XGBoost: exact TreeSHAP (~6 us a
    # row from per-tree tables; ~60-100 us for trees too deep for them), approx = Saabas path
    # attribution (~4 us), none = not computed. Linear models are exact.
    contributions: Literal["exact", "approx", "none"] = "exact"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MAGV_", env_nested_delimiter="__", extra="forbid", validate_assignment=True
    )

    database: Path = Path("data/magv.duckdb")
    domain: str = "retail"
    domain_data_dir: Path = Path("data/domains")
    llm: LLMSettings = Field(default_factory=LLMSettings)
    llama: LlamaSettings = Field(default_factory=LlamaSettings)
    vllm: VLLMSettings = Field(default_factory=VLLMSettings)
    embeddings: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    verify: VerifySettings = Field(default_factory=VerifySettings)

    @model_validator(mode="after")
    def _name_the_embedded_model(self) -> Settings:
        # Choosing another embedded model renames what the call log records, unless a name was given.
        if self.llm.model == DEFAULT_MODEL and self.llama.model != DEFAULT_MODEL and not self.llama.gguf:
            self.llm.model = self.llama.model
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlSource(settings_cls))


class _TomlSource(PydanticBaseSettingsSource):
    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return (_toml_data.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_toml_data.get() or {})


def settings_from_dict(data: dict[str, Any]) -> Settings:
    """Settings from a full dump (as flows receive them); the dump wins over file and environment."""
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise BadInput(_describe(exc, None)) from None


def config_path(explicit: str | Path | None = None) -> Path | None:
    if explicit:
        return Path(explicit)
    env = os.environ.get("MAGV_CONFIG")
    if env:
        return Path(env)
    default = Path("magv.toml")
    return default if default.exists() else None


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the effective settings; any problem is a BadInput naming the file and field."""
    toml_file = config_path(path)
    data: dict[str, Any] = {}
    if toml_file is not None:
        if not toml_file.is_file():
            raise BadInput(f"{toml_file}: config file not found")
        try:
            data = tomllib.loads(toml_file.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise BadInput(f"{toml_file}: not valid TOML: {exc}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise BadInput(f"{toml_file}: cannot read: {exc}") from None
    token = _toml_data.set(data)
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        raise BadInput(_describe(exc, toml_file)) from None
    finally:
        _toml_data.reset(token)
    for role in settings.llm.roles:
        if role not in ROLES:
            where = toml_file or "environment"
            raise BadInput(f"{where}: llm.roles.{role}: unknown role; expected one of {', '.join(ROLES)}")
    return settings


def _describe(exc: ValidationError, toml_file: Path | None) -> str:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "(root)"
    source = str(toml_file) if toml_file else "settings"
    env_name = "MAGV_" + "__".join(str(p).upper() for p in err["loc"])
    if env_name in os.environ:
        source = f"environment variable {env_name}"
    if err["type"] == "extra_forbidden":
        return f"{source}: {field}: unknown setting"
    return f"{source}: {field}: {err['msg']} (got {err.get('input')!r})"
