"""Settings: defaults < magv.toml < MAGV_* environment variables.

The file is `magv.toml` in the working directory, or the path in `MAGV_CONFIG` / `--config`.
Nested fields use `__` in environment variables: `MAGV_PIPELINE__RUNS=5`,
`MAGV_LLM__ROLES__RESPONDER__ENDPOINTS='["http://gpu1:8000/v1"]'`.
"""

from __future__ import annotations

import json
import os
import stat
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from magv.definitions import ArgMode, MatchMode
from magv.errors import BadInput
from magv.gguf.registry import DEFAULT_MODEL, MODELS
from magv.jsonl import MAX_DEPTH

ROLES = ("investigator", "responder", "reverse", "judge")
_toml_data: ContextVar[dict[str, Any] | None] = ContextVar("magv_toml_data", default=None)
API_KEY_ENV = "MAGV_LLM__API_KEY"
# What local servers (llama.cpp, vLLM without --api-key) accept: any non-empty key.
PLACEHOLDER_KEY = "magv"
MASK = "**********"
# MAGV_* variables that are not settings; any other MAGV_NAME must name a setting.
OTHER_ENV = frozenset({"MAGV_CONFIG", "MAGV_PROMPTS_DIR", "MAGV_MODEL_CACHE", "MAGV_SERVICE_TOKEN"})
# The key a magv.toml of this process gave, for settings rebuilt from a dump (flows), which by
# design carry no key. Set by load_settings; never written anywhere.
_file_key: SecretStr | None = None


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
    # A secret: left out of every dump (so of `pipeline_runs.settings`, flow parameters and
    # `config show`), read at the point of use by `secret_key()`.
    api_key: SecretStr | None = Field(default=None, exclude=True)
    api_key_file: str | None = None  # a file holding only the key (e.g. mode 0600 in ~/.config)
    temperature: float = Field(default=0.7, ge=0, le=2)
    max_tokens: int = Field(default=256, ge=1)
    timeout_s: float = Field(default=120.0, gt=0)
    retries: int = Field(default=3, ge=0, le=20)
    concurrency_per_endpoint: int = Field(default=4, ge=1, le=1024)
    # native: OpenAI `tools=` (vLLM with a tool parser, OpenAI); json: schema-constrained output.
    tool_mode: Literal["native", "json"] = "json"
    roles: dict[str, RoleSettings] = Field(default_factory=dict)

    def secret_key(self) -> str:
        """The API key, at the point of use: llm.api_key of these settings, else $MAGV_LLM__API_KEY,
        else the file llm.api_key_file, else the key magv.toml gave this process, else the
        placeholder local servers accept."""
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        if os.environ.get(API_KEY_ENV):
            return os.environ[API_KEY_ENV]
        if self.api_key_file:
            path = Path(self.api_key_file).expanduser()
            try:
                key = path.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise BadInput(f"llm.api_key_file: cannot read {path}: {exc}") from None
            if not key:
                raise BadInput(f"llm.api_key_file: {path} is empty; expected the API key")
            return key
        if _file_key is not None:
            return _file_key.get_secret_value()
        return PLACEHOLDER_KEY

    def key_source(self) -> str:
        """Where `secret_key()` finds the key, for `config show` (never the key itself)."""
        if os.environ.get(API_KEY_ENV):
            return f"{MASK} (from {API_KEY_ENV})"
        if self.api_key is not None or _file_key is not None:
            return f"{MASK} (set)"
        if self.api_key_file:
            return f"{MASK} (from {self.api_key_file})"
        return "(not set; the placeholder local servers accept)"

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
    n_threads: int | None = Field(
        default=None, ge=1, description="llama.cpp threads (default: every CPU this process may use)"
    )
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
    questions_per_target: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description="N: questions generated per target (None: generate_multiple x questions, spread, at most 10)",
    )
    generate_multiple: float = Field(
        default=2.0, ge=1, le=50, description="questions generated per question kept, when N is not set"
    )
    questions: int = Field(default=50, ge=1, description="questions kept by selection")
    max_targets: int | None = Field(default=None, ge=1, description="seed trajectories used (None: all)")
    runs: int = Field(default=3, ge=1, le=50, description="R: responder runs per question")
    alternates: int = Field(default=3, ge=0, le=20, description="k: alternates per question")
    alternate_runs: int = Field(default=1, ge=1, le=20, description="R': runs per alternate")
    max_steps: int = Field(default=6, ge=1, le=50)
    dedup_threshold: float = Field(default=0.95, gt=0, le=1)
    min_quality: bool = Field(
        default=True,
        description="selection keeps only questions that pass the rule checks (magv/quality.py: answerable, "
        "one request in a customer's voice); alternates that fail them are never answered",
    )
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
    gold_match: MatchMode = "strict"
    # false: names only; true: exact arguments; or an argument mode (ARG_MODES).
    gold_arguments: bool | ArgMode = False
    # Per-tool argument rules: a mode, a list of keys to compare, or {mode, keys, ignore}.
    gold_overrides: dict[str, str | list[str] | dict[str, Any]] = Field(default_factory=dict)
    cv_folds: int = Field(default=5, ge=2, le=20)
    models_dir: str = "data/models"
    # true: the paper's reading, one feature row (and verdict) per question's MCT; false: every run
    # with siblings or alternates gets one.
    mct_only: bool = False
    # What `score` stores as each prediction's top contributions. XGBoost: exact TreeSHAP (its own
    # pred_contribs), approx = Saabas path attribution (approx_contribs, cheaper), none = not
    # computed. Linear models are exact.
    contributions: Literal["exact", "approx", "none"] = "exact"
    # Whether training also compares a text model over each run's calls, arguments and words
    # (alone and stacked on each model; magv.verify.document).
    text: bool = True
    # How training sets the saved model's decision threshold, on out-of-fold predictions of the
    # training rows: "fixed" keeps `threshold`; else the best for accuracy, balanced accuracy, or
    # the lowest reaching `target_precision` on "correct" ("precision").
    threshold_objective: Literal["fixed", "accuracy", "balanced_accuracy", "precision"] = "fixed"
    target_precision: float = Field(default=0.9, gt=0, le=1)


