"""iBot's settings: typed, validated once at start, explained in one line when wrong.

Sources, highest priority first:

1. keyword arguments to `load_settings` (tests, the harness, the demo);
2. environment variables: `IBOT_<FIELD>` and `IBOT_<SECTION>__<FIELD>` (for example
   `IBOT_OPENAI__TIMEOUT_S=30`), plus the names the original bot used, so an existing
   deployment keeps working: BOT_TOKEN / DISCORD_TOKEN, OPENAI_API_KEY, OPENAI_BASE_URL,
   FORUM_CHANNEL_IDS (-> discord.forum_channel_ids), GPT_CHANNEL_ID (added to
   discord.gpt_channel_ids);
3. the same variables in a `.env` file in the current directory;
4. the TOML file: `--config`, else $IBOT_CONFIG, else `config/ibot.toml` when it exists.

Every model forbids unknown keys, so a typo in the TOML is an error naming the key rather
than a setting silently ignored. Any problem becomes a `ConfigError` whose text is one
line, `config error: <dotted.key>: <what is wrong> (got <value>)`, and which never
echoes a secret. Secrets are `SecretStr`: repr, str and JSON dumps show asterisks.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import sys
import tomllib
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn
from urllib.parse import unquote, urlsplit

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from ibot.domain import Feature
from ibot.i18n import placeholders
from ibot.logging import LEVELS, redact_text
from ibot.money import decimal_to_micros

DEFAULT_CONFIG_FILE = Path("config/ibot.toml")
DEFAULT_PRICES_FILE = Path("config/prices.toml")
# The price table shipped with iBot, used when the default relative path is not found
# from the current directory (running from elsewhere than the repository root).
SHIPPED_PRICES_FILE = Path(__file__).resolve().parents[1] / "config" / "prices.toml"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./data/ibot.db"

# Fields whose input is never echoed in an error (a database URL may hold a password).
_SENSITIVE_FIELDS = frozenset({"discord_token", "openai_api_key", "database_url"})

# The TOML file chosen by load_settings(); read by Settings.settings_customise_sources.
_config_file: ContextVar[Path | None] = ContextVar("ibot_config_file", default=None)


class ConfigError(Exception):
    """A setting is wrong; `str()` is one line naming the dotted key and the problem."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = " ".join(redact_text(problem).split())
        text = f"{key}: {self.problem}" if key else self.problem
        super().__init__(f"config error: {text}")

    @classmethod
    def from_validation_error(cls, err: ValidationError) -> ConfigError:
        errors = err.errors(include_url=False)
        key, problem = _describe(errors[0])
        if len(errors) > 1:
            others = [_describe(e)[0] for e in errors[1:]]
            shown = ", ".join(others[:3]) + (", …" if len(others) > 3 else "")
            problem += f" (and {len(others)} more: {shown})"
        return cls(key, problem)


def fail_on_config_error(err: BaseException) -> NoReturn:
    """Print the error as one line on stderr and exit with status 2 (usage error)."""
    text = str(err) if isinstance(err, ConfigError) else f"config error: {err}"
    print(" ".join(text.split()), file=sys.stderr)
    raise SystemExit(2)


# ---- value parsers -------------------------------------------------------------------------


def _split(value: Any, separators: str) -> Any:
    """Environment values are strings: "1, 2" or a JSON list; TOML lists pass through."""
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"not a valid JSON list ({err.msg})") from None
    return [part.strip() for part in re.split(separators, text) if part.strip()]


def _id_list(value: Any) -> Any:
    items = _split(value, r"[,;\s]+")
    if not isinstance(items, list | tuple):
        return items
    ids: list[Any] = []
    for item in items:
        if isinstance(item, str):
            if not item.strip().isdigit():
                raise ValueError(
                    f"expected Discord ids (whole numbers) separated by commas; {item!r} is not one"
                )
            item = int(item)
        if item not in ids:
            ids.append(item)
    return ids


def _str_list(value: Any) -> Any:
    return _split(value, r",")