class ResponderSettings(_Section):
    """Which agent answers the questions (docs/agents.md): magv's own responder by default, or the
    user's: a Python callable (`agent`, imported and run: it is the user's code) or an HTTP
    service (`agent_url`)."""

    agent: str | None = Field(default=None, description="package.module:function or path/file.py:function")
    agent_url: str | None = Field(default=None, description="URL the task is POSTed to as JSON")
    agent_version: str | None = Field(default=None, description="stored with every run, for report --compare")
    agent_timeout_s: float = Field(default=300.0, gt=0)
    agent_retries: int = Field(default=2, ge=0, le=20)
    agent_concurrency: int = Field(
        default=8, ge=1, le=1024, description="HTTP requests in flight per process"
    )

    @model_validator(mode="after")
    def _one_agent(self) -> ResponderSettings:
        if self.agent and self.agent_url:
            raise ValueError("set agent or agent_url, not both")
        if self.agent and ":" not in self.agent:
            raise ValueError("agent: expected package.module:function or path/file.py:function")
        if self.agent_url and not self.agent_url.startswith(("http://", "https://")):
            raise ValueError("agent_url: expected an http:// or https:// URL")
        return self


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
    responder: ResponderSettings = Field(default_factory=ResponderSettings)

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
        settings = Settings(**data)
    except ValidationError as exc:
        raise BadInput(_describe(exc, None)) from None
    if settings.llm.api_key is None and _file_key is not None and not os.environ.get(API_KEY_ENV):
        # In memory only (dumps leave it out): workers this object is pickled to have no magv.toml.
        settings.llm.api_key = _file_key
    return settings