def _extensions(value: Any) -> Any:
    items = _split(value, r"[,\s]+")
    if not isinstance(items, list | tuple):
        return items
    normalized: list[Any] = []
    for item in items:
        if isinstance(item, str):
            item = item.strip().lower()
            item = item if item.startswith(".") else f".{item}"
        if item not in normalized:
            normalized.append(item)
    return normalized


def _optional_str(value: Any) -> Any:
    """TOML has no null: an empty string means "not set"."""
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _secret(value: Any) -> Any:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if not isinstance(value, str):
        return value
    value = value.strip()
    if not value:
        return None
    if any(char.isspace() for char in value):
        # The message must not quote the value: it is a secret.
        raise ValueError("contains a space or a line break (a copy-paste accident?)")
    return value


def _usd(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(repr(value))  # 0.1 stays 0.1, not its binary approximation
    return _optional_str(value)


def _feature_names(value: Any) -> Any:
    """A table keyed by feature: an unknown name is one clear line, not pydantic's
    enum error repeated per key."""
    if isinstance(value, Mapping):
        known = [feature.value for feature in Feature]
        for name in value:
            if name not in known:
                close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ValueError(
                    f"unknown feature {name!r}; {hint}the features are {', '.join(known)}"
                )
    return value


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def usd_micros(amount: Decimal) -> int:
    """A USD amount as integer micro-dollars, sub-micro digits rounded half up."""
    return decimal_to_micros(amount)


def _http_url(value: str | None) -> str | None:
    if value is None:
        return value
    value = value.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    return value.rstrip("/")


DiscordId = Annotated[int, Field(gt=0)]
IdList = Annotated[list[DiscordId], NoDecode, BeforeValidator(_id_list)]
StrList = Annotated[list[str], NoDecode, BeforeValidator(_str_list)]
ExtensionList = Annotated[list[str], NoDecode, BeforeValidator(_extensions)]
OptionalStr = Annotated[str | None, BeforeValidator(_optional_str)]
ModelName = Annotated[str, Field(min_length=1)]
OptionalModelName = Annotated[ModelName | None, BeforeValidator(_optional_str)]
HttpUrlText = Annotated[str | None, BeforeValidator(_optional_str), AfterValidator(_http_url)]
Secret = Annotated[SecretStr | None, BeforeValidator(_secret)]
Usd = Annotated[Decimal, BeforeValidator(_usd), Field(ge=0, allow_inf_nan=False)]
OptionalUsd = Annotated[Usd | None, BeforeValidator(_usd)]
PositiveInt = Annotated[int, Field(gt=0)]


# ---- sections ------------------------------------------------------------------------------


class Section(BaseModel):
    """A [section] of the TOML file: unknown keys are errors, defaults are validated."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class DiscordSettings(Section):
    # Slash commands are registered in these guilds (instant); empty: globally (slow).
    guild_ids: IdList = []
    forum_channel_ids: IdList = []  # forums where new posts get an automatic answer
    gpt_channel_ids: IdList = []  # channels where the bot chats with everyone
    presence: str = Field(default="t'aider dans les forums", max_length=128)
    no_bot_tags: StrList = ["no-bot", "sans-bot"]  # forum tags that keep the bot out
    catch_up_hours: float = Field(default=24, ge=0)  # answer posts made while down, this far back
    answer_followups_when_mentioned: bool = False
    admin_channel_id: DiscordId | None = None  # where alerts (quota, budget) are posted
    ask_cooldown_s: float = Field(default=30, ge=0)
    # Per member, between two answered chat messages.
    chat_cooldown_s: float = Field(default=5, ge=0)
    # REST base of a Discord-compatible API; empty: Discord itself. For an HTTP proxy in
    # front of Discord (one rate-limit view for several processes), or the project's
    # own Discord-compatible server (crash tests run the bot process against it).
    api_base_url: HttpUrlText = None
    # On SIGTERM, answers in progress get this long to reach Discord before the bot
    # disconnects (docker stop kills after 10 s; systemd after 90 s).
    shutdown_grace_s: float = Field(default=8, ge=0)


class OpenAISettings(Section):
    timeout_s: float = Field(default=60, gt=0)
    connect_timeout_s: float = Field(default=5, gt=0)
    max_retries: int = Field(default=3, ge=0, le=10)
    retry_max_wait_s: float = Field(default=60, ge=0)
    # Model calls in flight at once; the others wait in the pacer's queue (interactive
    # commands first). The pacer also holds calls back to stay under the rate limits.
    max_concurrent_calls: int = Field(default=8, ge=1, le=256)


class FeatureSettings(Section):
    """Model and limits of one feature; each feature subclass has its own defaults."""

    model: ModelName = "gpt-4o"
    max_output_tokens: PositiveInt = 1200
    max_prompt_tokens: PositiveInt = 8000
    temperature: float = Field(default=0.5, ge=0, le=2)
    # Used instead of `model` when a budget runs low ("" in TOML: none).
    cheaper_model: OptionalModelName = None
    image_detail: Literal["high", "low"] = "high"
    max_images: int = Field(default=4, ge=0)
    # Images are shrunk so that ceil(w/512) * ceil(h/512) <= max_image_tiles.
    max_image_tiles: int = Field(default=6, ge=1)


class AutoReplySettings(FeatureSettings):
    max_prompt_tokens: PositiveInt = 12000
    cheaper_model: OptionalModelName = "gpt-4o-mini"


class AskSettings(FeatureSettings):
    cheaper_model: OptionalModelName = "gpt-4o-mini"


class SummarySettings(FeatureSettings):
    model: ModelName = "gpt-4o-mini"
    max_output_tokens: PositiveInt = 1500
    max_prompt_tokens: PositiveInt = 60000

    @model_validator(mode="after")
    def _prompt_holds_two_answers(self) -> SummarySettings:
        """A combine request must hold two partial summaries, each up to an answer long."""
        if self.max_prompt_tokens < 2 * self.max_output_tokens:
            raise ValueError(
                f"max_prompt_tokens ({self.max_prompt_tokens}) must be at least twice "
                f"max_output_tokens ({self.max_output_tokens}), so that two partial "
                "summaries fit in one request"
            )
        return self


class ChatSettings(FeatureSettings):
    model: ModelName = "gpt-4o-mini"
    max_output_tokens: PositiveInt = 600
    max_prompt_tokens: PositiveInt = 6000


class FeaturesSettings(Section):
    auto_reply: AutoReplySettings = Field(default_factory=AutoReplySettings)
    ask: AskSettings = Field(default_factory=AskSettings)
    summary: SummarySettings = Field(default_factory=SummarySettings)
    chat: ChatSettings = Field(default_factory=ChatSettings)


DEFAULT_TEXT_EXTENSIONS = (
    *(".txt", ".log", ".py", ".json", ".yaml", ".yml", ".cfg", ".ini", ".toml", ".md"),
    *(".csv", ".js", ".ts", ".java", ".c", ".cpp", ".h", ".rs", ".go", ".sh", ".xml"),
    *(".html", ".css", ".sql"),
)


class AttachmentsSettings(Section):
    max_download_bytes: PositiveInt = 10 * 1024 * 1024
    max_text_file_chars: PositiveInt = 20000
    text_extensions: ExtensionList = list(DEFAULT_TEXT_EXTENSIONS)


class PromptsSettings(Section):
    language: Annotated[Literal["fr", "en"], BeforeValidator(_lower)] = "fr"
    persona: OptionalStr = None  # replaces config/prompts/<language>.toml's persona
    bot_name: str = Field(default="iBot", min_length=1)
    answer_title: OptionalStr = None  # default: "Réponse de {bot_name}" (localised)

    @field_validator("persona")
    @classmethod
    def _persona_fills(cls, value: str | None) -> str | None:
        """The persona is filled with str.format: catch stray braces now, not per call."""
        if value is None:
            return value
        try:
            unknown = placeholders(value) - {"date", "bot_name"}
        except ValueError:
            unknown = {"?"}
        if unknown:
            raise ValueError(
                "may only use {date} and {bot_name}; write {{ and }} for literal braces"
            )
        return value


class RolesSettings(Section):
    denied_ask: IdList = []  # members with one of these roles may not use /ask-gpt
    moderators: IdList = []  # may use /summary (as may Manage Messages)
    admins: IdList = []  # may see costs and set budgets (as may Administrator)


class BudgetsSettings(Section):
    """Spending caps in USD (none = no cap); checked before every model call."""

    guild_daily_usd: OptionalUsd = None
    guild_monthly_usd: OptionalUsd = None
    user_daily_usd: OptionalUsd = None
    # [budgets.feature_daily_usd]: what one feature may spend in a guild a day, whoever
    # triggers it (summary = 1.00); a feature left out has no cap of its own.
    feature_daily_usd: Annotated[dict[Feature, OptionalUsd], BeforeValidator(_feature_names)] = {}
    # Fractions of a cap at which admins are alerted.
    alert_thresholds: Annotated[
        list[Annotated[float, Field(gt=0, le=1)]], NoDecode, BeforeValidator(_str_list)
    ] = [0.5, 0.8, 1.0]

    @field_validator("alert_thresholds")
    @classmethod
    def _sorted(cls, value: list[float]) -> list[float]:
        return sorted(set(value))

    @staticmethod
    def _micros(amount: Decimal | None) -> int | None:
        return None if amount is None else usd_micros(amount)

    @property
    def guild_daily_micros(self) -> int | None:
        return self._micros(self.guild_daily_usd)

    @property
    def guild_monthly_micros(self) -> int | None:
        return self._micros(self.guild_monthly_usd)

    @property
    def user_daily_micros(self) -> int | None:
        return self._micros(self.user_daily_usd)

    @property
    def feature_daily_micros(self) -> dict[Feature, int | None]:
        return {feature: self._micros(usd) for feature, usd in self.feature_daily_usd.items()}


class LoggingSettings(Section):
    # auto: console when stderr is a terminal, JSON lines otherwise.
    format: Annotated[Literal["auto", "json", "console"], BeforeValidator(_lower)] = "auto"
    level: str = "INFO"

    @field_validator("level", mode="before")
    @classmethod
    def _level(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        name = value.strip().upper()
        name = "WARNING" if name == "WARN" else name
        if name not in LEVELS:
            raise ValueError(f"expected one of {', '.join(LEVELS)}")
        return name


TorchDtype = Annotated[Literal["auto", "float32", "bfloat16", "float16"], BeforeValidator(_lower)]
PromptFormat = Annotated[Literal["auto", "dialogpt", "chat_template"], BeforeValidator(_lower)]


class LocalModelSettings(Section):
    """The local fallback model (optional extra: torch + transformers).

    The sampling defaults are those the DialoGPT fine-tuning tutorials used (top_k 100,
    top_p 0.7, temperature 0.8, no repeated trigram), plus a repetition penalty against
    the "hey, hey, hey" loops small models fall into.
    """

    path: Annotated[Path | None, BeforeValidator(_optional_str)] = None
    device: Annotated[Literal["auto", "cpu", "cuda"], BeforeValidator(_lower)] = "auto"
    # auto: bfloat16 on a GPU that supports it, else float16; float32 on the CPU.
    dtype: TorchDtype = "auto"
    gpu_hour_usd: Usd = Decimal(0)  # what one GPU hour costs, to price local answers
    # auto: the tokenizer's chat template when it has one, else DialoGPT turns (each turn
    # followed by the end-of-text token), the format the tutorials fine-tune on.
    prompt_format: PromptFormat = "auto"
    max_context_turns: PositiveInt = 7  # previous messages kept (the tutorials' window)
    max_new_tokens: PositiveInt = 128  # answer length cap (also bounded by the request's)
    min_new_tokens: int = Field(default=1, ge=0)  # 1: never an empty answer
    do_sample: bool = True  # false: greedy decoding (reproducible answers)
    top_k: int = Field(default=100, ge=0)
    top_p: float = Field(default=0.7, gt=0, le=1)
    temperature: float = Field(default=0.8, gt=0, le=2)
    no_repeat_ngram_size: int = Field(default=3, ge=0)  # 0: off
    repetition_penalty: float = Field(default=1.3, ge=1, le=3)  # 1: off
    max_batch_size: PositiveInt = 8  # requests that wait together share one generate()

    @model_validator(mode="after")
    def _min_below_max(self) -> LocalModelSettings:
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError("min_new_tokens must not exceed max_new_tokens")
        return self

    @field_validator("path")
    @classmethod
    def _is_directory(cls, value: Path | None) -> Path | None:
        if value is not None and not value.expanduser().is_dir():
            raise ValueError("not an existing directory")
        return value.expanduser() if value is not None else None

    @property
    def gpu_hour_micros(self) -> int:
        return usd_micros(self.gpu_hour_usd)


class HealthSettings(Section):
    enabled: bool = False
    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=8080, ge=0, le=65535)  # 0: any free port


class EmbeddingsSettings(Section):
    """Semantic retrieval for the knowledge base (ibot/services/semantic.py): used when
    enabled, the knowledge base on, and an OpenAI key configured; else lexical only."""

    enabled: bool = False
    model: str = Field(default="text-embedding-3-small", min_length=1)
    # Shortened vectors (text-embedding-3 models): smaller index, little quality lost.
    dimensions: int = Field(default=256, ge=1, le=3072)
    # A backfill call embeds at most this many threads and input tokens.
    batch_size: int = Field(default=100, ge=1, le=2048)
    batch_tokens: int = Field(default=8000, ge=1, le=300_000)
    # A hit below knowledge.min_score is still shown when its cosine similarity reaches
    # this (semantic.py says how the default was chosen).
    min_similarity: float = Field(default=0.5, gt=0, le=1)


class KnowledgeSettings(Section):
    """The knowledge base of solved threads (ibot/services/knowledge.py)."""

    enabled: bool = False
    # Hits scoring below this (the idf-weighted share of the query found) are not shown.
    min_score: float = Field(default=0.35, ge=0, le=1)
    k: int = Field(default=3, ge=1, le=10)  # solved threads shown per answer
    # At most this many prompt tokens of quoted solved threads (/ask-gpt, forum answers).
    max_source_tokens: int = Field(default=1500, ge=0, le=100_000)
    # Forum tags that mark a thread as solved.
    solved_tags: StrList = ["Résolu", "Solved"]
    close_solved: bool = False  # close (archive) a forum thread once it is solved
    embeddings: EmbeddingsSettings = Field(default_factory=EmbeddingsSettings)
    # A new post scoring this high against a solved thread is reported as a duplicate.
    duplicate_threshold: float = Field(default=0.8, gt=0, le=1)
    # The model of a duplicate's short answer; empty: the feature's cheaper_model, or
    # gpt-4o-mini when it has none.
    duplicate_model: OptionalModelName = None
    duplicate_max_output_tokens: PositiveInt = 300  # a duplicate's answer: a few lines

    @model_validator(mode="after")
    def _duplicates_are_hits(self) -> KnowledgeSettings:
        if self.duplicate_threshold < self.min_score:
            raise ValueError(
                f"duplicate_threshold ({self.duplicate_threshold}) must not be below "
                f"min_score ({self.min_score})"
            )
        return self


# ---- the settings --------------------------------------------------------------------------


class _LegacyVariables(PydanticBaseSettingsSource):
    """The original bot's FORUM_CHANNEL_IDS, mapped onto [discord] forum_channel_ids.

    A plain alias cannot do this (the field lives in a section), and it has to be a source
    of its own to keep its priority: after IBOT_* variables, before the TOML file.
    """

    MAPPING: Mapping[str, tuple[str, str]] = {
        "FORUM_CHANNEL_IDS": ("discord", "forum_channel_ids"),
    }

    def __init__(
        self, settings_cls: type[BaseSettings], variables: Callable[[], Mapping[str, Any]]
    ) -> None:
        super().__init__(settings_cls)
        self.variables = variables

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ does the work

    def __call__(self) -> dict[str, Any]:
        found = {str(k).upper(): v for k, v in self.variables().items()}
        data: dict[str, Any] = {}
        for name, (section, key) in self.MAPPING.items():
            value = found.get(name)
            if isinstance(value, str) and value.strip():
                data.setdefault(section, {})[key] = value
        return data


def _toml_path() -> Path | None:
    """The TOML file to read, or None when the default one does not exist."""
    given = _config_file.get()
    if given is not None:
        path, origin = given.expanduser(), "given with --config"
    elif os.environ.get("IBOT_CONFIG", "").strip():
        path, origin = Path(os.environ["IBOT_CONFIG"].strip()).expanduser(), "set by IBOT_CONFIG"
    else:
        return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None
    if not path.is_file():
        raise ConfigError(str(path), f"config file not found ({origin})")
    return path


def _toml_source(settings_cls: type[BaseSettings], path: Path) -> TomlConfigSettingsSource:
    try:
        return TomlConfigSettingsSource(settings_cls, toml_file=path)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(str(path), f"invalid TOML: {err}") from None
    except OSError as err:
        raise ConfigError(str(path), f"cannot read the file: {err.strerror}") from None


class Settings(BaseSettings):
    """All of iBot's settings; build it with `load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="IBOT_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        case_sensitive=False,
        dotenv_filtering="only_existing",  # other tools' variables in .env are not errors
        extra="forbid",
        validate_by_name=True,
        validate_by_alias=True,
        validate_default=True,
    )

    discord_token: Secret = Field(
        default=None,
        validation_alias=AliasChoices("IBOT_DISCORD_TOKEN", "BOT_TOKEN", "DISCORD_TOKEN"),
    )
    openai_api_key: Secret = Field(
        default=None, validation_alias=AliasChoices("IBOT_OPENAI_API_KEY", "OPENAI_API_KEY")
    )
    openai_base_url: HttpUrlText = Field(
        default=None, validation_alias=AliasChoices("IBOT_OPENAI_BASE_URL", "OPENAI_BASE_URL")
    )
    # Legacy single chat channel; added to discord.gpt_channel_ids.
    gpt_channel_id: DiscordId | None = Field(
        default=None, validation_alias=AliasChoices("IBOT_GPT_CHANNEL_ID", "GPT_CHANNEL_ID")
    )
    # repr=False: a PostgreSQL URL may carry a password.
    database_url: str = Field(default=DEFAULT_DATABASE_URL, repr=False)
    prices_file: Path = DEFAULT_PRICES_FILE

    discord: DiscordSettings = Field(default_factory=DiscordSettings)
    openai: OpenAISettings = Field(default_factory=OpenAISettings)
    features: FeaturesSettings = Field(default_factory=FeaturesSettings)
    attachments: AttachmentsSettings = Field(default_factory=AttachmentsSettings)
    prompts: PromptsSettings = Field(default_factory=PromptsSettings)
    roles: RolesSettings = Field(default_factory=RolesSettings)
    budgets: BudgetsSettings = Field(default_factory=BudgetsSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    local_model: LocalModelSettings = Field(default_factory=LocalModelSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    knowledge: KnowledgeSettings = Field(default_factory=KnowledgeSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            env_settings,
            _LegacyVariables(settings_cls, lambda: os.environ),
            dotenv_settings,
            _LegacyVariables(settings_cls, lambda: getattr(dotenv_settings, "env_vars", {})),
        ]
        path = _toml_path()
        if path is not None:
            sources.append(_toml_source(settings_cls, path))
        return tuple(sources)

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        value = value.strip()
        if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", value):
            raise ValueError(f"must be a SQLAlchemy URL such as {DEFAULT_DATABASE_URL}")
        return value

    @field_validator("prices_file")
    @classmethod
    def _prices_file(cls, value: Path) -> Path:
        path = value.expanduser()
        if path.is_file():
            return path
        if path == DEFAULT_PRICES_FILE and SHIPPED_PRICES_FILE.is_file():
            return SHIPPED_PRICES_FILE
        raise ValueError("file not found")

    @model_validator(mode="after")
    def _merge_legacy_chat_channel(self) -> Settings:
        channel = self.gpt_channel_id
        if channel is not None and channel not in self.discord.gpt_channel_ids:
            # A copy: the section may be an object the caller passed in and still holds.
            channels = [*self.discord.gpt_channel_ids, channel]
            self.discord = self.discord.model_copy(update={"gpt_channel_ids": channels})
        return self

    def feature(self, feature: Feature | str) -> FeatureSettings:
        """The model and limits of `feature`."""
        section: FeatureSettings = getattr(self.features, Feature(feature).value)
        return section

    def secret_values(self) -> list[str]:
        """The raw secrets (tokens, keys, database password), for the log redactor."""
        values = [s.get_secret_value() for s in (self.discord_token, self.openai_api_key) if s]
        try:
            password = urlsplit(self.database_url).password
        except ValueError:
            password = None
        if password:
            values.extend({password, unquote(password)})
        return values


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Read and validate the settings, or raise a one-line `ConfigError`.

    `config_file` overrides $IBOT_CONFIG and config/ibot.toml, and must exist. Keyword
    overrides win over everything; a section given as a dict is merged key by key.
    """
    token = _config_file.set(Path(config_file) if config_file is not None else None)
    try:
        return Settings(**overrides)
    except ValidationError as err:
        # `from None`: the ValidationError quotes inputs, secrets included.
        raise ConfigError.from_validation_error(err) from None
    except SettingsError as err:
        raise _from_settings_error(err) from None
    finally:
        _config_file.reset(token)


# ---- error messages ------------------------------------------------------------------------

_ALIASES: dict[str, str] = {}
for _name, _info in Settings.model_fields.items():
    if isinstance(_info.validation_alias, AliasChoices):
        for _choice in _info.validation_alias.choices:
            if isinstance(_choice, str):
                _ALIASES[_choice.lower()] = _name


def _key_path(loc: tuple[int | str, ...]) -> list[int | str]:
    path: list[int | str] = []
    for part in loc:
        if isinstance(part, str) and ("[" in part or part.startswith("function-")):
            continue  # pydantic's own schema tags, not a user's key
        if not path and isinstance(part, str):
            part = _ALIASES.get(part.lower(), part)
        path.append(part)
    return path


def _dotted(path: list[int | str]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _model_at(path: list[int | str]) -> type[BaseModel] | None:
    model: type[BaseModel] = Settings
    for part in path:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _suggestion(path: list[int | str]) -> str:
    """ "did you mean ...?" for an unknown key, from its siblings and (top level) sections."""
    name = str(path[-1])
    parent = _model_at(path[:-1])
    if parent is None:
        return ""
    if parent is Settings:
        for section in Settings.model_fields:
            model = _model_at([section])
            if model is not None and name in model.model_fields:
                return f"; it belongs in the [{section}] section"
    close = difflib.get_close_matches(name, list(parent.model_fields), n=1, cutoff=0.6)
    if close:
        return f"; did you mean {_dotted([*path[:-1], close[0]])!r}?"
    return ""


def _shown(value: Any) -> str | None:
    """The input as quoted in an error, or None when it is too big to be useful."""
    if isinstance(value, dict):
        return None
    if isinstance(value, list | tuple) and any(isinstance(v, dict | list) for v in value):
        return None
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(error: Mapping[str, Any]) -> tuple[str, str]:
    path = _key_path(tuple(error.get("loc", ())))
    key = _dotted(path)
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        # The value is not quoted: it may be a secret under a misspelled key.
        return key, "unknown setting" + _suggestion(path)
    if kind == "missing":
        return key, "required"
    problem = str(error.get("msg", "invalid value"))
    for prefix in ("Value error, ", "Assertion failed, "):
        problem = problem.removeprefix(prefix)
    sensitive = bool(path) and path[0] in _SENSITIVE_FIELDS
    if not sensitive and "input" in error:
        shown = _shown(error["input"])
        if shown is not None:
            problem += f" (got {shown})"
    return key, problem


def _from_settings_error(err: SettingsError) -> ConfigError:
    """A value the environment source could not decode (a section given as bad JSON)."""
    match = re.search(r'field "([^"]+)" from source "([^"]+)"', str(err))
    key = match.group(1) if match else ""
    cause = err.__cause__
    detail = f": {cause}" if isinstance(cause, json.JSONDecodeError) else ""
    return ConfigError(key, f"could not decode the value from the environment{detail}")