def config_path(explicit: str | Path | None = None) -> Path | None:
    if explicit:
        return Path(explicit)
    env = os.environ.get("MAGV_CONFIG")
    if env:
        return Path(env)
    default = Path("magv.toml")
    return default if default.exists() else None


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """A TOML document of a user (magv.toml, domain.toml) as a dict; BadInput naming the file when
    it is missing, not a regular file, not TOML, or nested more than MAX_DEPTH levels."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise BadInput(f"{path}: {what} not found") from None
    except OSError as exc:
        raise BadInput(f"{path}: cannot read: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        kind = (
            "a directory"
            if stat.S_ISDIR(mode)
            else "a FIFO (pipe)"
            if stat.S_ISFIFO(mode)
            else "a device or other special file"
        )
        raise BadInput(f"{path}: is {kind}; expected the {what} as a regular TOML file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib parses nested arrays and tables recursively
        raise BadInput(f"{path}: nested too deeply; at most {MAX_DEPTH} levels") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: cannot read: {exc}") from None
    deep = _too_deep(data)
    if deep is not None:
        raise BadInput(f"{path}: {deep}: nested more than {MAX_DEPTH} levels deep")
    return data


def _too_deep(value: Any) -> str | None:
    """The first key path deeper than MAX_DEPTH, or None (iterative: no recursion to exhaust)."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        node, field, depth = stack.pop()
        if depth > MAX_DEPTH:
            return field or "(top)"
        if isinstance(node, dict):
            stack.extend((v, f"{field}.{k}" if field else str(k), depth + 1) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, f"{field}[{i}]", depth + 1) for i, v in enumerate(node))
    return None


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the effective settings; any problem is a BadInput naming the file and field."""
    toml_file = config_path(path)
    data: dict[str, Any] = {}
    if toml_file is not None:
        data = read_toml(toml_file, "config file")
    global _file_key
    _check_environment()
    token = _toml_data.set(data)
    try:
        settings = Settings(**overrides)
        if settings.llm.api_key is not None and os.environ.get(API_KEY_ENV) is None:
            _file_key = settings.llm.api_key
    except ValidationError as exc:
        raise BadInput(_describe(exc, toml_file)) from None
    except SettingsError as exc:
        raise BadInput(_describe_env_error(exc)) from None
    except RecursionError:  # JSON of a MAGV_* variable nested thousands deep
        raise BadInput(
            f"environment: a MAGV_* value is nested too deeply; at most {MAX_DEPTH} levels"
        ) from None
    finally:
        _toml_data.reset(token)
    for role in settings.llm.roles:
        if role not in ROLES:
            where = toml_file or "environment"
            raise BadInput(f"{where}: llm.roles.{role}: unknown role; expected one of {', '.join(ROLES)}")
    return settings


def _check_environment() -> None:
    """An unknown MAGV_* variable is refused (pydantic refuses unknown nested ones itself): a
    misspelt MAGV_DATABSE must not silently leave the default database in use."""
    known = {f"MAGV_{name.upper()}" for name in Settings.model_fields} | OTHER_ENV
    for key in sorted(os.environ):
        if key.upper().startswith("MAGV_") and "__" not in key and key.upper() not in known:
            names = ", ".join(sorted(k for k in known if k not in OTHER_ENV))
            raise BadInput(
                f"environment variable {key}: unknown setting; expected one of {names} "
                "(nested settings use __, e.g. MAGV_PIPELINE__RUNS)"
            )


def _describe_env_error(exc: SettingsError) -> str:
    """pydantic-settings fails before validation when a list or table variable is not JSON."""
    text = str(exc)
    field = text.split('field "', 1)[-1].split('"', 1)[0] if 'field "' in text else ""
    bad = sorted(
        k for k in os.environ if k.upper().startswith(f"MAGV_{field.upper()}__") and _not_json(os.environ[k])
    )
    if bad:
        example = '["http://gpu1:8000/v1"]' if bad[0].upper().endswith("ENDPOINTS") else "JSON"
        return (
            f"environment variable {bad[0]}: not valid JSON ({os.environ[bad[0]]!r}); lists and tables "
            f"are given as JSON, e.g. {bad[0]}='{example}'"
        )
    return f"environment: {text}"


def _not_json(value: str) -> bool:
    try:
        json.loads(value)
    except ValueError:
        return True
    return False


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
